import { HttpServer } from "@effect/platform"
import { Effect, Layer } from "effect"
import { bootstrapIfEmpty } from "./ClickHouse/Bootstrap.ts"
import * as ClickHouse from "./ClickHouse/ClickHouse.ts"
import { clickHouseConfig, serverConfig, type TableConfig, tableConfig } from "./Config.ts"
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

/** The HTTP app on whatever `HttpServer` is provided, over the given table. */
export const httpLayer = (table: TableConfig) =>
  HttpServer.serve(MetricsApp, requestLog).pipe(
    HttpServer.withLogAddress,
    Layer.provide(Metrics.layer(table))
  )

/** The whole service. Every setting is read and checked before anything starts. */
export const AppLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    const server = yield* serverConfig
    const clickHouse = yield* clickHouseConfig
    const table = yield* tableConfig
    return httpLayer(table).pipe(
      Layer.provide(Server.make(server)),
      Layer.provide(bootstrapLayer(table)),
      Layer.provide(ClickHouse.layer(clickHouse))
    )
  })
)
