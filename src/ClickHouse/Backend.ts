/**
 * Where the queries go: a ClickHouse server over HTTP, or the embedded engine (chDB) in this process.
 * `open` resolves the backend (probing the default server when `CLICKHOUSE_URL` is unset) and gives the clients.
 */
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from "@clickhouse/client"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import { mkdirSync } from "node:fs"
import type { Backend, ClickHouseConfig } from "../Config.js"
import { type ClickHouseError, ClickHouseUnavailable } from "../Domain/ClickHouseError.js"
import { firstLine, StartupError } from "../Domain/StartupError.js"
import { classify } from "./Classify.js"

export type Target =
  /** `url`: the first replica's origin; `replicas`: every replica's, in order (no credentials). */
  | { readonly kind: "remote"; readonly url: string; readonly replicas: ReadonlyArray<string> }
  | { readonly kind: "embedded"; readonly path: string }

export const pingTimeout = Duration.seconds(1)

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

export const closeClient = (client: ClickHouseClient) => Effect.promise(() => client.close().catch(() => undefined))

export const pingClient = (client: ClickHouseClient): Effect.Effect<void, ClickHouseError> =>
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
      return { _tag: "Remote", urls: [backend.url] } as const
    }
    yield* Effect.logWarning(
      `No ClickHouse answered at ${backend.url.origin}: using the embedded engine (chDB) with data in ${backend.path}. ` +
        "Set CLICKHOUSE_URL=http://host:8123 to use a server, or CLICKHOUSE_URL=embedded to skip this check."
    )
    return { _tag: "Embedded", path: backend.path } as const
  })

/**
 * The rows of a read. As `JSON` (one document, parsed once) rather than `JSONEachRow`: the client reads a row format
 * through a stream pipeline and an async iterator, which cost about a quarter of its CPU per one-row read here
 * (Node's pipeline, for one, builds a `DOMException` each time it finishes). Answers are whole or an error
 * (`wait_end_of_query`), so nothing is lost by parsing them at once; a cut one fails to parse (`SyntaxError`).
 */
export const readJson = async (client: ClickHouseClient, params: Parameters<ClickHouseClient["query"]>[0]) => {
  const result = await client.query<"JSON">({ ...params, format: "JSON" })
  try {
    return (await result.json<unknown>()).data
  } catch (error) {
    result.close()
    throw error
  }
}

/** One server's clients. */
export interface Replica {
  /** Its origin (no credentials), or "embedded". */
  readonly name: string
  /** Outside the pool: pings, server detection, KILL QUERY. */
  readonly control: ClickHouseClient
  /** The pool's client: its sockets are the pool's connections (the embedded engine's one client, shared). */
  readonly pooled: ClickHouseClient
}

export interface Opened {
  readonly target: Target
  /** The replicas in the order given; the embedded engine is one. */
  readonly replicas: readonly [Replica, ...Array<Replica>]
}

/**
 * The pool's connections to a server are the sockets of one client, as many as the gate has permits (so the client
 * never queues a query of its own): Node drops a socket that failed, and the client one idle too long. A client per
 * socket cost about 30 µs more CPU per read than one client with them all.
 */
const remoteReplica = (url: URL, config: ClickHouseConfig) =>
  Effect.gen(function*() {
    const control = yield* Effect.acquireRelease(Effect.sync(() => remoteClient(url, config, 2)), closeClient)
    const pooled = yield* Effect.acquireRelease(Effect.sync(() => remoteClient(url, config, config.poolSize)), closeClient)
    return { name: url.origin, control, pooled } satisfies Replica
  })

/** The clients of the chosen backend, closed with the scope. */
export const open = (config: ClickHouseConfig): Effect.Effect<Opened, StartupError, Scope.Scope> =>
  Effect.gen(function*() {
    const backend = yield* resolveBackend(config.backend, config)
    if (backend._tag === "Embedded") {
      // The engine is one per process: every pooled item shares its client, the pool still bounds concurrency.
      const shared = yield* Effect.acquireRelease(embeddedClient(backend.path), closeClient)
      return {
        target: { kind: "embedded", path: backend.path },
        replicas: [{ name: "embedded", control: shared, pooled: shared }]
      }
    }
    const [first, ...rest] = backend.urls
    const replicas: [Replica, ...Array<Replica>] = [
      yield* remoteReplica(first, config),
      ...(yield* Effect.forEach(rest, (url) => remoteReplica(url, config)))
    ]
    return {
      target: { kind: "remote", url: first.origin, replicas: replicas.map((replica) => replica.name) },
      replicas
    }
  })
