import { ClickHouseLogLevel, createClient, type ClickHouseClient, type ClickHouseSettings } from "@clickhouse/client"
import { Context, Duration, Effect, Layer, Option, ParseResult, Pool, Redacted, Ref, Schema, Scope } from "effect"
import { randomUUID } from "node:crypto"
import { mkdirSync } from "node:fs"
import { type Backend, type ClickHouseConfig, clickHouseConfig } from "../Config.js"
import {
  type ClickHouseError,
  ClickHouseBadResponse,
  ClickHouseOverloaded,
  ClickHouseTimeout,
  ClickHouseUnavailable
} from "../Domain/ClickHouseError.js"
import { firstLine, StartupError } from "../Domain/StartupError.js"
import { breaksConnection, classify } from "./Classify.js"
import { makeCoalescer } from "./Coalesce.js"
import { makeGate } from "./Gate.js"
import { hedgeRead, makeRetryBudget, retryRead } from "./Retry.js"
import * as Sql from "./Sql.js"

export type Target =
  | { readonly kind: "remote"; readonly url: string }
  | { readonly kind: "embedded"; readonly path: string }

export interface ServerInfo {
  readonly version: string
  /** Whether the server binds `{name:Type}` parameters itself; without them values are sent as escaped literals. */
  readonly serverParams: boolean
  /** The optional settings we would like to send that this server knows; an unknown setting fails every query. */
  readonly settings: ReadonlySet<string>
}

export interface ClickHouse {
  readonly target: Target
  /**
   * Runs a read and decodes every row with `schema`. `params` are bound server-side (`{name:Type}` in the SQL;
   * modern servers and the embedded engine). Identical reads in flight share runs (see Coalesce.ts).
   */
  readonly query: <A, I>(
    sql: string,
    schema: Schema.Schema<A, I>,
    params?: QueryParams
  ) => Effect.Effect<ReadonlyArray<A>, ClickHouseError>
  /** `query` for a statement with values in it: bound server-side where the server can, else as escaped literals. */
  readonly select: <A, I>(statement: Sql.Statement, schema: Schema.Schema<A, I>) => Effect.Effect<ReadonlyArray<A>, ClickHouseError>
  /** Runs a statement that returns no rows (DDL, INSERT ... SELECT). */
  readonly command: (sql: string) => Effect.Effect<void, ClickHouseError>
  /** Inserts rows as JSONEachRow. */
  readonly insert: (
    table: string,
    rows: ReadonlyArray<Record<string, unknown>>
  ) => Effect.Effect<void, ClickHouseError>
  /** One round trip outside the pool, so readiness stays fast when the pool is saturated. */
  readonly ping: Effect.Effect<void, ClickHouseError>
  readonly serverInfo: Effect.Effect<ServerInfo, ClickHouseError>
  /** Connections currently checked out of the pool (queries in flight). */
  readonly inFlight: Effect.Effect<number>
}

export type QueryParams = Readonly<Record<string, string | number | boolean | ReadonlyArray<string>>>

/** Same SQL and same parameters, whatever their order: the same read. */
const readKey = (sql: string, params: QueryParams | undefined) =>
  params === undefined
    ? sql
    : `${sql}\u0000${JSON.stringify(Object.keys(params).sort().map((name) => [name, params[name]]))}`

type RowsDecoder<A> = (rows: unknown) => Effect.Effect<ReadonlyArray<A>, ParseResult.ParseError>

// One compiled decoder per row schema, not one per call.
const rowsDecoders = new WeakMap<Schema.Schema.Any, RowsDecoder<unknown>>()
const rowsDecoder = <A, I>(schema: Schema.Schema<A, I>): RowsDecoder<A> => {
  let decoder = rowsDecoders.get(schema)
  if (decoder === undefined) {
    decoder = Schema.decodeUnknown(Schema.Array(schema as Schema.Schema<unknown, unknown>))
    rowsDecoders.set(schema, decoder)
  }
  return decoder as RowsDecoder<A>
}

export const ClickHouse = Context.GenericTag<ClickHouse>("analytics-api/ClickHouse")

interface Connection {
  readonly client: ClickHouseClient
}

const wantedSettings = ["max_execution_time", "cancel_http_readonly_queries_on_client_close", "wait_end_of_query", "readonly"]

/** The server's own time limit, in whole seconds, below our deadline so the server gives up first. */
export const serverTimeLimit = (deadline: Duration.Duration): number =>
  Math.max(1, Math.floor(Duration.toSeconds(deadline) * 0.9))

