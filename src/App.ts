import { HttpMiddleware, HttpServer } from "@effect/platform"
import { Config, Effect, Layer } from "effect"
import * as Analytics from "./Analytics.js"
import { serverConfig } from "./Config.js"
import * as Server from "./Http/Server.js"

/** The whole service as a standalone server. Every setting is read and checked before anything starts. */
export const AppLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    const settings = yield* Config.all({ analytics: Analytics.config, server: serverConfig })
    const server = Server.make(settings.server)
    // Built bottom up, released top down: serving stops, in-flight requests drain, then ClickHouse closes.
    return HttpServer.serve(Analytics.app).pipe(
      HttpServer.withLogAddress,
      // The service exports no traces, so the platform's span per request would go nowhere; it costs about a
      // quarter of the throughput. An app that mounts the API under its own tracer keeps its spans.
      HttpMiddleware.withTracerDisabledWhen(() => true),
      Layer.provide(server.drain),
      Layer.provide(Analytics.layer(settings.analytics)),
      Layer.provide(server.listen)
    )
  })
)
