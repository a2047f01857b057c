// The least an @effect/platform service can do for a coalesced GET /api/metrics: one route, one shared
// @clickhouse/client, the tracer off, and the fresh-read rule of the API's coalescer in a dozen lines: a caller
// shares a query that starts after it arrived (the one in flight when it came is too old for it), so callers
// that come while one runs all wait for the next. No gate, retry, deadline, request log or errors worth the name.
import { createClient } from "@clickhouse/client"
import { HttpMiddleware, HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"

const client = createClient({ url: process.env.CLICKHOUSE_URL, max_open_connections: Number(process.env.CLICKHOUSE_POOL_SIZE ?? 4) })
const sql = `SELECT sum(value) AS total FROM ${process.env.CLICKHOUSE_DATABASE ?? "analytics"}.${process.env.CLICKHOUSE_TABLE ?? "metrics"}`

const query = () => client.query({ query: sql, format: "JSONEachRow" }).then((rows) => rows.json())
  .then((rows) => HttpServerResponse.unsafeJson({ total: Number(rows[0].total) }))

let running // the query in flight
let next // the one after it, which every caller that came while `running` runs shares
const start = () => {
  running = query().finally(() => {
    running = undefined
    if (next !== undefined) next.start()
  })
  return running
}
const joinFresh = () => {
  if (running === undefined) return start()
  if (next === undefined) {
    let resolve
    const promise = new Promise((r) => (resolve = r))
    next = { promise, start: () => { next = undefined; resolve(start()) } }
  }
  return next.promise
}

const getTotal = Effect.tryPromise(joinFresh).pipe(
  Effect.catchAllCause(() => Effect.succeed(HttpServerResponse.unsafeJson({ error: "query failed" }, { status: 500 })))
)

const router = HttpRouter.empty.pipe(HttpRouter.get("/api/metrics", getTotal))

HttpServer.serve(router).pipe(
  HttpMiddleware.withTracerDisabledWhen(() => true),
  Layer.provide(NodeHttpServer.layer(() => createServer(), { port: Number(process.env.PORT), host: process.env.HOST ?? "127.0.0.1" })),
  Layer.launch,
  NodeRuntime.runMain
)
