// (h) with the one thing a bounded pool must add: a FIFO queue in front of the client with as many permits as the
// client has sockets (CLICKHOUSE_POOL_SIZE, 4 by default), taken before a query and given back once its rows are
// read, so the client never queues a query itself. The API's gate does the same (and bounds its queue, times its
// waits and lets hedges go first); this is the least of it. Against (h) it shows what Node's agent and the client
// cost once their sockets go idle between queries instead of passing straight to a query queued in the agent; the
// API's uncoalesced read against it shows what the rest (deadline, retry, hedge, request edge) costs.
import { createClient } from "@clickhouse/client"
import { HttpMiddleware, HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"

const sockets = Number(process.env.CLICKHOUSE_POOL_SIZE ?? 4)
const client = createClient({ url: process.env.CLICKHOUSE_URL, max_open_connections: sockets })
const sql = `SELECT sum(value) AS total FROM ${process.env.CLICKHOUSE_DATABASE ?? "analytics"}.${process.env.CLICKHOUSE_TABLE ?? "metrics"}`

let permits = sockets
const waiting = []
const acquire = () => (permits > 0 ? (permits--, Promise.resolve()) : new Promise((resolve) => waiting.push(resolve)))
const release = () => {
  const next = waiting.shift()
  if (next === undefined) permits++
  else next()
}

const query = () => client.query({ query: sql, format: "JSONEachRow" }).then((rows) => rows.json())
const total = Effect.tryPromise(() => acquire().then(query).finally(release))

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
