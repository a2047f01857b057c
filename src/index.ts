/** The public surface for embedding analytics-api in another Effect app. */
export { AppLive, bootstrapLayer, httpLayer } from "./App.ts"
export { createSchema, insertDemoRows } from "./ClickHouse/Bootstrap.ts"
export { ClickHouse, layer as ClickHouseLayer, layerConfig as ClickHouseLayerConfig, make as makeClickHouse } from "./ClickHouse/ClickHouse.ts"
export type { ServerInfo, Target } from "./ClickHouse/ClickHouse.ts"
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
export { requestLog } from "./Http/Middleware.ts"
export { MetricsApp, MetricsRouter } from "./Http/Router.ts"
export { Metrics } from "./Metrics.ts"
