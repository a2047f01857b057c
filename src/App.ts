import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Analytics from "./Analytics.js"
import { type HttpConfig, type ServerConfig, serverConfig, tracingConfig } from "./Config.js"
import { routeTemplates, toApp, withMetricsRoute } from "./Http/Router.js"
import * as Server from "./Http/Server.js"
import * as Prometheus from "./Observability/Prometheus.js"
import * as Tracing from "./Observability/Tracing.js"

/** `/metrics` alone on `METRICS_PORT`, with the API's guards (its key rule included). */
const metricsServer = (server: ServerConfig, http: HttpConfig) =>
  Option.match(server.metricsPort, {
    onNone: () => Layer.empty,
    onSome: (port) => {
      const own = Server.make({ ...server, port }, "METRICS_PORT")
      return Layer.unwrapScoped(
        Effect.map(Prometheus.makeHandler(http.serviceName), (handler) => {
          const router = withMetricsRoute(handler)(HttpRouter.empty)
          return HttpServer.serve(toApp(router).pipe(Analytics.guarded(http, routeTemplates(router))))
        })
      ).pipe(HttpMiddleware.withTracerDisabledWhen(() => true), Layer.provide(own.drain), Layer.provide(own.listen))
    }
  })

/** The whole service as a standalone server. Every setting is read and checked before anything starts. */
export const AppLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    const read = yield* Config.all({ analytics: Analytics.config, server: serverConfig, tracing: tracingConfig })
    // With a port of its own, /metrics is served there only.
    const http = { ...read.analytics.http, serveMetrics: Option.isNone(read.server.metricsPort) }
    const settings = { ...read, analytics: { ...read.analytics, http } }
    const server = Server.make(settings.server)
    const traced = Option.isSome(settings.tracing.url)
    const api = HttpServer.serve(Analytics.app).pipe(
      HttpServer.withLogAddress,
      // Untraced, the platform's span per request would go nowhere; it costs about a quarter of the throughput.
      traced ? (layer) => layer : HttpMiddleware.withTracerDisabledWhen(() => true)
    )
    // Built bottom up, released top down: serving stops, in-flight requests drain, then ClickHouse closes.
    return Layer.merge(
      api.pipe(Layer.provide(server.drain)),
      metricsServer(settings.server, settings.analytics.http)
    ).pipe(
      Layer.provide(Analytics.layer(settings.analytics)),
      Layer.provide(server.listen),
      Layer.provide(Tracing.layer(settings.tracing))
    )
  })
)
