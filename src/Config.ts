import { Config, ConfigError, Duration, Either, Option, Redacted } from "effect"
import * as Path from "node:path"

export type Backend =
  | { readonly _tag: "Remote"; readonly url: URL }
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
  try {
    const url = new URL(value)
    if (url.protocol === "http:" || url.protocol === "https:") return Either.right({ _tag: "Remote", url })
  } catch {
    // falls through to the message below
  }
  return Either.left("must be an http(s):// URL, 'embedded' or 'embedded:<dir>'")
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

export interface ServerConfig {
  readonly port: number
  readonly host: Option.Option<string>
  /** How long in-flight requests may run on after SIGTERM before their connections are closed. */
  readonly shutdownGrace: Duration.Duration
  /** Each request's deadline: past it the caller gets 504 and the work, down to the ClickHouse query, stops. */
  readonly requestTimeout: Duration.Duration
  /** Empty: no authentication. Otherwise every path but /healthz needs one of these keys. */
  readonly apiKeys: ReadonlyArray<Redacted.Redacted<string>>
}

export const serverConfig: Config.Config<ServerConfig> = Config.all({
  port: Config.port("PORT").pipe(Config.withDefault(3000)),
  host: Config.string("HOST").pipe(Config.option),
  shutdownGrace: millis("SHUTDOWN_GRACE_MS", 0, 600_000, 10_000),
  requestTimeout: millis("REQUEST_TIMEOUT_MS", 100, 600_000, 30_000),
  apiKeys: Config.redacted("API_KEYS").pipe(
    Config.withDefault(Redacted.make("")),
    Config.map((keys) =>
      Redacted.value(keys).split(",").map((key) => key.trim()).filter((key) => key !== "").map((key) => Redacted.make(key))
    ),
    Config.validate({
      message: "each key must be at least 16 characters",
      validation: (keys) => keys.every((key) => Redacted.value(key).length >= 16)
    })
  )
})
