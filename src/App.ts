import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as V8 from "node:v8"
import * as Analytics from "./Analytics.js"
import { type HttpConfig, logConfig, type ServerConfig, serverConfig, tracingConfig } from "./Config.js"
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

/**
 * V8 grows the old generation to up to four times what its last full GC left live. Under load, requests that
 * wait (for a coalesced run, for a connection) outlive two young-generation GCs and are promoted; their garbage then
 * fills old space until the next full GC. A fixed growth bounds that peak for some more full GCs. Set once, before
 * the app allocates; V8 reads it at each full GC.
 */
const limitHeapGrowth = (percent: number) =>
  Effect.sync(() => {
    if (percent > 0) V8.setFlagsFromString(`--heap-growing-percent=${percent}`)
  })

/** Every setting of the standalone server, read and checked. */
export const settings = Effect.gen(function*() {
  const read = yield* Config.all({ analytics: Analytics.config, server: serverConfig, tracing: tracingConfig, log: logConfig })
  // With a port of its own, /metrics is served there only; above info, no line per request (Logging.ts).
  const http = {
    ...read.analytics.http,
    serveMetrics: Option.isNone(read.server.metricsPort),
    accessLog: !LogLevel.greaterThan(read.log.level, LogLevel.Info)
  }
  return { ...read, analytics: { ...read.analytics, http } }
})

/**
 * What the primary of `WORKERS=n` checks before it forks: every setting, and a ClickHouse server for the workers
 * to share (the embedded engine allows one process per data directory).
 */
export const preflight = (workers: number) =>
  Effect.flatMap(settings, ({ analytics, server }) =>
    analytics.clickHouse.backend._tag === "Remote"
      ? Effect.succeed(server)
      : Effect.fail(ConfigError.InvalidData(
        ["WORKERS"],
        `${workers} workers need CLICKHOUSE_URL set to a ClickHouse server's http(s):// URL (the embedded engine allows one process per data directory)`
      ))
  )

/**
 * The whole service as a standalone server. Every setting is read and checked before anything starts. The port is
 * taken first, so that a busy one fails first, unless `listenFirst` is false: then it is taken once the app can
 * serve (for a worker, whose port the primary already holds: a restarted worker takes no connections it cannot
 * answer yet).
 */
const make = (listenFirst: boolean) =>
  Layer.unwrapEffect(
    Effect.gen(function*() {
      const { analytics, server: serverSettings, tracing } = yield* settings
      yield* limitHeapGrowth(serverSettings.heapGrowingPercent)
      const server = Server.make(serverSettings)
      const traced = Option.isSome(tracing.url)
      // The app itself, not `Analytics.app` (which looks it up on every request).
      const api = Layer.unwrapEffect(Effect.map(Analytics.AnalyticsHttp, (http) => HttpServer.serve(http.app))).pipe(
        HttpServer.withLogAddress,
        // Untraced, the platform's span per request would go nowhere; it costs about a quarter of the throughput.
        traced ? (layer) => layer : HttpMiddleware.withTracerDisabledWhen(() => true)
      )
      // Built bottom up, released top down: serving stops, in-flight requests drain, then ClickHouse closes.
      // The two servers one after the other, not `Layer.merge`: merged layers are built in forked fibers, and every
      // request fiber of a server built in one would carry its fork-scope override (a fiber ref more to copy on
      // each of the request's ref writes).
      const served = metricsServer(serverSettings, analytics.http).pipe(
        Layer.provideMerge(api.pipe(Layer.provide(server.drain)))
      )
      const services = Analytics.layer(analytics)
      return (listenFirst
        ? served.pipe(Layer.provide(services), Layer.provide(server.listen))
        : served.pipe(Layer.provide(server.listen), Layer.provide(services))).pipe(Layer.provide(Tracing.layer(tracing)))
    })
  )

export const AppLive = make(true)

/** The service as one worker process of `WORKERS=n` (Workers.ts). */
export const WorkerLive = make(false)
