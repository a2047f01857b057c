import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Path from "node:path"

export type Backend =
  /** Servers that hold the same data (replicas), in the order given: writes go to the first healthy one. */
  | { readonly _tag: "Remote"; readonly urls: readonly [URL, ...Array<URL>] }
  | { readonly _tag: "Embedded"; readonly path: string }
  /** `CLICKHOUSE_URL` unset: try the original default once, else fall back to the embedded engine. */
  | { readonly _tag: "Auto"; readonly url: URL; readonly path: string }

export const defaultUrl = "http://localhost:8123"
export const defaultDataDir = "./data"

export const parseBackend = (raw: string | undefined): Either.Either<Backend, string> => {
  if (raw === undefined || raw.trim() === "") {
    return Either.right({ _tag: "Auto", url: new URL(defaultUrl), path: Path.resolve(defaultDataDir) })
  }
  const value = raw.trim()
  if (value === "embedded") return Either.right({ _tag: "Embedded", path: Path.resolve(defaultDataDir) })
  if (value.startsWith("embedded:") && value.length > "embedded:".length) {
    return Either.right({ _tag: "Embedded", path: Path.resolve(value.slice("embedded:".length)) })
  }
  const urls: Array<URL> = []
  for (const part of value.split(",")) {
    const url = httpUrl(part.trim())
    if (url === undefined) return Either.left(invalidBackend)
    if (urls.some((known) => known.origin === url.origin)) return Either.left(`lists ${url.origin} twice`)
    urls.push(url)
  }
  return Either.right({ _tag: "Remote", urls: urls as [URL, ...Array<URL>] })
}

const invalidBackend = "must be an http(s):// URL, a comma-separated list of them (replicas), 'embedded' or 'embedded:<dir>'"

const httpUrl = (text: string): URL | undefined => {
  try {
    const url = new URL(text)
    return url.protocol === "http:" || url.protocol === "https:" ? url : undefined
  } catch {
    return undefined
  }
}

const intInRange = (name: string, min: number, max: number, fallback: number) =>
  Config.integer(name).pipe(
    Config.validate({
      message: `must be an integer from ${min} to ${max}`,
      validation: (n) => n >= min && n <= max
    }),
    Config.withDefault(fallback)
  )

const millis = (name: string, min: number, max: number, fallback: number) =>
  intInRange(name, min, max, fallback).pipe(Config.map((ms) => Duration.millis(ms)))

const identifier = (name: string, fallback: string) =>
  Config.string(name).pipe(
    Config.validate({
      message: "must be a plain identifier (letters, digits, underscore; not starting with a digit)",
      validation: (s) => /^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(s)
    }),
    Config.withDefault(fallback)
  )

export interface ClickHouseConfig {
  readonly backend: Backend
  readonly username: string
  readonly password: Redacted.Redacted<string>
  /** Connections in the pool: the most queries this process runs at once. */
  readonly poolSize: number
  /** How long a request may wait for a pooled connection before it is told the service is overloaded. */
  readonly poolWait: Duration.Duration
  /** Callers allowed to wait for a connection at once; past that they are told the service is overloaded. */
  readonly maxWaiting: number
  /** Deadline of one call (waits, tries and hedges included), enforced with an AbortSignal; the server gets 90% of it as max_execution_time. */
  readonly queryTimeout: Duration.Duration
  /** Idle sockets are retired after this long; keep it below the server's keep_alive_timeout (3 s on old servers). */
  readonly idleSocketTtl: Duration.Duration
  /** Identical reads in flight at once share the next run (fresh-read coalescing); see Coalesce.ts. */
  readonly coalesce: boolean
  /** A read that has not answered after this long is hedged: a second try starts on another connection. Zero: never. */
  readonly hedgeAfter: Duration.Duration
  /** Zero: off. Otherwise answers may be reused while their query started less than this long ago. */
  readonly cacheTtl: Duration.Duration
}

