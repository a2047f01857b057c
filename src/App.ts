import { HttpServer } from "@effect/platform"
import { Effect, Layer } from "effect"
import { bootstrapIfEmpty } from "./ClickHouse/Bootstrap.ts"
import * as ClickHouse from "./ClickHouse/ClickHouse.ts"
import { tableConfig } from "./Config.ts"
import { requestLog } from "./Http/Middleware.ts"
import { MetricsApp } from "./Http/Router.ts"
import * as Server from "./Http/Server.ts"
import { Metrics } from "./Metrics.ts"

/** On the embedded engine an empty database gets the table and the demo rows on first start. */
export const BootstrapLive = Layer.effectDiscard(
  Effect.gen(function*() {
    const ch = yield* ClickHouse.ClickHouse
    if (ch.target.kind !== "embedded") return
    yield* bootstrapIfEmpty(yield* tableConfig)
  })
)

export const ClickHouseLive = ClickHouse.layerConfig()

/** The HTTP app on any `HttpServer`, given the ClickHouse service. */
export const HttpLive = HttpServer.serve(MetricsApp, requestLog).pipe(
  HttpServer.withLogAddress,
  Layer.provide(Metrics.Default)
)

export const AppLive = HttpLive.pipe(
  Layer.provide(Server.layerConfig),
  Layer.provide(BootstrapLive),
  Layer.provide(ClickHouseLive)
)
