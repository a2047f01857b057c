import type { ClickHouseClient } from "@clickhouse/client"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type * as Tracer from "effect/Tracer"
import { type ClickHouseConfig, clickHouseConfig } from "../Config.js"
import {
  type ClickHouseError,
  ClickHouseBadResponse,
  ClickHouseOverloaded,
  ClickHouseTimeout
} from "../Domain/ClickHouseError.js"
import type { StartupError } from "../Domain/StartupError.js"
import * as Instruments from "../Observability/Instruments.js"
import { withSpan } from "../Observability/Span.js"
import * as Backend from "./Backend.js"
import { makeCoalescer } from "./Coalesce.js"
import { makeConnections } from "./Connections.js"
import { within } from "./Deadline.js"
import { makeGate } from "./Gate.js"
import { hedgeRead, makeRetryBudget, retryRead } from "./Retry.js"
import { detect, type ServerInfo } from "./ServerInfo.js"
import * as Sql from "./Sql.js"
import { attempt, type Params, type TryOptions } from "./Try.js"

export type { Target } from "./Backend.js"
export type { ServerInfo } from "./ServerInfo.js"

export interface ClickHouse {
  readonly target: Backend.Target
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
  /** The pool's size, the queries in flight and the callers waiting for a connection. */
  readonly poolState: Effect.Effect<PoolState>
  /** The server's version, once it has been reached. */
  readonly version: Effect.Effect<string | undefined>
}

export interface PoolState {
  readonly size: number
  readonly inUse: number
  readonly waiting: number
}

export type QueryParams = Readonly<Record<string, string | number | boolean | ReadonlyArray<string>>>

/** Same SQL and same parameters, whatever their order: the same read. */
const readKey = (sql: string, params: QueryParams | undefined) =>
  params === undefined
    ? sql
    : `${sql}\u0000${JSON.stringify(Object.keys(params).sort().map((name) => [name, params[name]]))}`

type Decoded = Either.Either<ReadonlyArray<unknown>, ClickHouseBadResponse>
type RowsDecoder = (rows: unknown) => Decoded

/**
 * One compiled decoder per row schema, not one per call; and each answer decoded once, however many callers a
 * coalesced run serves (they all get the same rows).
 */
const rowsDecoders = new WeakMap<Schema.Schema.Any, RowsDecoder>()
const rowsDecoder = <A, I>(schema: Schema.Schema<A, I>): (rows: unknown) => Either.Either<ReadonlyArray<A>, ClickHouseBadResponse> => {
  let decoder = rowsDecoders.get(schema)
  if (decoder === undefined) {
    const decode = Schema.decodeUnknownEither(Schema.Array(schema as Schema.Schema<unknown, unknown>))
    const answers = new WeakMap<object, Decoded>()
    decoder = (rows) => {
      const known = typeof rows === "object" && rows !== null ? answers.get(rows) : undefined
      if (known !== undefined) return known
      const decoded = Either.mapLeft(decode(rows), (cause) => new ClickHouseBadResponse({ cause }))
      if (typeof rows === "object" && rows !== null) answers.set(rows, decoded)
      return decoded
    }
    rowsDecoders.set(schema, decoder)
  }
  return decoder as (rows: unknown) => Either.Either<ReadonlyArray<A>, ClickHouseBadResponse>
}

/** How long the kills of aborted queries gather before they are sent as one statement. */
const killBatchWindow = Duration.millis(50)

export const ClickHouse = Context.GenericTag<ClickHouse>("analytics-api/ClickHouse")