export const clickHouseConfig: Config.Config<ClickHouseConfig> = Config.all({
  backend: Config.string("CLICKHOUSE_URL").pipe(
    Config.option,
    Config.mapOrFail((raw) =>
      parseBackend(Option.getOrUndefined(raw)).pipe(
        Either.mapLeft((message) => ConfigError.InvalidData(["CLICKHOUSE_URL"], message))
      )
    )
  ),
  username: Config.string("CLICKHOUSE_USER").pipe(Config.withDefault("default")),
  password: Config.redacted("CLICKHOUSE_PASSWORD").pipe(Config.withDefault(Redacted.make(""))),
  poolSize: intInRange("CLICKHOUSE_POOL_SIZE", 1, 1000, 4),
  poolWait: millis("CLICKHOUSE_POOL_WAIT_MS", 1, 600_000, 10_000),
  maxWaiting: intInRange("CLICKHOUSE_POOL_MAX_WAITING", 0, 1_000_000, 10_000),
  queryTimeout: millis("CLICKHOUSE_QUERY_TIMEOUT_MS", 100, 600_000, 30_000),
  idleSocketTtl: millis("CLICKHOUSE_IDLE_SOCKET_TTL_MS", 100, 60_000, 2_000),
  coalesce: Config.boolean("COALESCE_READS").pipe(Config.withDefault(true)),
  hedgeAfter: millis("CLICKHOUSE_HEDGE_AFTER_MS", 0, 600_000, 1_000),
  cacheTtl: millis("CACHE_TTL_MS", 0, 3_600_000, 0)
})

export interface TableConfig {
  readonly database: string
  readonly table: string
}

export const tableConfig: Config.Config<TableConfig> = Config.all({
  database: identifier("CLICKHOUSE_DATABASE", "analytics"),
  table: identifier("CLICKHOUSE_TABLE", "metrics")
})

export const qualifiedName = (t: TableConfig) => `${t.database}.${t.table}`

export interface QueryLimits {
  /** Most points one series may have; a request for more is a 400. */
  readonly maxPoints: number
  /** Most series one answer may have; a request for more is a 400. */
  readonly maxSeries: number
}

export const queryLimits: Config.Config<QueryLimits> = Config.all({
  maxPoints: intInRange("SERIES_MAX_POINTS", 1, 10_000_000, 10_000),
  maxSeries: intInRange("SERIES_MAX_SERIES", 1, 1_000_000, 1_000)
})

export const defaultQueryLimits: QueryLimits = { maxPoints: 10_000, maxSeries: 1_000 }

export interface ServerConfig {
  readonly port: number
  /** `/metrics` is served here, and not on `port`, when set. */
  readonly metricsPort: Option.Option<number>
  readonly host: Option.Option<string>
  /** How long in-flight requests may run on after SIGTERM before their connections are closed. */
  readonly shutdownGrace: Duration.Duration
  /**
   * How far V8 lets the old generation grow past what the last full GC left live, in percent (0: V8's own choice,
   * up to 300% on a large machine). Under load, waiting requests outlive the young generation, so old space fills
   * with their garbage until the next full GC: this bounds the peak.
   */
  readonly heapGrowingPercent: number
  /**
   * Connections the kernel may hold before the server accepts them (the kernel caps it at net.core.somaxconn).
   * Past it, a connecting client's SYN is dropped and retried 1 s later, then 3 s: with Node's 511, a thousand
   * clients connecting at once wait seconds for nothing.
   */
  readonly backlog: number
}

/** The standalone server's own settings; an app that embeds the API has its own server. */
export const serverConfig: Config.Config<ServerConfig> = Config.all({
  port: Config.port("PORT").pipe(Config.withDefault(3000)),
  metricsPort: Config.port("METRICS_PORT").pipe(Config.option),
  host: Config.string("HOST").pipe(Config.option),
  shutdownGrace: millis("SHUTDOWN_GRACE_MS", 0, 600_000, 10_000),
  heapGrowingPercent: intInRange("HEAP_GROWING_PERCENT", 0, 300, 75),
  backlog: intInRange("LISTEN_BACKLOG", 1, 65_535, 4096)
})

const serviceNameConfig = Config.string("OTEL_SERVICE_NAME").pipe(
  Config.validate({ message: "must not be empty", validation: (name) => name.trim() !== "" }),
  Config.withDefault("analytics-api")
)

