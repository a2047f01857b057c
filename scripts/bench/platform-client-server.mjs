// The least an @effect/platform service can do for GET /api/metrics: one route, one shared @clickhouse/client,
// the tracer off. No gate, retry or coalescing; any failure is a 500. The client has as many sockets as the API's
// pool has connections (CLICKHOUSE_POOL_SIZE, 4 by default), so both keep the same number of queries in flight.
import { createClient } from "@clickhouse/client"
import { HttpMiddleware, HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"

const client = createClient({ url: process.env.CLICKHOUSE_URL, max_open_connections: Number(process.env.CLICKHOUSE_POOL_SIZE ?? 4) })
const sql = `SELECT sum(value) AS total FROM ${process.env.CLICKHOUSE_DATABASE ?? "analytics"}.${process.env.CLICKHOUSE_TABLE ?? "metrics"}`

const total = Effect.tryPromise(() => client.query({ query: sql, format: "JSONEachRow" }).then((rows) => rows.json()))

const getTotal = total.pipe(
  Effect.map((rows) => HttpServerResponse.unsafeJson({ total: Number(rows[0].total) })),
  Effect.catchAllCause(() => Effect.succeed(HttpServerResponse.unsafeJson({ error: "query failed" }, { status: 500 })))
)

const router = HttpRouter.empty.pipe(HttpRouter.get("/api/metrics", getTotal))

HttpServer.serve(router).pipe(
  HttpMiddleware.withTracerDisabledWhen(() => true),
  Layer.provide(NodeHttpServer.layer(() => createServer(), { port: Number(process.env.PORT), host: process.env.HOST ?? "127.0.0.1" })),
  Layer.launch,
  NodeRuntime.runMain
)