export const make = (config: ClickHouseConfig): Effect.Effect<ClickHouse, StartupError, Scope.Scope> =>
  Effect.gen(function*() {
    const { connect, control, disconnect, target } = yield* Backend.open(config)

    const connections = makeConnections({ open: connect, close: disconnect, idleTtlMs: 30_000 })
    yield* Effect.addFinalizer(() => Effect.promise(connections.closeAll))

    const queryTimeoutMs = Duration.toMillis(config.queryTimeout)
    const timedOut = (cause: string) => () => {
      Instruments.clickHouseErrors("timeout").update(1)
      return new ClickHouseTimeout({ cause })
    }
    const requestExpired: () => ClickHouseError = timedOut("the request passed its deadline")

    // Callers wait here, in order and within bounds, for one of the pool's connections (see Gate.ts).
    const gate = makeGate<ClickHouseError>({
      permits: config.poolSize,
      maxWaiting: config.maxWaiting,
      maxWait: config.poolWait,
      overloaded: (reason) => {
        Instruments.poolRejections(reason).update(1)
        return new ClickHouseOverloaded({ reason: "pool" })
      },
      timedOut: requestExpired,
      onAdmit: (waited) => Instruments.poolWait.update(waited)
    })
    // Both reasons are exposed (at 0) from the start.
    Instruments.poolRejections("queue_full")
    Instruments.poolRejections("wait_exceeded")
    let known: ServerInfo | undefined
    // One detection at a time; callers queue in order (Effect's Semaphore would wake them all on each release).
    const infoLock = makeGate({
      permits: 1,
      maxWaiting: config.maxWaiting,
      maxWait: config.queryTimeout,
      overloaded: () => new ClickHouseOverloaded({ reason: "pool" })
    })

    const detectInfo = detect(control, target, config.queryTimeout)
    const cachedInfo = Effect.suspend(() => (known === undefined ? Effect.fail(undefined) : Effect.succeed(known)))

    // Detected once, at the first successful contact; a failed attempt is retried by the next caller.
    const serverInfo: Effect.Effect<ServerInfo, ClickHouseError> = cachedInfo.pipe(
      Effect.orElse(() =>
        infoLock.withPermit(
          cachedInfo.pipe(
            Effect.orElse(() =>
              detectInfo.pipe(Effect.tap((info) =>
                Effect.sync(() => {
                  known = info
                  Instruments.buildInfo(Instruments.serviceVersion, target.kind, info.version).update(1)
                })
              ))
            )
          )
        )
      )
    )

    // Old servers do not stop a read when its HTTP client goes away: kill it by query_id. The kills of one
    // moment go out as one statement: a thousand callers leaving at once (a load balancer dropping its
    // connections) would otherwise send a thousand KILL QUERYs, each a scan of system.processes, and slow the
    // server down for every caller still there.
    const killOnServer = (info: ServerInfo) =>
      target.kind === "remote" && !info.settings.has("cancel_http_readonly_queries_on_client_close")
    const toKill = new Set<string>()
    const killPending = (): Effect.Effect<void> => {
      const ids = [...toKill].slice(0, 1000)
      for (const id of ids) toKill.delete(id)
      const list = ids.map((id) => `'${id}'`).join(", ")
      return Effect.tryPromise(() => control.command({ query: `KILL QUERY WHERE query_id IN (${list}) ASYNC` })).pipe(
        Effect.timeout(Backend.pingTimeout),
        Effect.ignore,
        Effect.zipRight(Effect.suspend(() => (toKill.size > 0 ? killPending() : Effect.void)))
      )
    }
    const cancelOnServer = (info: ServerInfo, queryId: string) => {
      Instruments.cancelled("abort").update(1)
      if (!killOnServer(info)) return
      Instruments.cancelled("kill_query").update(1)
      toKill.add(queryId)
      if (toKill.size === 1) Effect.runFork(Effect.zipRight(Effect.sleep(killBatchWindow), killPending()))
    }

    /** The try's duration and outcome; a failure counted by its class, which its span gets as `error.type`. */
    const ended = (operation: Instruments.Operation) =>
    (since: number, outcome: ClickHouseError | "ok" | "cancelled", span: Tracer.Span | undefined) => {
      const label = typeof outcome === "string" ? outcome : Instruments.errorClass(outcome._tag)
      Instruments.clickHouseDuration(operation, label).update((performance.now() - since) / 1000)
      if (label === "ok" || label === "cancelled") return
      Instruments.clickHouseErrors(label).update(1)
      span?.attribute("error.type", label)
    }

    const tryOptions = (operation: Instruments.Operation, info: ServerInfo): TryOptions => ({
      gate,
      connections,
      settings: operation === "query" ? info.readSettings : info.writeSettings,
      ended: ended(operation),
      cancelOnServer: (queryId) => cancelOnServer(info, queryId),
      timedOut: timedOut(`${operation} passed its deadline`)
    })

    const trySpan = withSpan("ClickHouse.try")
    const callSpans = {
      query: withSpan("ClickHouse.query"),
      command: withSpan("ClickHouse.command"),
      insert: withSpan("ClickHouse.insert")
    }

    const budget = makeRetryBudget({ ratio: 0.1, perSecond: 5, max: 20 })
    const hedged = hedgeRead(budget, config.hedgeAfter)
    const once = hedgeRead(budget, Duration.zero)
    const retried = retryRead(budget)

    /**
     * Reads are hedged and retried (they are idempotent); writes run once. Either way the whole call, waits and
     * tries included, has one deadline: `CLICKHOUSE_QUERY_TIMEOUT_MS`, or the request's own if that comes first.
     * Each try is traced as `ClickHouse.try`.
     */
    const run = <A>(operation: Instruments.Operation, f: (client: ClickHouseClient, params: Params) => Promise<A>) =>
      Effect.flatMap(serverInfo, (info) => {
        const options = tryOptions(operation, info)
        return Effect.flatMap(within(queryTimeoutMs), (deadline) => {
          let tries = 0
          const next = (hedgeAfterMs: number | undefined) =>
            Effect.suspend(() => attempt(options, ++tries, f, deadline, hedgeAfterMs)).pipe(trySpan)
          return operation === "query" ? retried(hedged(next), deadline) : once(next)
        })
      }).pipe(callSpans[operation])

    const coalescer = yield* makeCoalescer({ coalesce: config.coalesce, ttl: config.cacheTtl })

    const query = <A, I>(sql: string, schema: Schema.Schema<A, I>, queryParams?: QueryParams) =>
      coalescer.run(
        readKey(sql, queryParams),
        run("query", (client, params) =>
          Backend.readJson(client, { query: sql, ...params, ...(queryParams ? { query_params: queryParams } : {}) })),
        requestExpired
      ).pipe(
        Effect.flatMap(rowsDecoder(schema))
      )

    const selectWith = <A, I>(info: ServerInfo, statement: Sql.Statement, schema: Schema.Schema<A, I>) => {
      const rendered = Sql.render(statement, info.serverParams)
      return query(rendered.sql, schema, rendered.params)
    }

    // After the first detection, the server's info is read straight from the ref: no effect per call.
    const select = <A, I>(statement: Sql.Statement, schema: Schema.Schema<A, I>) =>
      Effect.suspend(() =>
        known === undefined
          ? Effect.flatMap(serverInfo, (info) => selectWith(info, statement, schema))
          : selectWith(known, statement, schema)
      )

    const command = (sql: string) => run("command", (client, params) => client.command({ query: sql, ...params }))

    const insert = (table: string, rows: ReadonlyArray<Record<string, unknown>>) =>
      run("insert", (client, params) =>
        client.insert({
          table,
          values: rows as Array<Record<string, unknown>>,
          format: "JSONEachRow",
          abort_signal: params.abort_signal,
          query_id: params.query_id
        }))

    const ping = Backend.pingClient(control).pipe(withSpan("ClickHouse.ping"))

    const poolState = () => ({ size: config.poolSize, inUse: gate.inUse(), waiting: gate.waiting() })
    yield* Effect.acquireRelease(Effect.sync(() => Instruments.addPool(poolState)), (remove) => Effect.sync(remove))

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
      inFlight: Effect.sync(gate.inUse),
      poolState: Effect.sync(poolState),
      version: Effect.sync(() => known?.version)
    })
  })

export const layer = (config: ClickHouseConfig): Layer.Layer<ClickHouse, StartupError> =>
  Layer.scoped(ClickHouse, make(config))

export const layerConfig = (
  config: typeof clickHouseConfig = clickHouseConfig
) => Layer.scoped(ClickHouse, Effect.flatMap(config, make))
