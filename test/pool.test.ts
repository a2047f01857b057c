import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Fiber, Schema } from "effect"
import * as Path from "node:path"
import { afterAll, beforeAll } from "vitest"
import { ClickHouse, layer } from "../src/ClickHouse/ClickHouse.ts"
import { config, describeReal, hasRealServer, quietLogs, remoteBackend } from "./support/layers.ts"
import { startServer, removeServer } from "./support/clickhouse-server.ts"
import { type Proxy, startProxy } from "../scripts/support/proxy.ts"

const Sleep = Schema.Struct({ s: Schema.Number })

// A server of this file's own, so its load and its low limit do not reach other files.
const dir = Path.resolve(import.meta.dirname, `../.clickhouse/test-pool-${process.pid}`)
const serverLimit = 3
let url = ""

beforeAll(async () => {
  if (hasRealServer) url = await startServer({ dir, maxConcurrentQueries: serverLimit, queueMaxWaitMs: 0, fresh: true })
})
afterAll(async () => {
  if (url !== "") await removeServer(dir)
})

/** Queries running on the server right now, seen from outside the service. */
const runningOnServer = (marker: string) =>
  Effect.promise(async () => {
    const sql = `SELECT count() AS n FROM system.processes WHERE query LIKE '%${marker}%' AND query NOT LIKE '%system.processes%' FORMAT JSONEachRow`
    const response = await fetch(`${url}/?query=${encodeURIComponent(sql)}`)
    return Number(JSON.parse(await response.text()).n)
  })

describeReal("the connection pool", () => {
  it.live("never has more queries in flight than its size", () =>
    Effect.gen(function*() {
      const ch = yield* ClickHouse
      let maxInFlight = 0
      let maxOnServer = 0
      const sample = Effect.gen(function*() {
        maxInFlight = Math.max(maxInFlight, yield* ch.inFlight)
        maxOnServer = Math.max(maxOnServer, yield* runningOnServer("sleep(0.2) AS s"))
      }).pipe(Effect.zipRight(Effect.sleep("20 millis")), Effect.forever, Effect.fork)
      const sampler = yield* sample
      const results = yield* Effect.all(
        Array.from({ length: 18 }, () => ch.query("SELECT sleep(0.2) AS s", Sleep)),
        { concurrency: "unbounded" }
      )
      yield* Fiber.interrupt(sampler)
      expect(results).toHaveLength(18)
      expect(maxInFlight).toBe(2)
      expect(maxOnServer).toBeGreaterThanOrEqual(1)
      expect(maxOnServer).toBeLessThanOrEqual(2)
    }).pipe(Effect.provide(layer(config(remoteBackend(url), { poolSize: 2, coalesce: false }))), Effect.provide(quietLogs)))

  it.live("a caller that waits past the pool's limit gets the overloaded error", () =>
    Effect.gen(function*() {
      const ch = yield* ClickHouse
      const slow = yield* Effect.fork(ch.query("SELECT sleep(1) AS s", Sleep))
      yield* Effect.sleep("100 millis")
      const waiter = yield* Effect.either(ch.query("SELECT 1 AS s", Sleep))
      expect(Either.isLeft(waiter) && waiter.left).toMatchObject({ _tag: "ClickHouseOverloaded", reason: "pool" })
      expect(yield* Fiber.join(slow)).toEqual([{ s: 0 }])
      // The slot is free again: the next caller is served.
      expect(yield* ch.query("SELECT 1 AS s", Sleep)).toEqual([{ s: 1 }])
    }).pipe(
      Effect.provide(layer(config(remoteBackend(url), { poolSize: 1, poolWait: Duration.millis(200), coalesce: false }))),
      Effect.provide(quietLogs)
    ))

  it.live("a broken connection is replaced, not reused; a read on it is retried, a write is not", () =>
    Effect.acquireUseRelease(
      Effect.promise(() => startProxy(url)),
      (proxy: Proxy) =>
        Effect.gen(function*() {
          const ch = yield* ClickHouse
          expect(yield* ch.query("SELECT 1 AS s", Sleep)).toEqual([{ s: 1 }])
          const before = proxy.connections()
          proxy.breakReusedConnections = true
          // The reused socket is reset: the read is retried once, on a fresh connection, and succeeds.
          expect(yield* ch.query("SELECT 2 AS s", Sleep)).toEqual([{ s: 2 }])
          expect(proxy.breakReusedConnections).toBe(false)
          expect(proxy.connections()).toBeGreaterThan(before)
          // A write is never retried blindly: the same fault reaches the caller.
          proxy.breakReusedConnections = true
          const write = yield* Effect.either(ch.command("SELECT 3"))
          expect(Either.isLeft(write) && write.left._tag).toBe("ClickHouseUnavailable")
          expect(yield* ch.query("SELECT 4 AS s", Sleep)).toEqual([{ s: 4 }])
        }).pipe(Effect.provide(layer(config(remoteBackend(proxy.url), { poolSize: 1, coalesce: false })))),
      (proxy) => Effect.promise(() => proxy.close())
    ).pipe(Effect.provide(quietLogs)))

  it.live("the server's own limit is real: without the pool's bound, callers are refused (code 202)", () =>
    Effect.gen(function*() {
      const ch = yield* ClickHouse
      const results = yield* Effect.all(
        Array.from({ length: 12 }, () => Effect.either(ch.query("SELECT sleep(0.5) AS s", Sleep))),
        { concurrency: "unbounded" }
      )
      const refused = results.filter((r) => Either.isLeft(r) && r.left._tag === "ClickHouseOverloaded")
      expect(refused.length).toBeGreaterThan(0)
      expect(refused.every((r) => Either.isLeft(r) && (r.left as { reason?: string }).reason === "server")).toBe(true)
    }).pipe(Effect.provide(layer(config(remoteBackend(url), { poolSize: 12, coalesce: false }))), Effect.provide(quietLogs)))
})

describe("real-server tier", () => {
  it("ran", () => {
    if (!hasRealServer && process.env.CI) throw new Error("the real ClickHouse server is required under CI")
    expect(true).toBe(true)
  })
})
