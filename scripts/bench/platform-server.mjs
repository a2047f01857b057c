// The ceiling for an @effect/platform service here: one route answering a constant {"total":458}, built once,
// with the tracer off (as the API runs untraced). No ClickHouse. Modules imported by path, as the API imports
// them (the barrels load every module of effect and @effect/platform): its idle and peak RSS are the framework's
// own floor.
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import { createServer } from "node:http"

const answer = HttpServerResponse.unsafeJson({ total: 458 })
const router = HttpRouter.empty.pipe(HttpRouter.get("/api/metrics", answer))

HttpServer.serve(router).pipe(
  HttpMiddleware.withTracerDisabledWhen(() => true),
  Layer.provide(NodeHttpServer.layer(() => createServer(), { port: Number(process.env.PORT), host: process.env.HOST ?? "127.0.0.1" })),
  Layer.launch,
  NodeRuntime.runMain
)
