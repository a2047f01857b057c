import { HttpRouter, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it, layer } from "@effect/vitest"
import { Duration, Effect, Either, Layer, Schedule, Schema } from "effect"
import * as Path from "node:path"
import { afterAll, beforeAll } from "vitest"
import { ClickHouse, layer as clickHouseLayer } from "../src/ClickHouse/ClickHouse.ts"
import {
  type ClickHouseError,
  ClickHouseBadResponse,
  ClickHouseOverloaded,
  ClickHouseQueryError,
  ClickHouseTimeout,
  ClickHouseUnavailable
} from "../src/Domain/ClickHouseError.ts"
import { handleCause } from "../src/Http/ErrorResponse.ts"
import { requestLog } from "../src/Http/Middleware.ts"
import { startServer, removeServer, stopServer } from "./support/clickhouse-server.ts"
import {
  config,
  decodeErrorBody,
  describeReal,
  embeddedBackend,
  getJson,
  hasRealServer,
  httpApp,
  internals,
  quietLogs,
  remoteBackend,
  request,
  stack,
  uniqueTable
} from "./support/layers.ts"
import { resetTo } from "./support/suites.ts"
import { insertDemoRows } from "../src/Bootstrap.ts"

/** Causes as a driver would write them: everything a caller must never see. */
const leaky = new Error("Code: 202. DB::Exception: Too many simultaneous queries. (SELECT sum(value) FROM analytics.metrics) 127.0.0.1:8123")

const cases: ReadonlyArray<readonly [string, ClickHouseError, number, string]> = [
  ["overloaded-pool", new ClickHouseOverloaded({ reason: "pool" }), 503, "overloaded"],
  ["overloaded-server", new ClickHouseOverloaded({ reason: "server", cause: leaky }), 503, "overloaded"],
  ["unavailable", new ClickHouseUnavailable({ cause: leaky }), 503, "unavailable"],
  ["timeout", new ClickHouseTimeout({ cause: leaky }), 504, "timeout"],
  ["query", new ClickHouseQueryError({ code: 60, cause: leaky }), 500, "query_failed"],
  ["bad-response", new ClickHouseBadResponse({ cause: leaky }), 502, "bad_response"]
]

// Routes that fail on purpose, mapped at the same edge as the real ones.
const FailingRouter = cases.reduce(
  (router, [name, error]) => HttpRouter.get(router, `/fail/${name}`, Effect.catchAllCause(Effect.fail(error), handleCause)),
  HttpRouter.empty
).pipe(
  HttpRouter.get("/defect", Effect.catchAllCause(Effect.die(leaky), handleCause))
)

const expectClean = (text: string) => {
  for (const pattern of internals) expect(text).not.toMatch(pattern)
}

layer(
  HttpServer.serve(requestLog(new Set())(FailingRouter)).pipe(Layer.provideMerge(NodeHttpServer.layerTest), Layer.provide(quietLogs)),
  { excludeTestServices: true }
)("error mapping", (it) => {
  it.effect.each(cases)("%s → its status and a clean JSON body", ([name, , status, code]) =>
    Effect.gen(function*() {
      const response = yield* request("GET", `/fail/${name}`)
      expect(response.status).toBe(status)
      const body = yield* decodeErrorBody(response.json)
      expect(body.error.code).toBe(code)
      expectClean(response.text)
      expect(response.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/)
      expect(response.headers["retry-after"]).toBe(code === "overloaded" ? "1" : undefined)
    }))

  it.effect("a defect → 500 internal, nothing of it in the body", () =>
    Effect.gen(function*() {
      const response = yield* request("GET", "/defect")
      expect(response.status).toBe(500)
      expect(response.json).toEqual({ error: { code: "internal", message: "Internal server error." } })
    }))
})

const table = uniqueTable("errors")

layer(stack(config(embeddedBackend()), table), { excludeTestServices: true })("the app's own edges", (it) => {
  it.effect("unknown path → JSON 404; wrong method → JSON 405 with Allow", () =>
    Effect.gen(function*() {
      const missing = yield* request("GET", "/api/nope/../../etc/passwd")
      expect(missing.status).toBe(404)
      expect(missing.json).toEqual({ error: { code: "not_found", message: "No such endpoint." } })
      for (const method of ["POST", "PUT", "DELETE", "PATCH"] as const) {
        const wrong = yield* request(method, "/api/metrics")
        expect(wrong.status).toBe(405)
        expect(wrong.headers["allow"]).toBe("GET, HEAD")
        expect((yield* decodeErrorBody(wrong.json)).error.code).toBe("method_not_allowed")
      }
      expect((yield* getJson("/healthz")).json).toEqual({ status: "ok" })
    }))
})

