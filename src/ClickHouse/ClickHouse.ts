import type { ClickHouseClient, ClickHouseSettings } from "@clickhouse/client"
import { Context, Duration, Effect, Exit, FiberRef, Layer, ParseResult, Pool, Schema, Scope } from "effect"
import { randomUUID } from "node:crypto"
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
import { breaksConnection, classify } from "./Classify.js"
import { makeCoalescer } from "./Coalesce.js"
import { makeGate, urgent } from "./Gate.js"
import { hedgeRead, makeRetryBudget, retryRead } from "./Retry.js"
import { detect, type ServerInfo } from "./ServerInfo.js"
import * as Sql from "./Sql.js"

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

export const make = (config: ClickHouseConfig): Effect.Effect<ClickHouse, StartupError, Scope.Scope> =>
  Effect.gen(function*() {
    const { connect, control, target } = yield* Backend.open(config)
    const acquire = Effect.map(connect, (client): Connection => ({ client }))

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
      overloaded: (reason) => {
        Instruments.poolRejections(reason).update(1)
        return new ClickHouseOverloaded({ reason: "pool" })
      },
      onAdmit: (waited) => Instruments.poolWait.update(waited),
      waitSpan: "ClickHouse.poolWait"
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

    // Old servers do not stop a read when its HTTP client goes away: kill it by query_id.
    const killOnServer = (info: ServerInfo) =>
      target.kind === "remote" && !info.settings.has("cancel_http_readonly_queries_on_client_close")
    const cancelOnServer = (info: ServerInfo, queryId: string) =>
      Effect.suspend(() => {
        Instruments.cancelled("abort").update(1)
        if (!killOnServer(info)) return Effect.void
        Instruments.cancelled("kill_query").update(1)
        return Effect.tryPromise(() => control.command({ query: `KILL QUERY WHERE query_id = '${queryId}' ASYNC` })).pipe(
          Effect.timeout(Backend.pingTimeout),
          Effect.ignore,
          Effect.forkDaemon,
          Effect.asVoid
        )
      })

    type Params = { abort_signal: AbortSignal; query_id: string; clickhouse_settings: ClickHouseSettings }

    /** The try's duration and outcome; a failure counted by its class, which its span gets as `error.type`. */
    const record = (operation: Instruments.Operation, since: number, exit: Exit.Exit<unknown, ClickHouseError>) =>
      Effect.suspend(() => {
        const outcome = Exit.isSuccess(exit)
          ? "ok"
          : exit.cause._tag === "Fail"
          ? Instruments.errorClass(exit.cause.error._tag)
          : "cancelled"
        Instruments.clickHouseDuration(operation, outcome).update((performance.now() - since) / 1000)
        if (outcome === "ok" || outcome === "cancelled") return Effect.void
        Instruments.clickHouseErrors(outcome).update(1)
        return Effect.annotateCurrentSpan("error.type", outcome)
      })

    /**
     * One try on one pooled connection; a connection that failed in a way that breaks it is replaced.
     * Traced as `ClickHouse.try`: its query_id, its number within the call, and whether it is a retry or a hedge.
     */
    const attempt = <A>(
      operation: Instruments.Operation,
      number: number,
      f: (client: ClickHouseClient, params: Params) => Promise<A>,
      started: Effect.Effect<void> = Effect.void
    ) =>
      Effect.flatMap(serverInfo, (info) =>
        gate.withPermit(
          Effect.gen(function*() {
            const connection = yield* Pool.get(pool)
            yield* started
            const queryId = randomUUID()
            const hedge = yield* FiberRef.get(urgent)
            yield* Effect.annotateCurrentSpan({
              "clickhouse.query_id": queryId,
              "clickhouse.attempt": number,
              "clickhouse.try": number === 1 ? "first" : hedge ? "hedge" : "retry"
            })
            const since = performance.now()
            const settings = operation === "query" ? info.readSettings : info.writeSettings
            return yield* Effect.tryPromise({
              try: (signal) => f(connection.client, { abort_signal: signal, query_id: queryId, clickhouse_settings: settings }),
              catch: classify
            }).pipe(
              Effect.onInterrupt(() => cancelOnServer(info, queryId)),
              Effect.onExit((exit) => record(operation, since, exit)),
              Effect.tapError((error) => breaksConnection(error) ? Pool.invalidate(pool, connection) : Effect.void)
            )
          }).pipe(Effect.scoped)
        )).pipe(withSpan("ClickHouse.try"))

    const budget = makeRetryBudget({ ratio: 0.1, perSecond: 5, max: 20 })

    /**
     * Reads are hedged and retried (they are idempotent); writes run once. Either way the whole call,
     * waits and tries included, has one deadline.
     */
    const run = <A>(operation: Instruments.Operation, f: (client: ClickHouseClient, params: Params) => Promise<A>) =>
      Effect.suspend(() => {
        let tries = 0
        const next = (started?: Effect.Effect<void>) => Effect.suspend(() => attempt(operation, ++tries, f, started))
        return operation === "query" ? hedgeRead(budget, config.hedgeAfter)(next).pipe(retryRead(budget)) : next()
      }).pipe(
        Effect.timeoutFail({
          duration: config.queryTimeout,
          onTimeout: () => {
            Instruments.clickHouseErrors("timeout").update(1)
            return new ClickHouseTimeout({ cause: `${operation} passed its deadline` })
          }
        }),
        withSpan(`ClickHouse.${operation}`)
      )

    const coalescer = yield* makeCoalescer({ coalesce: config.coalesce, ttl: config.cacheTtl })

    const query = <A, I>(sql: string, schema: Schema.Schema<A, I>, queryParams?: QueryParams) =>
      coalescer.run(
        readKey(sql, queryParams),
        run("query", (client, params) =>
          Backend.readJson(client, { query: sql, ...params, ...(queryParams ? { query_params: queryParams } : {}) }))
      ).pipe(
        Effect.flatMap((rows) =>
          rowsDecoder(schema)(rows).pipe(Effect.mapError((cause) => new ClickHouseBadResponse({ cause })))
        )
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
