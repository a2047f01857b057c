import type { ClickHouseClient } from "@clickhouse/client"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
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
import { type Breaker, type BreakerState, makeBreaker } from "./Breaker.js"
import { within } from "./Deadline.js"
import { type Gate, makeGate } from "./Gate.js"
import { hedgeRead, makeRetryBudget, retryRead, type Tried } from "./Retry.js"
import { detect, type ServerInfo } from "./ServerInfo.js"
import * as Sql from "./Sql.js"
import { attempt, isRerouted, type Params, replicaFailed, type TryOptions } from "./Try.js"

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
  /** One round trip outside the pool, so readiness stays fast when the pool is saturated: any replica answering. */
  readonly ping: Effect.Effect<void, ClickHouseError>
  /** Each replica, pinged now, with its breaker's state (credentials never appear). */
  readonly replicas: Effect.Effect<ReadonlyArray<ReplicaStatus>>
  readonly serverInfo: Effect.Effect<ServerInfo, ClickHouseError>
  /** Connections currently checked out of the pool (queries in flight). */
  readonly inFlight: Effect.Effect<number>
  /** The pool's size, the queries in flight and the callers waiting for a connection. */
  readonly poolState: Effect.Effect<PoolState>
  /** The server's version, once it has been reached. */
  readonly version: Effect.Effect<string | undefined>
}

export interface ReplicaStatus {
  readonly url: string
  /** It answered a ping just now. */
  readonly up: boolean
  /** In rotation ("closed"), out of it ("open"), or being probed ("half-open"). */
  readonly state: BreakerState
  readonly version?: string
  readonly pool: PoolState
}

export interface PoolState {
  readonly size: number
  readonly inUse: number
  readonly waiting: number
}

export type QueryParams = Readonly<Record<string, string | number | boolean | ReadonlyArray<string>>>

/**
 * What a row schema needs once, not per call: its number, for the read's key (a run's callers share its decoded
 * rows, so they share its schema too), and its compiled decoder.
 */
interface RowSchema {
  readonly id: number
  readonly decode: (rows: unknown) => Either.Either<ReadonlyArray<unknown>, ClickHouseBadResponse>
}
const rowSchemas = new WeakMap<Schema.Schema.Any, RowSchema>()
let rowSchemasSeen = 0
const rowSchema = (schema: Schema.Schema.Any): RowSchema => {
  let known = rowSchemas.get(schema)
  if (known === undefined) {
    const decode = Schema.decodeUnknownEither(Schema.Array(schema as Schema.Schema<unknown, unknown>))
    known = { id: rowSchemasSeen++, decode: (rows) => Either.mapLeft(decode(rows), (cause) => new ClickHouseBadResponse({ cause })) }
    rowSchemas.set(schema, known)
  }
  return known
}

/** Same SQL, same parameters whatever their order, and same row schema: the same read. */
const readKey = (sql: string, params: QueryParams | undefined, schema: Schema.Schema.Any) =>
  `${rowSchema(schema).id}\u0000${sql}${
    params === undefined ? "" : `\u0000${JSON.stringify(Object.keys(params).sort().map((name) => [name, params[name]]))}`
  }`

const rowsDecoder = <A, I>(schema: Schema.Schema<A, I>) =>
  rowSchema(schema).decode as (rows: unknown) => Either.Either<ReadonlyArray<A>, ClickHouseBadResponse>

/** How long the kills of aborted queries gather before they are sent as one statement. */
const killBatchWindow = Duration.millis(50)

export const ClickHouse = Context.GenericTag<ClickHouse>("analytics-api/ClickHouse")

/** Failures in a row that take a replica out of rotation, and the back-off of its pings until it answers. */
const breakerThreshold = 3
const probeBackoff = { baseBackoffMs: 100, maxBackoffMs: 500 }

interface ReplicaState {
  readonly name: string
  readonly control: ClickHouseClient
  readonly gate: Gate<ClickHouseError>
  readonly breaker: Breaker
  /** Detected once, at the first successful contact; a failed attempt is retried by the next caller. */
  readonly serverInfo: Effect.Effect<ServerInfo, ClickHouseError>
  readonly info: () => ServerInfo | undefined
  readonly tryOptions: (operation: Instruments.Operation, info: ServerInfo) => TryOptions
  readonly poolState: () => PoolState
}