// A real server of this file's own, so it can be stopped and started again on the same port.
const dir = Path.resolve(import.meta.dirname, `../.clickhouse/test-errors-${process.pid}`)
let url = ""
beforeAll(async () => {
  if (hasRealServer) url = await startServer({ dir, fresh: true })
})
afterAll(async () => {
  if (url !== "") await removeServer(dir)
})

const Sleep = Schema.Struct({ s: Schema.Number })

describeReal("faults on the real server", () => {
  const remoteTable = uniqueTable("faults")
  const withStack = <A, E>(effect: Effect.Effect<A, E, any>) =>
    Effect.provide(effect, stack(config(remoteBackend(url), { poolSize: 2 }), remoteTable)) as Effect.Effect<A, E>

  it.live("ClickHouse stopped → 503 JSON and /readyz 503; back → 200 without restarting the API", () =>
    withStack(Effect.gen(function*() {
      yield* resetTo(remoteTable, [])
      yield* insertDemoRows(remoteTable)
      expect((yield* getJson("/api/metrics")).json).toEqual({ total: 458 })

      yield* Effect.promise(() => stopServer(dir))
      const down = yield* getJson("/api/metrics")
      expect(down.status).toBe(503)
      expect(down.json).toEqual({ error: { code: "unavailable", message: "The analytics database is unavailable." } })
      expectClean(down.text)
      const notReady = yield* getJson("/readyz")
      expect(notReady.status).toBe(503)
      expectClean(notReady.text)

      yield* Effect.promise(() => startServer({ dir, port: Number(new URL(url).port) }))
      const back = yield* getJson("/api/metrics").pipe(
        Effect.filterOrFail((r) => r.status === 200),
        Effect.retry({ times: 50, schedule: Schedule.spaced("200 millis") }),
        Effect.either
      )
      expect(Either.isRight(back) && back.right.json).toEqual({ total: 458 })
      const ready = yield* getJson("/readyz")
      expect(ready.status).toBe(200)
      expect(ready.json).toEqual({
        status: "ready",
        clickhouse: "remote",
        backend: { kind: "remote", url: new URL(url).origin, version: expect.stringMatching(/^18\.16\./) },
        pool: { size: expect.any(Number), inUse: 0, waiting: 0 },
        replicas: [{
          url: new URL(url).origin,
          up: true,
          state: "closed",
          version: expect.stringMatching(/^18\.16\./),
          pool: { size: expect.any(Number), inUse: 0, waiting: 0 }
        }]
      })
    })))

  it.live("a missing table → 500 query_failed with no driver text", () =>
    Effect.gen(function*() {
      const response = yield* getJson("/api/metrics")
      expect(response.status).toBe(500)
      expect((yield* decodeErrorBody(response.json)).error.code).toBe("query_failed")
      expectClean(response.text)
    }).pipe(
      Effect.provide(httpApp({ database: "no_such_database", table: "metrics" }).pipe(
        Layer.provide(clickHouseLayer(config(remoteBackend(url)))),
        Layer.provide(quietLogs)
      ))
    ))

  it.live("a query past its deadline → timeout, and it no longer runs on the server", () =>
    Effect.gen(function*() {
      const ch = yield* ClickHouse
      // An endless scan: only a deadline that reaches the server can stop it.
      const result = yield* Effect.either(ch.query("SELECT count() AS s FROM system.numbers", Sleep))
      expect(Either.isLeft(result) && result.left._tag).toBe("ClickHouseTimeout")
      const running = () =>
        fetch(`${url}/?query=${encodeURIComponent("SELECT count() FROM system.processes WHERE query LIKE '%FROM system.numbers%' AND query NOT LIKE '%processes%'")}`)
          .then((r) => r.text()).then(Number)
      let still = yield* Effect.promise(running)
      for (let i = 0; i < 10 && still > 0; i++) {
        yield* Effect.sleep("100 millis")
        still = yield* Effect.promise(running)
      }
      expect(still).toBe(0)
    }).pipe(
      Effect.provide(clickHouseLayer(config(remoteBackend(url), { queryTimeout: Duration.seconds(1) }))),
      Effect.provide(quietLogs)
    ))
})

describe("no real server", () => {
  it("is only allowed outside CI", () => {
    expect(hasRealServer || !process.env.CI).toBe(true)
  })
})