export interface HttpConfig {
  /** Each request's deadline: past it the caller gets 504 and the work, down to the ClickHouse query, stops. */
  readonly requestTimeout: Duration.Duration
  /** Empty: no authentication. Otherwise every path but /healthz needs one of these keys. */
  readonly apiKeys: ReadonlyArray<Redacted.Redacted<string>>
  /** No endpoint takes a body: a declared body past this is refused before anyone reads it. */
  readonly maxBodyBytes: number
  /** `GET /metrics` among the API's routes (on by default; the standalone service turns it off when `METRICS_PORT` is set). */
  readonly serveMetrics: boolean
  /** `/metrics` answers without an API key. */
  readonly metricsPublic: boolean
  /** `service.name` of the metrics' `target_info` and of the traces. */
  readonly serviceName: string
  /**
   * One info line per request (under a minimum log level above info there are none anyway). The standalone service
   * turns it off when `LOG_LEVEL` is above info (Logging.ts).
   */
  readonly accessLog: boolean
}

/** The API's guards, wherever it is served. */
export const httpConfig: Config.Config<HttpConfig> = Config.all({
  requestTimeout: millis("REQUEST_TIMEOUT_MS", 100, 600_000, 30_000),
  apiKeys: Config.string("API_KEYS").pipe(
    Config.mapOrFail((raw) => {
      const keys = raw.split(",").map((key) => key.trim()).filter((key) => key !== "")
      return keys.every((key) => key.length >= 16)
        ? Either.right(keys.map((key) => Redacted.make(key)))
        : Either.left(ConfigError.InvalidData([], "each key must be at least 16 characters"))
    }),
    Config.withDefault<ReadonlyArray<Redacted.Redacted<string>>>([])
  ),
  maxBodyBytes: intInRange("MAX_BODY_BYTES", 0, 64 * 1024 * 1024, 64 * 1024),
  serveMetrics: Config.succeed(true),
  metricsPublic: Config.boolean("METRICS_PUBLIC").pipe(Config.withDefault(false)),
  serviceName: serviceNameConfig,
  accessLog: Config.succeed(true)
})

/** The defaults of `httpConfig`, for code that builds the API without reading the environment. */
export const defaultHttpConfig: HttpConfig = Effect.runSync(
  Effect.withConfigProvider(httpConfig, ConfigProvider.fromMap(new Map()))
)

const logLevels: Record<string, LogLevel.LogLevel> = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warn: LogLevel.Warning,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None,
  off: LogLevel.None
}

/** One of the names, any case. */
const oneOf = <A>(name: string, choices: Record<string, A>, allowed: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((raw) => {
      const value = choices[raw.trim().toLowerCase()]
      return value === undefined ? Either.left(ConfigError.InvalidData([], `must be ${allowed}`)) : Either.right(value)
    })
  )

export interface LogConfig {
  /** `warning` and above drop the per-request lines (and their bookkeeping). */
  readonly level: LogLevel.LogLevel
  readonly format: "logfmt" | "json"
}

export const logConfig: Config.Config<LogConfig> = Config.all({
  level: oneOf("LOG_LEVEL", logLevels, "debug, info, warning, error or none").pipe(Config.withDefault(LogLevel.Info)),
  format: oneOf("LOG_FORMAT", { logfmt: "logfmt", json: "json" } as const, "logfmt or json").pipe(
    Config.withDefault<"logfmt" | "json">("logfmt")
  )
})

export interface Sampler {
  /** A span whose parent came with the request (`traceparent`) follows the caller's decision. */
  readonly parentBased: boolean
  /** Share of new traces kept, 0 to 1. */
  readonly ratio: number
}

export interface TracingConfig {
  /** Where spans are sent (OTLP/HTTP); none: no exporter and no per-request tracing. */
  readonly url: Option.Option<string>
  readonly protocol: "http/protobuf" | "http/json"
  readonly headers: Redacted.Redacted<Record<string, string>>
  readonly sampler: Sampler
  /** How often the batch of ended spans is sent. */
  readonly exportInterval: Duration.Duration
  readonly serviceName: string
}

