/** The public surface for embedding analytics-api in another Effect app. */
export * as Analytics from "./Analytics.js"
export { AppLive } from "./App.js"
export { createSchema, insertDemoRows } from "./Bootstrap.js"
export {
  ClickHouse,
  layer as ClickHouseLayer,
  layerConfig as ClickHouseLayerConfig,
  make as makeClickHouse
} from "./ClickHouse/ClickHouse.js"
export type { QueryParams, ServerInfo, Target } from "./ClickHouse/ClickHouse.js"
export {
  type Backend,
  type ClickHouseConfig,
  clickHouseConfig,
  defaultHttpConfig,
  type HttpConfig,
  httpConfig,
  type LogConfig,
  logConfig,
  parseBackend,
  type ServerConfig,
  serverConfig,
  type TableConfig,
  tableConfig
} from "./Config.js"
export { ApiError, ErrorBody, ErrorCode } from "./Domain/ApiError.js"
export * from "./Domain/ClickHouseError.js"
export * from "./Domain/Query.js"
export { StartupError } from "./Domain/StartupError.js"
export { InvalidQuery, Metrics, type SeriesQuery } from "./Metrics.js"
