import { HttpClient, HttpClientRequest, HttpClientResponse, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Duration, Effect, Layer, Logger, LogLevel, Redacted, Schema } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { describe, inject } from "vitest"
import * as Analytics from "../../src/Analytics.ts"
import { createSchema } from "../../src/Bootstrap.ts"
import * as ClickHouse from "../../src/ClickHouse/ClickHouse.ts"
import { type ClickHouseConfig, defaultHttpConfig, type HttpConfig, type TableConfig } from "../../src/Config.ts"
import { ErrorBody } from "../../src/Domain/ApiError.ts"
import { TotalResponse } from "../../src/Domain/Query.ts"
import { Metrics } from "../../src/Metrics.ts"

export const realServerUrl = inject("clickhouseUrl")
export const hasRealServer = realServerUrl !== ""

export const config = (backend: ClickHouseConfig["backend"], overrides: Partial<ClickHouseConfig> = {}): ClickHouseConfig => ({
  backend,
  username: "default",
  password: Redacted.make(""),
  poolSize: 4,
  poolWait: Duration.seconds(60),
  maxWaiting: 10_000,
  queryTimeout: Duration.seconds(30),
  idleSocketTtl: Duration.seconds(2),
  coalesce: true,
  hedgeAfter: Duration.seconds(1),
  cacheTtl: Duration.zero,
  ...overrides
})

export const embeddedBackend = (): ClickHouseConfig["backend"] => ({
  _tag: "Embedded",
  path: mkdtempSync(Path.join(tmpdir(), "analytics-api-test-"))
})

export const remoteBackend = (...urls: ReadonlyArray<string>): ClickHouseConfig["backend"] => {
  const [first = realServerUrl, ...rest] = urls
  return { _tag: "Remote", urls: [new URL(first), ...rest.map((url) => new URL(url))] }
}

/** A database of its own for each test file, so files can share the real server. */
export const uniqueTable = (prefix: string): TableConfig => ({
  database: `${prefix}_${process.pid}_${Math.floor(Math.random() * 1e6)}`,
  table: "metrics"
})

export const withSchema = (table: TableConfig) =>
  Layer.effectDiscard(createSchema(table))

/** The whole HTTP app, with the service's guards, on a random port, with an HttpClient pointed at it. */
export const httpApp = (table: TableConfig, options: HttpConfig = defaultHttpConfig) =>
  HttpServer.serve(Analytics.app).pipe(
    Layer.provide(Analytics.httpLayer(options)),
    Layer.provide(Metrics.layer(table)),
    Layer.provideMerge(NodeHttpServer.layerTest)
  )

/** Full stack for a test file: ClickHouse (given), the table created, the HTTP app and a client. */
export const stack = (chConfig: ClickHouseConfig, table: TableConfig, options: HttpConfig = defaultHttpConfig) =>
  httpApp(table, options).pipe(
    Layer.provideMerge(withSchema(table)),
    Layer.provideMerge(ClickHouse.layer(chConfig)),
    Layer.provide(quietLogs)
  )

/** Logs stay out of the test output (many tests fail requests on purpose); TEST_LOGS=1 shows them. */
export const quietLogs = Logger.minimumLogLevel(process.env.TEST_LOGS ? LogLevel.Debug : LogLevel.None)

/** Real-server tests: skipped (and reported by the global setup's banner) only outside CI. */
export const describeReal = hasRealServer ? describe : describe.skip

/** Any request; the body is returned as text and, when it parses, as JSON. */
export const request = (method: "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD", path: string) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const response = yield* client.execute(HttpClientRequest.make(method)(path))
    const text = yield* response.text
    let json: unknown = undefined
    try {
      json = JSON.parse(text)
    } catch {
      // not JSON
    }
    return { status: response.status, headers: response.headers, text, json }
  }).pipe(Effect.scoped)

export const getJson = (path: string) => request("GET", path)

export const getTotal = (path = "/api/metrics") =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const response = yield* client.execute(HttpClientRequest.get(path))
    return yield* HttpClientResponse.matchStatus(response, {
      200: (r) => HttpClientResponse.schemaBodyJson(TotalResponse)(r).pipe(Effect.map((b) => b.total)),
      orElse: (r) => r.text.pipe(Effect.flatMap((text) => Effect.fail(new UnexpectedStatus({ status: r.status, text }))))
    })
  }).pipe(Effect.scoped)

export class UnexpectedStatus extends Schema.TaggedError<UnexpectedStatus>()("UnexpectedStatus", {
  status: Schema.Number,
  text: Schema.String
}) {}

export const decodeErrorBody = Schema.decodeUnknown(ErrorBody)

/** Text that must never reach a caller: driver messages, SQL, hosts, stacks. */
export const internals = [/Code:\s*\d+/, /DB::Exception/, /SELECT|FROM|sum\(/i, /127\.0\.0\.1|localhost/, /\bat \S+:\d+/, /Error:/]