const pingTimeout = Duration.seconds(1)

const silentLog = { level: ClickHouseLogLevel.OFF }

const remoteClient = (url: URL, config: ClickHouseConfig, sockets: number): ClickHouseClient => {
  const bare = new URL(url)
  const username = decodeURIComponent(bare.username) || config.username
  const password = decodeURIComponent(bare.password) || Redacted.value(config.password)
  bare.username = ""
  bare.password = ""
  return createClient({
    url: bare,
    username,
    password,
    application: "analytics-api",
    max_open_connections: sockets,
    // Inactivity limit only: the query deadline is enforced with an AbortSignal.
    request_timeout: Duration.toMillis(config.queryTimeout) + 5_000,
    keep_alive: { enabled: true, idle_socket_ttl: Duration.toMillis(config.idleSocketTtl) },
    log: silentLog
  })
}

type ChdbConnectionOption = NonNullable<NonNullable<Parameters<typeof createClient>[0]>["connection"]>

const isMissingModule = (error: unknown) =>
  error instanceof Error && (error as { code?: unknown }).code === "ERR_MODULE_NOT_FOUND" && error.message.includes("chdb")

const embeddedClient = (path: string) =>
  Effect.tryPromise({
    try: async () => {
      mkdirSync(path, { recursive: true })
      const { createChdbConnection } = await import("chdb/connection")
      // chdb implements the client's Connection contract against its own copy of the type declarations.
      const connection = createChdbConnection({ path }) as unknown as ChdbConnectionOption
      return createClient({ connection, log: silentLog })
    },
    catch: (cause) =>
      new StartupError({
        message: isMissingModule(cause)
          ? "The embedded engine needs the optional package chdb, which is not installed: run `npm install chdb`, or set CLICKHOUSE_URL=http://host:8123 to use a ClickHouse server"
          : `The embedded engine could not open ${path}: ${firstLine(cause)}`,
        cause
      })
  })

const closeClient = (client: ClickHouseClient) => Effect.promise(() => client.close().catch(() => undefined))

const pingClient = (client: ClickHouseClient): Effect.Effect<void, ClickHouseError> =>
  Effect.tryPromise({ try: () => client.ping(), catch: classify }).pipe(
    Effect.flatMap((result) =>
      result.success ? Effect.void : Effect.fail(classify((result as { error: unknown }).error))
    ),
    Effect.timeoutFail({ duration: pingTimeout, onTimeout: () => new ClickHouseUnavailable({ cause: "ping timed out" }) })
  )

/** `CLICKHOUSE_URL` unset: the original default if something answers there, else the embedded engine. */
const resolveBackend = (backend: Backend, config: ClickHouseConfig) =>
  Effect.gen(function*() {
    if (backend._tag !== "Auto") return backend
    const probe = remoteClient(backend.url, config, 1)
    const reachable = yield* pingClient(probe).pipe(
      Effect.as(true),
      Effect.orElseSucceed(() => false),
      Effect.ensuring(closeClient(probe))
    )
    if (reachable) {
      yield* Effect.logInfo(`CLICKHOUSE_URL is unset; using the ClickHouse server that answers at ${backend.url.origin}`)
      return { _tag: "Remote", url: backend.url } as const
    }
    yield* Effect.logWarning(
      `No ClickHouse answered at ${backend.url.origin}: using the embedded engine (chDB) with data in ${backend.path}. ` +
        "Set CLICKHOUSE_URL=http://host:8123 to use a server, or CLICKHOUSE_URL=embedded to skip this check."
    )
    return { _tag: "Embedded", path: backend.path } as const
  })

const readJson = async (client: ClickHouseClient, params: Parameters<ClickHouseClient["query"]>[0]) => {
  const result = await client.query({ ...params, format: "JSONEachRow" })
  try {
    return await result.json<unknown>()
  } catch (error) {
    result.close()
    throw error
  }
}

