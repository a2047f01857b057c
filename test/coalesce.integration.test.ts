import { HttpServer } from "@effect/platform"
import { expect, layer } from "@effect/vitest"
import { Effect, FastCheck, Layer, Schema } from "effect"
import * as Net from "node:net"
import { ClickHouse, layer as clickHouseLayer } from "../src/ClickHouse/ClickHouse.ts"
import { qualifiedName } from "../src/Config.ts"
import { config, describeReal, embeddedBackend, getJson, getTotal, quietLogs, remoteBackend, stack, uniqueTable, withSchema } from "./support/layers.ts"
import { resetTo } from "./support/suites.ts"

const remoteTable = uniqueTable("coalesce")

/** One step of a run: a row inserted by some caller, or a read through the API; each starts after `delay` ms. */
const opsArb = FastCheck.array(
  FastCheck.record({
    kind: FastCheck.constantFrom("insert", "read", "read", "insert then read"),
    value: FastCheck.integer({ min: 1, max: 1_000_000 }),
    delay: FastCheck.integer({ min: 0, max: 30 })
  }),
  { minLength: 1, maxLength: 60 }
)

/** Zero-valued rows that make each read take a few milliseconds, so reads overlap inserts. */
const padding = 2_000_000

describeReal("coalescing on the real server", () => {
  layer(stack(config(remoteBackend(), { poolSize: 2 }), remoteTable), { excludeTestServices: true })("over HTTP", (it) => {
    it.effect.prop(
      "read-your-writes: every row inserted before a read started is in its answer, and nothing else is",
      [opsArb],
      ([ops]) =>
        Effect.gen(function*() {
          yield* resetTo(remoteTable, [])
          const ch = yield* ClickHouse
          yield* ch.command(
            `INSERT INTO ${qualifiedName(remoteTable)} SELECT toDateTime(0), 'pad', 0 FROM numbers(${padding})`
          )
          // Values are positive integers: sums are exact, so the bounds below are strict.
          let completed = 0
          let started = 0
          const checks: Array<{ lower: number; total: number; upper: number }> = []
          const insert = (value: number) =>
            Effect.gen(function*() {
              started += value
              yield* ch.insert(qualifiedName(remoteTable), [{ ts: "2024-01-01 00:00:00", metric_name: "x", value }])
              completed += value
            }).pipe(Effect.orDie)
          const read = Effect.gen(function*() {
            const lower = completed
            const total = yield* getTotal()
            checks.push({ lower, total, upper: started })
          }).pipe(Effect.orDie)
          yield* Effect.forEach(ops, (op) =>
            Effect.sleep(op.delay).pipe(
              Effect.zipRight(
                op.kind === "read" ? read : op.kind === "insert" ? insert(op.value) : Effect.zipRight(insert(op.value), read)
              )
            ), { concurrency: "unbounded", discard: true })
          for (const check of checks) {
            expect(check.total).toBeGreaterThanOrEqual(check.lower)
            expect(check.total).toBeLessThanOrEqual(check.upper)
          }
          // After everything settled, a read sees every insert.
          expect(yield* getTotal()).toBe(completed)
        }),
      { fastCheck: { numRuns: 20 } }
    )
  })
})

/** Opens `n` connections at once; each sends one GET and closes its side at once, before any answer can come. */
const leaveAtOnce = (port: number, n: number) =>
  Promise.all(Array.from({ length: n }, () =>
    new Promise<void>((resolve) => {
      const socket = Net.connect(port, "127.0.0.1", () => socket.end("GET /api/metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
      socket.on("error", () => resolve())
      socket.on("close", () => resolve())
      socket.resume()
    })))

/** Tries stopped before their end (request aborted or KILL QUERY sent), from the app's own /metrics. */
const cancelledTries = getJson("/metrics").pipe(
  Effect.map(({ text }) =>
    text.split("\n")
      .filter((line) => line.startsWith("analytics_clickhouse_cancelled_total{"))
      .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0)
  )
)

const leftTable = uniqueTable("left")

describeReal("clients that leave all at once", () => {
  layer(stack(config(remoteBackend(), { poolSize: 2 }), leftTable), { excludeTestServices: true })("over HTTP", (it) => {
    it.effect("the reads their buffered requests started end by themselves, not killed one by one; the API answers after", () =>
      Effect.gen(function*() {
        const server = yield* HttpServer.HttpServer
        const port = (server.address as HttpServer.TcpAddress).port
        const before = yield* cancelledTries
        yield* Effect.promise(() => leaveAtOnce(port, 200))
        // Past the coalescer's grace for a run whose callers all left.
        yield* Effect.sleep("1 second")
        // Stopped at once, each request would cost an aborted query and a KILL QUERY (400 here). A run slower than
        // the grace on a loaded machine may still be stopped: a few, not one per request.
        expect((yield* cancelledTries) - before).toBeLessThan(20)
        expect(yield* getTotal()).toBe(0)
      }))
  })
})

const Total = Schema.Struct({ total: Schema.Number })

const embeddedTable = uniqueTable("params")

layer(
  withSchema(embeddedTable).pipe(
    Layer.provideMerge(clickHouseLayer(config(embeddedBackend()))),
    Layer.provide(quietLogs)
  ),
  { excludeTestServices: true }
)("coalescing on the embedded engine", (it) => {
  it.effect("reads with different parameters never share an answer", () =>
    Effect.gen(function*() {
      const ch = yield* ClickHouse
      const names = ["a", "b", "c", "d"]
      yield* ch.insert(
        qualifiedName(embeddedTable),
        names.map((name, i) => ({ ts: "2024-01-01 00:00:00", metric_name: name, value: 10 ** i }))
      )
      const sql = `SELECT sum(value) AS total FROM ${qualifiedName(embeddedTable)} WHERE metric_name = {name:String}`
      const asked = Array.from({ length: 200 }, (_, i) => names[i % names.length]!)
      const answers = yield* Effect.all(
        asked.map((name) => ch.query(sql, Total, { name })),
        { concurrency: "unbounded" }
      )
      expect(answers.map((rows) => rows[0]!.total)).toEqual(asked.map((name) => 10 ** names.indexOf(name)))
    }))
})
