/** The public surface for embedding analytics-api in another Effect app. */
export { AppLive, bootstrapLayer, defaultHttpOptions, guardedApp, httpLayer, type HttpOptions } from "./App.ts"
export { createSchema, insertDemoRows } from "./ClickHouse/Bootstrap.ts"
export {
  ClickHouse,
  layer as ClickHouseLayer,
  layerConfig as ClickHouseLayerConfig,
  make as makeClickHouse
} from "./ClickHouse/ClickHouse.ts"
export type { QueryParams, ServerInfo, Target } from "./ClickHouse/ClickHouse.ts"
export { type CoalesceOptions, type Coalescer, makeCoalescer } from "./ClickHouse/Coalesce.ts"
export { hedgeRead, makeRetryBudget, retryable, retryRead } from "./ClickHouse/Retry.ts"
export {
  type Backend,
  type ClickHouseConfig,
  clickHouseConfig,
  parseBackend,
  type ServerConfig,
  serverConfig,
  type TableConfig,
  tableConfig
} from "./Config.ts"
export { ApiError, ErrorBody } from "./Domain/ApiError.ts"
export * from "./Domain/ClickHouseError.ts"
export { TotalResponse } from "./Domain/Metrics.ts"
export { apiKeyAuth, bodyLimit, deadline } from "./Http/Guards.ts"
export { requestLog } from "./Http/Middleware.ts"
export { MetricsApp, MetricsRouter } from "./Http/Router.ts"
export { Metrics } from "./Metrics.ts"