export const make = (config: ClickHouseConfig): Effect.Effect<ClickHouse, StartupError, Scope.Scope> =>
  Effect.gen(function*() {
    const backend = yield* resolveBackend(config.backend, config)
    const target: Target = backend._tag === "Remote"
      ? { kind: "remote", url: backend.url.origin }
      : { kind: "embedded", path: backend.path }

    // The embedded engine is one per process: every pooled item shares its client, the pool still bounds concurrency.
    const shared = backend._tag === "Embedded"
      ? yield* Effect.acquireRelease(embeddedClient(backend.path), closeClient)
      : undefined
    const control = shared ?? (yield* Effect.acquireRelease(
      Effect.sync(() => remoteClient((backend as { url: URL }).url, config, 2)),
      closeClient
    ))

    const acquire: Effect.Effect<Connection, never, Scope.Scope> = shared
      ? Effect.succeed({ client: shared })
      : Effect.acquireRelease(
        Effect.sync(() => ({ client: remoteClient((backend as { url: URL }).url, config, 1) })),
        (connection) => closeClient(connection.client)
      )

    const pool = yield* Pool.makeWithTTL({
      acquire,
      min: 0,
      max: config.poolSize,
      timeToLive: Duration.seconds(30),
      timeToLiveStrategy: "usage"
    })

    // Callers wait here, in order and within bounds, rather than inside Pool (see Gate.ts).
    const gate = makeGate({
      permits: config.poolSize,
      maxWaiting: config.maxWaiting,
      maxWait: config.poolWait,
      overloaded: () => new ClickHouseOverloaded({ reason: "pool" })
    })
    const infoRef = yield* Ref.make(Option.none<ServerInfo>())
    // One detection at a time; callers queue in order (Effect's Semaphore would wake them all on each release).
    const infoLock = makeGate({
      permits: 1,
      maxWaiting: config.maxWaiting,
      maxWait: config.queryTimeout,
      overloaded: () => new ClickHouseOverloaded({ reason: "pool" })
    })

    const detectInfo = Effect.tryPromise({
      try: async () => {
        const [version] = await readJson(control, { query: "SELECT version() AS version" }) as Array<{ version: string }>
        const names = await readJson(control, {
          query: `SELECT name FROM system.settings WHERE name IN (${wantedSettings.map((s) => `'${s}'`).join(", ")})`
        }) as Array<{ name: string }>
        const settings = new Set(names.map((row) => row.name))
        const serverParams = await readJson(control, { query: "SELECT {probe:UInt8} AS probe", query_params: { probe: 1 } })
          .then(() => true, () => false)
        // An HTTP-interface parameter on every server version, a listed setting only on newer ones.
        if (target.kind === "remote") settings.add("wait_end_of_query")
        // The embedded engine refuses even plain reads under readonly; it is in-process, with no other users.
        else settings.delete("readonly")
        return { version: version?.version ?? "unknown", serverParams, settings }
      },
      catch: classify
    }).pipe(
      Effect.timeoutFail({ duration: config.queryTimeout, onTimeout: () => new ClickHouseTimeout({}) }),
      Effect.tap((info) =>
        Effect.logInfo(`ClickHouse ${info.version} (${target.kind}); optional settings: ${[...info.settings].join(", ")}; ` +
            `values bound ${info.serverParams ? "server-side" : "as escaped literals"}`)
      )
    )

    const cachedInfo = Effect.flatten(Ref.get(infoRef))

    // Detected once, at the first successful contact; a failed attempt is retried by the next caller.
    const serverInfo: Effect.Effect<ServerInfo, ClickHouseError> = cachedInfo.pipe(
      Effect.orElse(() =>
        infoLock.withPermit(
          cachedInfo.pipe(
            Effect.orElse(() => detectInfo.pipe(Effect.tap((info) => Ref.set(infoRef, Option.some(info)))))
          )
        )
      )
    )

    // Computed once per server, not per query. Reads also run read-only where the server knows the setting.
    const settingsCache = new WeakMap<ServerInfo, { readonly read: ClickHouseSettings; readonly write: ClickHouseSettings }>()
    const settingsFor = (info: ServerInfo, read: boolean): ClickHouseSettings => {
      let settings = settingsCache.get(info)
      if (settings === undefined) {
        const wanted: ClickHouseSettings = {
          max_execution_time: serverTimeLimit(config.queryTimeout),
          cancel_http_readonly_queries_on_client_close: 1,
          wait_end_of_query: 1
        }
        const write = Object.fromEntries(Object.entries(wanted).filter(([name]) => info.settings.has(name)))
        // readonly=2: no writes or DDL, but settings such as max_execution_time may still be sent.
        settings = { write, read: info.settings.has("readonly") ? { ...write, readonly: "2" } : write }
        settingsCache.set(info, settings)
      }
      return read ? settings.read : settings.write
    }

    // Old servers do not stop a read when its HTTP client goes away: kill it by query_id.
    const cancelOnServer = (info: ServerInfo, queryId: string) =>
      target.kind === "remote" && !info.settings.has("cancel_http_readonly_queries_on_client_close")
        ? Effect.tryPromise(() => control.command({ query: `KILL QUERY WHERE query_id = '${queryId}' ASYNC` })).pipe(
          Effect.timeout(pingTimeout),
          Effect.ignore,
          Effect.forkDaemon,
          Effect.asVoid
        )
        : Effect.void

    type Params = { abort_signal: AbortSignal; query_id: string; clickhouse_settings: ClickHouseSettings }

    /** One try on one pooled connection; a connection that failed in a way that breaks it is replaced. */
    const attempt = <A>(
      read: boolean,
      f: (client: ClickHouseClient, params: Params) => Promise<A>,
      started: Effect.Effect<void> = Effect.void
    ) =>
      Effect.flatMap(serverInfo, (info) =>
        gate.withPermit(
          Effect.gen(function*() {
            const connection = yield* Pool.get(pool)
            yield* started
            const queryId = randomUUID()
            yield* Effect.annotateCurrentSpan("clickhouse.query_id", queryId)
            return yield* Effect.tryPromise({
              try: (signal) =>
                f(connection.client, { abort_signal: signal, query_id: queryId, clickhouse_settings: settingsFor(info, read) }),
              catch: classify
            }).pipe(
              Effect.onInterrupt(() => cancelOnServer(info, queryId)),
              Effect.tapError((error) => breaksConnection(error) ? Pool.invalidate(pool, connection) : Effect.void)
            )
          }).pipe(Effect.scoped)
        ))

    const budget = makeRetryBudget({ ratio: 0.1, perSecond: 5, max: 20 })

    /**
     * Reads are hedged and retried (they are idempotent); writes run once. Either way the whole call,
     * waits and tries included, has one deadline.
     */
    const run = <A>(name: string, read: boolean, f: (client: ClickHouseClient, params: Params) => Promise<A>) =>
      (read
        ? hedgeRead(budget, config.hedgeAfter)((started) => attempt(read, f, started)).pipe(retryRead(budget))
        : attempt(read, f)).pipe(
          Effect.timeoutFail({
            duration: config.queryTimeout,
            onTimeout: () => new ClickHouseTimeout({ cause: `${name} passed its deadline` })
          }),
          Effect.withSpan(`ClickHouse.${name}`)
        )

    const coalescer = yield* makeCoalescer({ coalesce: config.coalesce, ttl: config.cacheTtl })

    const query = <A, I>(sql: string, schema: Schema.Schema<A, I>, queryParams?: QueryParams) =>
      coalescer.run(
        readKey(sql, queryParams),
        run("query", true, (client, params) =>
          readJson(client, { query: sql, ...params, ...(queryParams ? { query_params: queryParams } : {}) }))
      ).pipe(
        Effect.flatMap((rows) =>
          rowsDecoder(schema)(rows).pipe(Effect.mapError((cause) => new ClickHouseBadResponse({ cause })))
        )
      )

    const select = <A, I>(statement: Sql.Statement, schema: Schema.Schema<A, I>) =>
      Effect.flatMap(serverInfo, (info) => {
        const rendered = Sql.render(statement, info.serverParams)
        return query(rendered.sql, schema, rendered.params)
      })

    const command = (sql: string) => run("command", false, (client, params) => client.command({ query: sql, ...params }))

    const insert = (table: string, rows: ReadonlyArray<Record<string, unknown>>) =>
      run("insert", false, (client, params) =>
        client.insert({
          table,
          values: rows as Array<Record<string, unknown>>,
          format: "JSONEachRow",
          abort_signal: params.abort_signal,
          query_id: params.query_id
        }))

    const ping = pingClient(control).pipe(Effect.withSpan("ClickHouse.ping"))

    const reachable = yield* ping.pipe(Effect.either)
    if (reachable._tag === "Left") {
      yield* Effect.logWarning(`ClickHouse (${target.kind}) is not reachable yet; retrying on every request, /readyz says 503`)
    } else {
      yield* serverInfo.pipe(Effect.ignore)
    }

    return ClickHouse.of({
      target,
      query,
      select,
      command: (sql) => Effect.asVoid(command(sql)),
      insert: (table, rows) => Effect.asVoid(insert(table, rows)),
      ping,
      serverInfo,
      inFlight: Effect.sync(gate.inUse)
    })
  })

export const layer = (config: ClickHouseConfig): Layer.Layer<ClickHouse, StartupError> =>
  Layer.scoped(ClickHouse, make(config))

export const layerConfig = (
  config: typeof clickHouseConfig = clickHouseConfig
) => Layer.scoped(ClickHouse, Effect.flatMap(config, make))