const samplers: Record<string, (ratio: number) => Sampler> = {
  always_on: () => ({ parentBased: false, ratio: 1 }),
  always_off: () => ({ parentBased: false, ratio: 0 }),
  traceidratio: (ratio) => ({ parentBased: false, ratio }),
  parentbased_always_on: () => ({ parentBased: true, ratio: 1 }),
  parentbased_always_off: () => ({ parentBased: true, ratio: 0 }),
  parentbased_traceidratio: (ratio) => ({ parentBased: true, ratio })
}

/** `key=value,key2=value2`, values percent-decoded (the OTel format of OTEL_EXPORTER_OTLP_HEADERS). */
const headerList = (raw: string): Either.Either<Record<string, string>, string> => {
  const headers: Record<string, string> = {}
  for (const item of raw.split(",")) {
    if (item.trim() === "") continue
    const at = item.indexOf("=")
    const name = item.slice(0, at).trim()
    if (at <= 0 || !/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) return Either.left("must be name=value pairs separated by commas")
    try {
      headers[name.toLowerCase()] = decodeURIComponent(item.slice(at + 1).trim())
    } catch {
      return Either.left("has a value that is not percent-encoded text")
    }
  }
  return Either.right(headers)
}

const headersConfig = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((raw) => headerList(raw).pipe(Either.mapLeft((message) => ConfigError.InvalidData([], message)))),
    Config.withDefault({})
  )

const urlConfig = (name: string) =>
  Config.string(name).pipe(
    Config.validate({
      message: "must be an http(s):// URL",
      validation: (raw) => {
        try {
          return ["http:", "https:"].includes(new URL(raw).protocol)
        } catch {
          return false
        }
      }
    }),
    Config.option
  )

/** The standard OpenTelemetry variables, as far as traces over OTLP/HTTP go. */
export const tracingConfig: Config.Config<TracingConfig> = Config.all({
  base: urlConfig("OTEL_EXPORTER_OTLP_ENDPOINT"),
  traces: urlConfig("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
  disabled: Config.boolean("OTEL_SDK_DISABLED").pipe(Config.withDefault(false)),
  exporter: oneOf("OTEL_TRACES_EXPORTER", { otlp: "otlp", none: "none" } as const, "otlp or none").pipe(
    Config.withDefault<"otlp" | "none">("otlp")
  ),
  protocol: oneOf("OTEL_EXPORTER_OTLP_PROTOCOL", { "http/protobuf": "http/protobuf", "http/json": "http/json" } as const, "http/protobuf or http/json").pipe(
    Config.withDefault<"http/protobuf" | "http/json">("http/protobuf")
  ),
  headers: headersConfig("OTEL_EXPORTER_OTLP_HEADERS"),
  traceHeaders: headersConfig("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
  sampler: oneOf("OTEL_TRACES_SAMPLER", samplers, Object.keys(samplers).join(", ")).pipe(
    Config.withDefault(samplers.parentbased_always_on!)
  ),
  ratio: Config.number("OTEL_TRACES_SAMPLER_ARG").pipe(
    Config.validate({ message: "must be a number from 0 to 1", validation: (n) => n >= 0 && n <= 1 }),
    Config.withDefault(1)
  ),
  exportInterval: millis("OTEL_BSP_SCHEDULE_DELAY", 10, 600_000, 5_000),
  serviceName: serviceNameConfig
}).pipe(
  Config.map((raw) => ({
    // The traces endpoint is used as it is; the general one gets the signal's path (the OTel rule).
    url: raw.disabled || raw.exporter === "none"
      ? Option.none()
      : Option.orElse(raw.traces, () => Option.map(raw.base, (base) => `${base.replace(/\/+$/, "")}/v1/traces`)),
    protocol: raw.protocol,
    headers: Redacted.make({ ...raw.headers, ...raw.traceHeaders }),
    sampler: raw.sampler(raw.ratio),
    exportInterval: raw.exportInterval,
    serviceName: raw.serviceName
  }))
)