export const make = (config: ClickHouseConfig): Effect.Effect<ClickHouse, StartupError, Scope.Scope> =>
  Effect.gen(function*() {
    const { replicas: opened, target } = yield* Backend.open(config)
    // Probes belong to the service, not to the request that tripped a breaker: closing the scope stops them.
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const probes = new Set<Fiber.RuntimeFiber<void, never>>()
    yield* Effect.addFinalizer(() => Effect.suspend(() => Fiber.interruptAll([...probes])))
    const fork = (loop: Effect.Effect<void>) => {
      const fiber = runFork(loop)
      probes.add(fiber)
      fiber.addObserver(() => probes.delete(fiber))
    }

    const queryTimeoutMs = Duration.toMillis(config.queryTimeout)
    const timedOut = (cause: string) => () => {
      Instruments.clickHouseErrors("timeout").update(1)
      return new ClickHouseTimeout({ cause })
    }
    const requestExpired: () => ClickHouseError = timedOut("the request passed its deadline")
    // Both reasons are exposed (at 0) from the start.
    Instruments.poolRejections("queue_full")
    Instruments.poolRejections("wait_exceeded")

    /** The try's duration and outcome; a failure counted by its class, which its span gets as `error.type`. */
    const ended = (operation: Instruments.Operation) =>
    (since: number, outcome: ClickHouseError | "ok" | "cancelled", span: Tracer.Span | undefined) => {
      const label = typeof outcome === "string" ? outcome : Instruments.errorClass(outcome._tag)
      Instruments.clickHouseDuration(operation, label).update((performance.now() - since) / 1000)
      if (label === "ok" || label === "cancelled") return
      Instruments.clickHouseErrors(label).update(1)
      span?.attribute("error.type", label)
    }
    const endedBy = { query: ended("query"), command: ended("command"), insert: ended("insert") }

    /** Every replica's info once detected: values are bound server-side only if all of them can. */
    const infos: Array<ServerInfo> = []
    let bindParams = false

    const makeReplica = (replica: Backend.Replica): ReplicaState => {
      const { control } = replica
      // Callers wait here, in order and within bounds, for one of this replica's pooled sockets (see Gate.ts).
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
      const breaker = makeBreaker({
        threshold: breakerThreshold,
        ...probeBackoff,
        probe: Backend.pingClient(control).pipe(Effect.as(true), Effect.orElseSucceed(() => false)),
        fork,
        onChange: (state) => {
          Instruments.replicaInRotation(replica.name).update(state === "closed" ? 1 : 0)
          Instruments.replicaTransitions(replica.name, state).update(1)
          const message = `ClickHouse replica ${replica.name} is ${state === "closed" ? "back in rotation" : state}`
          runFork(state === "open" ? Effect.logWarning(message) : Effect.logInfo(message))
        }
      })
      const health = (answered: boolean) => (answered ? breaker.succeeded() : breaker.failed())
      Instruments.replicaInRotation(replica.name).update(1)

      let known: ServerInfo | undefined
      // One detection at a time; callers queue in order (Effect's Semaphore would wake them all on each release).
      const infoLock = makeGate({
        permits: 1,
        maxWaiting: config.maxWaiting,
        maxWait: config.queryTimeout,
        overloaded: () => new ClickHouseOverloaded({ reason: "pool" })
      })
      const cachedInfo = Effect.suspend(() => (known === undefined ? Effect.fail(undefined) : Effect.succeed(known)))
      const serverInfo: Effect.Effect<ServerInfo, ClickHouseError> = cachedInfo.pipe(
        Effect.orElse(() =>
          infoLock.withPermit(
            cachedInfo.pipe(
              Effect.orElse(() =>
                detect(control, target, config.queryTimeout, replica.name).pipe(
                  Effect.tap((info) =>
                    Effect.sync(() => {
                      known = info
                      infos.push(info)
                      bindParams = infos.every((detected) => detected.serverParams)
                      if (infos.length === 1) {
                        Instruments.buildInfo(Instruments.serviceVersion, target.kind, info.version).update(1)
                      }
                    })
                  ),
                  Effect.tapError((error) => Effect.sync(() => replicaFailed(error) === true && breaker.failed()))
                )
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

      // Built once per operation, after the detection.
      const options = new Map<Instruments.Operation, TryOptions>()
      const tryOptions = (operation: Instruments.Operation, info: ServerInfo): TryOptions => {
        let built = options.get(operation)
        if (built === undefined) {
          built = {
            gate,
            client: replica.pooled,
            settings: operation === "query" ? info.readSettings : info.writeSettings,
            ended: endedBy[operation],
            cancelOnServer: (queryId) => cancelOnServer(info, queryId),
            timedOut: timedOut(`${operation} passed its deadline`),
            health,
            elsewhere: () => breaker.state() !== "closed" && inRotation() > 0
          }
          options.set(operation, built)
        }
        return built
      }

      return {
        name: replica.name,
        control,
        gate,
        breaker,
        serverInfo,
        info: () => known,
        tryOptions,
        poolState: () => ({ size: config.poolSize, inUse: gate.inUse(), waiting: gate.waiting() })
      }
    }

    const replicas = opened.map(makeReplica) as [ReplicaState, ...Array<ReplicaState>]
    const inRotation = () => replicas.reduce((n, replica) => n + Number(replica.breaker.state() === "closed"), 0)
    for (const replica of replicas) {
      yield* Effect.acquireRelease(Effect.sync(() => Instruments.addPool(replica.poolState)), (remove) => Effect.sync(remove))
    }

    /**
     * Where a try goes. Reads: a replica in rotation that this call has not tried yet, the one with the fewest
     * queries in flight or queued (ties taken in turn); failing that one tried already, then one out of rotation
     * (with every replica out, trying beats refusing: a refused connection is a fast 503). Writes: the first replica
     * in rotation, in the order given.
     */
    let turn = 0
    const pick = (tried: ReadonlySet<ReplicaState>, write: boolean): ReplicaState => {
      const count = replicas.length
      if (count === 1) return replicas[0]
      if (write) return replicas.find((replica) => replica.breaker.state() === "closed") ?? replicas[0]
      const from = turn++ % count
      let best = replicas[from]!
      let bestRank = Number.POSITIVE_INFINITY
      let bestLoad = Number.POSITIVE_INFINITY
      for (let i = 0; i < count; i++) {
        const replica = replicas[(from + i) % count]!
        const rank = (replica.breaker.state() === "closed" ? 0 : 2) + (tried.has(replica) ? 1 : 0)
        const load = replica.gate.inUse() + replica.gate.waiting()
        if (rank < bestRank || (rank === bestRank && load < bestLoad)) {
          best = replica
          bestRank = rank
          bestLoad = load
        }
      }
      return best
    }

    /** The first replica's detected info, detecting it on the replicas in turn if none is known yet. */
    const serverInfo: Effect.Effect<ServerInfo, ClickHouseError> = Effect.suspend(() => {
      const first = infos[0]
      if (first !== undefined) return Effect.succeed(first)
      const [head, ...rest] = [...replicas].sort((a, b) => Number(a.breaker.state() !== "closed") - Number(b.breaker.state() !== "closed"))
      return rest.reduce((info, replica) => Effect.orElse(info, () => replica.serverInfo), head!.serverInfo)
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
     * Reads are hedged and retried (they are idempotent), each try on another replica when there is one; writes
     * run once, on one replica. Either way the whole call, waits and tries included, has one deadline:
     * `CLICKHOUSE_QUERY_TIMEOUT_MS`, or the request's own if that comes first. Each try is traced as `ClickHouse.try`.
     */
    const run = <A>(operation: Instruments.Operation, f: (client: ClickHouseClient, params: Params) => Promise<A>) =>
      Effect.flatMap(within(queryTimeoutMs), (deadline) => {
        let tries = 0
        const tried = new Set<ReplicaState>()
        // A try given back unsent (its replica left rotation while it queued) goes to another one, for free.
        const onReplica = (hedgeAfterMs: number | undefined, reroutes: number): Effect.Effect<Tried<A>, ClickHouseError> =>
          Effect.suspend(() => {
            const replica = pick(tried, operation !== "query")
            tried.add(replica)
            const number = ++tries
            const go = (info: ServerInfo) => attempt(replica.tryOptions(operation, info), number, f, deadline, hedgeAfterMs)
            const info = replica.info()
            return info === undefined ? Effect.flatMap(replica.serverInfo, go) : go(info)
          }).pipe(
            trySpan,
            Effect.catchIf((error) => isRerouted(error) && reroutes < replicas.length, () => onReplica(hedgeAfterMs, reroutes + 1))
          )
        const next = (hedgeAfterMs: number | undefined) => onReplica(hedgeAfterMs, 0)
        return operation === "query" ? retried(hedged(next), deadline) : once(next)
      }).pipe(callSpans[operation])

    const coalescer = yield* makeCoalescer({ coalesce: config.coalesce, ttl: config.cacheTtl })

    const query = <A, I>(sql: string, schema: Schema.Schema<A, I>, queryParams?: QueryParams) =>
      // Decoded in the run: its callers share the rows it decoded once.
      coalescer.run(
        readKey(sql, queryParams, schema),
        run("query", (client, params) =>
          Backend.readJson(client, { query: sql, ...params, ...(queryParams ? { query_params: queryParams } : {}) })).pipe(
            Effect.flatMap(rowsDecoder(schema))
          ),
        requestExpired
      )

    // A statement's whole read, built once per statement (and schema, and rendering): one built once, such as the
    // grand total, costs no effect construction per call.
    const reads = new WeakMap<Sql.Statement, { schema: unknown; bindParams: boolean; read: Effect.Effect<any, ClickHouseError> }>()
    const selectWith = <A, I>(statement: Sql.Statement, schema: Schema.Schema<A, I>): Effect.Effect<ReadonlyArray<A>, ClickHouseError> => {
      const built = reads.get(statement)
      if (built !== undefined && built.schema === schema && built.bindParams === bindParams) return built.read
      const rendered = Sql.render(statement, bindParams)
      const read = query(rendered.sql, schema, rendered.params)
      reads.set(statement, { schema, bindParams, read })
      return read
    }

    // After the first detection, no effect per call to know how to render.
    const select = <A, I>(statement: Sql.Statement, schema: Schema.Schema<A, I>) =>
      Effect.suspend(() =>
        infos.length === 0
          ? Effect.flatMap(serverInfo, () => selectWith(statement, schema))
          : selectWith(statement, schema)
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

    const pingReplica = (replica: ReplicaState) => Backend.pingClient(replica.control).pipe(withSpan("ClickHouse.ping"))
    // Any replica answering will do.
    const ping = Effect.raceAll(replicas.map(pingReplica))

    const replicaStatus = (replica: ReplicaState): Effect.Effect<ReplicaStatus> =>
      Effect.map(Effect.either(pingReplica(replica)), (pinged) => {
        const version = replica.info()?.version
        return {
          url: replica.name,
          up: pinged._tag === "Right",
          state: replica.breaker.state(),
          ...(version === undefined ? {} : { version }),
          pool: replica.poolState()
        }
      })

    const poolState = (): PoolState =>
      replicas.reduce(
        (sum, replica) => {
          const state = replica.poolState()
          return { size: sum.size + state.size, inUse: sum.inUse + state.inUse, waiting: sum.waiting + state.waiting }
        },
        { size: 0, inUse: 0, waiting: 0 }
      )

    // A replica down at startup starts out of rotation; the others are detected now.
    const reachable = yield* Effect.forEach(replicas, (replica) =>
      Effect.either(pingReplica(replica)).pipe(Effect.map((pinged) => {
        if (pinged._tag === "Left") replica.breaker.trip()
        return pinged._tag === "Right"
      })), { concurrency: "unbounded" })
    if (!reachable.some(Boolean)) {
      yield* Effect.logWarning(`ClickHouse (${target.kind}) is not reachable yet; retrying on every request, /readyz says 503`)
    } else {
      const down = replicas.filter((_, i) => !reachable[i]).map((replica) => replica.name)
      if (down.length > 0) yield* Effect.logWarning(`ClickHouse replicas not reachable yet: ${down.join(", ")}`)
      yield* Effect.forEach(replicas.filter((_, i) => reachable[i]), (replica) => Effect.ignore(replica.serverInfo), {
        concurrency: "unbounded"
      })
    }

    return ClickHouse.of({
      target,
      query,
      select,
      command: (sql) => Effect.asVoid(command(sql)),
      insert: (table, rows) => Effect.asVoid(insert(table, rows)),
      ping,
      replicas: Effect.forEach(replicas, replicaStatus, { concurrency: "unbounded" }),
      serverInfo,
      inFlight: Effect.sync(() => poolState().inUse),
      poolState: Effect.sync(poolState),
      version: Effect.sync(() => infos[0]?.version)
    })
  })

export const layer = (config: ClickHouseConfig): Layer.Layer<ClickHouse, StartupError> =>
  Layer.scoped(ClickHouse, make(config))

export const layerConfig = (
  config: typeof clickHouseConfig = clickHouseConfig
) => Layer.scoped(ClickHouse, Effect.flatMap(config, make))
