// The ceiling for an @effect/platform service here: one route answering a constant {"total":458}, built once,
// with the tracer off (as the API runs untraced). No ClickHouse.
import { HttpMiddleware, HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { createServer } from "node:http"

const answer = HttpServerResponse.unsafeJson({ total: 458 })
const router = HttpRouter.empty.pipe(HttpRouter.get("/api/metrics", answer))

HttpServer.serve(router).pipe(
  HttpMiddleware.withTracerDisabledWhen(() => true),
  Layer.provide(NodeHttpServer.layer(() => createServer(), { port: Number(process.env.PORT), host: process.env.HOST ?? "127.0.0.1" })),
  Layer.launch,
  NodeRuntime.runMain
)
