import { expect, layer } from "@effect/vitest"
import { Effect, FastCheck, Layer, Schema } from "effect"
import { ClickHouse, layer as clickHouseLayer } from "../src/ClickHouse/ClickHouse.ts"
import { qualifiedName } from "../src/Config.ts"
import { config, describeReal, embeddedBackend, getTotal, quietLogs, remoteBackend, stack, uniqueTable, withSchema } from "./support/layers.ts"
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
