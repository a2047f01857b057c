/**
 * The analytics API for a host Effect app, in two pieces that only work together:
 *
 *   HttpRouter.empty.pipe(Analytics.mount("/analytics"))   every path under the prefix: the routes, their JSON
 *                                                          404/405, the guards, `x-request-id`, one log line each
 *   Layer.provide(Analytics.layerConfig)                    ClickHouse and its pool, the demo table on an empty
 *                                                          embedded engine, the queries
 *
 * A router that mounts the API needs the services of the layer, so forgetting the layer does not compile.
 * The host provides the HTTP server, the logger and the tracer.
 */
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { bootstrapIfEmpty } from "./Bootstrap.js"
import * as ClickHouse from "./ClickHouse/ClickHouse.js"
import {
  type ClickHouseConfig,
  clickHouseConfig,
  defaultHttpConfig,
  type HttpConfig,
  httpConfig,
  qualifiedName,
  type QueryLimits,
  queryLimits,
  type TableConfig,
  tableConfig
} from "./Config.js"
import { firstLine, StartupError } from "./Domain/StartupError.js"
import { apiKeyAuth, bodyLimit } from "./Http/Guards.js"
import { requestLog } from "./Http/Middleware.js"
import { MetricsRouter, routeTemplates, toApp, withMetricsRoute } from "./Http/Router.js"
import { Metrics } from "./Metrics.js"
import * as Prometheus from "./Observability/Prometheus.js"

/** The API as one HTTP app, built once with its guards. */
export class AnalyticsHttp extends Context.Tag("analytics-api/AnalyticsHttp")<
  AnalyticsHttp,
  { readonly app: HttpApp.Default<never, Metrics | ClickHouse.ClickHouse> }
>() {}

/** What serving the API needs: all of it comes from `layer` / `layerConfig`. */
export type Services = AnalyticsHttp | Metrics | ClickHouse.ClickHouse

/** The whole API as an HTTP app: serve it as it is (`HttpServer.serve(Analytics.app)`), or `mount` it. */
export const app: HttpApp.Default<never, Services> = Effect.flatMap(AnalyticsHttp, (http) => http.app)

/** Sends every path under `prefix` to the API, which answers each of them itself (JSON 404 included). */
export const mount = (prefix: `/${string}`) => <E, R>(router: HttpRouter.HttpRouter<E, R>) =>
  HttpRouter.mountApp(router, prefix, app)

/**
 * The edge every app of the API has: the request log with the guards (body limit, then API keys: the liveness
 * probe, and `/metrics` if public, excepted) and, given a `timeout`, the request's deadline.
 */
export const guarded = (options: HttpConfig, routes: ReadonlySet<string>, timeout?: Duration.Duration) =>
<R>(app: HttpApp.Default<never, R>) =>
  requestLog(routes, {
    guards: [
      bodyLimit(options.maxBodyBytes),
      apiKeyAuth(options.apiKeys, options.metricsPublic ? ["/healthz", "/metrics"] : ["/healthz"])
    ],
    accessLog: options.accessLog,
    ...(timeout === undefined ? {} : { timeout })
  })(app)

/** The guarded app alone, over whatever `Metrics` and `ClickHouse` are provided; `/metrics` among its routes unless turned off. */
export const httpLayer = (options: HttpConfig = defaultHttpConfig): Layer.Layer<AnalyticsHttp> =>
  Layer.scoped(
    AnalyticsHttp,
    Effect.gen(function*() {
      const router = options.serveMetrics
        ? withMetricsRoute(yield* Prometheus.makeHandler(options.serviceName))(MetricsRouter)
        : MetricsRouter
      return { app: toApp(router).pipe(guarded(options, routeTemplates(router), options.requestTimeout)) }
    })
  )

/** On the embedded engine an empty database gets the table and the demo rows (total 458) before the first request. */
export const bootstrapLayer = (table: TableConfig): Layer.Layer<never, StartupError, ClickHouse.ClickHouse> =>
  Layer.effectDiscard(
    Effect.gen(function*() {
      const ch = yield* ClickHouse.ClickHouse
      if (ch.target.kind === "embedded") yield* bootstrapIfEmpty(table)
    }).pipe(
      Effect.mapError((error) =>
        new StartupError({ message: `Could not create ${qualifiedName(table)}: ${firstLine(error.cause ?? error._tag)}`, cause: error })
      )
    )
  )

export interface Options {
  readonly clickHouse: ClickHouseConfig
  readonly table: TableConfig
  readonly http?: HttpConfig
  readonly limits?: QueryLimits
}

/** Everything `app` and `mount` need, from explicit settings. */
export const layer = (options: Options): Layer.Layer<Services, StartupError> =>
  Layer.mergeAll(httpLayer(options.http), Metrics.layer(options.table, options.limits), bootstrapLayer(options.table)).pipe(
    Layer.provideMerge(ClickHouse.layer(options.clickHouse))
  )

/** Every setting `layer` takes, from the environment (`CLICKHOUSE_URL`, `API_KEYS`, ...: see the README). */
export const config: Config.Config<Required<Options>> = Config.all({
  clickHouse: clickHouseConfig,
  table: tableConfig,
  http: httpConfig,
  limits: queryLimits
})

/** `layer` with its settings read from the environment; a bad one fails with a `ConfigError` naming it. */
export const layerConfig = Layer.unwrapEffect(Effect.map(config, layer))
