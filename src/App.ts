import { HttpMiddleware, HttpServer } from "@effect/platform"
import { Duration, Effect, Layer, type Redacted } from "effect"
import { bootstrapIfEmpty } from "./ClickHouse/Bootstrap.ts"
import * as ClickHouse from "./ClickHouse/ClickHouse.ts"
import { clickHouseConfig, serverConfig, type TableConfig, tableConfig } from "./Config.ts"
import { apiKeyAuth, bodyLimit, deadline } from "./Http/Guards.ts"
import { requestLog } from "./Http/Middleware.ts"
import { MetricsApp } from "./Http/Router.ts"
import * as Server from "./Http/Server.ts"
import { Metrics } from "./Metrics.ts"

/** On the embedded engine an empty database gets the table and the demo rows on first start. */
export const bootstrapLayer = (table: TableConfig) =>
  Layer.effectDiscard(
    Effect.gen(function*() {
      const ch = yield* ClickHouse.ClickHouse
      if (ch.target.kind === "embedded") yield* bootstrapIfEmpty(table)
    })
  )

export interface HttpOptions {
  readonly requestTimeout: Duration.Duration
  readonly apiKeys: ReadonlyArray<Redacted.Redacted<string>>
  readonly maxBodyBytes: number
}

export const defaultHttpOptions: HttpOptions = { requestTimeout: Duration.seconds(30), apiKeys: [], maxBodyBytes: 64 * 1024 }

/** The app with the service's guards: body limit, API keys, then the per-request deadline. */
export const guardedApp = (options: HttpOptions = defaultHttpOptions) =>
  MetricsApp.pipe(deadline(options.requestTimeout), apiKeyAuth(options.apiKeys), bodyLimit(options.maxBodyBytes))

/** The HTTP app on whatever `HttpServer` is provided, over the given table. */
export const httpLayer = (table: TableConfig, options: HttpOptions = defaultHttpOptions) =>
  HttpServer.serve(guardedApp(options), requestLog).pipe(
    HttpServer.withLogAddress,
    // The service exports no traces, so the platform's span per request would go nowhere; it costs about a
    // quarter of the throughput. Apps that embed MetricsRouter under their own tracer keep theirs.
    HttpMiddleware.withTracerDisabledWhen(() => true),
    Layer.provide(Metrics.layer(table))
  )

/** The whole service. Every setting is read and checked before anything starts. */
export const AppLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    const server = yield* serverConfig
    const clickHouse = yield* clickHouseConfig
    const table = yield* tableConfig
    return httpLayer(table, { ...defaultHttpOptions, requestTimeout: server.requestTimeout, apiKeys: server.apiKeys }).pipe(
      Layer.provide(Server.make(server)),
      Layer.provide(bootstrapLayer(table)),
      Layer.provide(ClickHouse.layer(clickHouse))
    )
  })
)
