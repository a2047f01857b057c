import { expect, layer } from "@effect/vitest"
import { Duration, Effect, FastCheck, Layer } from "effect"
import { readFileSync } from "node:fs"
import * as Path from "node:path"
import { afterAll, beforeAll } from "vitest"
import type { TableConfig } from "../src/Config.ts"
import { removeServer, startServer, stopServer } from "./support/clickhouse-server.ts"
import { config, describeReal, getJson, hasRealServer, internals, remoteBackend, stack } from "./support/layers.ts"
import * as Model from "./support/model.ts"
import { freePort } from "./support/process.ts"
import { expectDemoAnswers, expectModelAnswers, queryArb, rowsArb, toRequest } from "./support/querySuite.ts"

// Two real servers of this file's own, one shard each with different rows; the API reads a Distributed table
// over both from the first. The second is stopped and restarted, then frozen (SIGSTOP) and thawed.
const dirs = [1, 2].map((n) => Path.resolve(import.meta.dirname, `../.clickhouse/test-distributed-${process.pid}-${n}`))
const cluster = "analytics_shards"
const database = `distributed_${process.pid}`
const local = `${database}.metrics_local`
const table: TableConfig = { database, table: "metrics" }
const distributed = `${database}.${table.table}`
let urls: Array<string> = []
let ports: Array<{ readonly http: number; readonly tcp: number }> = []

/** The same cluster on both servers, so either could take the reads; each finds itself in it by its native port. */
const startShard = (i: number, fresh = false) =>
  startServer({
    dir: dirs[i]!,
    fresh,
    port: ports[i]!.http,
    tcpPort: ports[i]!.tcp,
    cluster: { name: cluster, shards: ports.map((port) => [`127.0.0.1:${port.tcp}`]) }
  })

const sql = (url: string, text: string, body?: string) =>
  fetch(`${url}/?query=${encodeURIComponent(text)}`, { method: "POST", ...(body === undefined ? {} : { body }) }).then(
    async (r) => {
      const answer = await r.text()
      if (!r.ok) throw new Error(answer)
      return answer
    }
  )

const createTables = async (url: string) => {
  await sql(url, `CREATE DATABASE IF NOT EXISTS ${database}`)
  await sql(
    url,
    `CREATE TABLE IF NOT EXISTS ${local} (ts DateTime, metric_name String, value Float64) ENGINE = MergeTree ORDER BY (ts, metric_name)`
  )
  await sql(url, `CREATE TABLE IF NOT EXISTS ${distributed} AS ${local} ENGINE = Distributed(${cluster}, ${database}, metrics_local)`)
}

beforeAll(async () => {
  if (!hasRealServer) return
  const free = new Set<number>()
  while (free.size < 4) free.add(await freePort())
  const [http1, tcp1, http2, tcp2] = [...free]
  ports = [{ http: http1!, tcp: tcp1! }, { http: http2!, tcp: tcp2! }]
  urls = await Promise.all([startShard(0, true), startShard(1, true)])
  await Promise.all(urls.map(createTables))
}, 180_000)
afterAll(async () => {
  await Promise.all(dirs.map((dir) => removeServer(dir).catch(() => undefined)))
})

/** Each shard holds only its own rows: the API must answer over their union. */
const resetShards = (parts: readonly [ReadonlyArray<Model.Row>, ReadonlyArray<Model.Row>]) =>
  Effect.promise(() =>
    Promise.all(parts.map(async (rows, i) => {
      await sql(urls[i]!, `TRUNCATE TABLE ${local}`)
      if (rows.length > 0) {
        await sql(urls[i]!, `INSERT INTO ${local} FORMAT JSONEachRow`, rows.map((row) => JSON.stringify(row)).join("\n"))
      }
    }))
  )

const apiOverDistributed = Layer.suspend(() =>
  stack(config(remoteBackend(urls[0]!), { poolSize: 4, queryTimeout: Duration.seconds(10) }), table)
)

type Query = Parameters<typeof toRequest>[1]

const intervals = [["1h", 3600], ["90m", 5400], ["1d", 86_400]] as const
const aggs = ["sum", "count", "avg", "min", "max", "p50", "p90", "p99"] as const
const start = 1_704_067_200

/** Every endpoint, with and without filters, and every aggregation of the series (percentiles included). */
const battery: ReadonlyArray<Query> = [
  ...(["total", "names", "summary"] as const).flatMap((endpoint) => [
    { endpoint, metrics: [], duplicate: false, from: undefined, span: undefined, spelling: 0, interval: intervals[0], agg: undefined, noFill: false },
    { endpoint, metrics: ["page_views", "it's", "emoji 😀"], duplicate: true, from: start, span: 86_400, spelling: 1, interval: intervals[0], agg: undefined, noFill: false },
    { endpoint, metrics: ["not-in-the-data"], duplicate: false, from: undefined, span: undefined, spelling: 0, interval: intervals[0], agg: undefined, noFill: false }
  ]),
  ...aggs.flatMap((agg) =>
    intervals.flatMap((interval, i) => [
      { endpoint: "series" as const, metrics: [], duplicate: false, from: undefined, span: undefined, spelling: 0, interval, agg, noFill: i % 2 === 0 },
      { endpoint: "series" as const, metrics: ["errors", "a,b"], duplicate: false, from: start - 3600, span: 2 * 86_400, spelling: 2, interval, agg, noFill: false }
    ])
  )
]

const rowArb = rowsArb.filter((rows) => rows.length > 0)
const fixedParts = FastCheck.sample(FastCheck.tuple(rowArb, rowArb), { numRuns: 1, seed: 5 })[0]!
const union = (parts: readonly [ReadonlyArray<Model.Row>, ReadonlyArray<Model.Row>]) => [...parts[0], ...parts[1]]

/** Every answer of the battery equals the model's over the union; percentiles exactly (see the note below). */
const checkBattery = (rows: ReadonlyArray<Model.Row>) => expectModelAnswers(rows, battery)

/** Polls until `f` holds (a restarted shard is back), or fails after `ms`. */
const eventually = <A, E, R>(f: Effect.Effect<A, E, R>, ok: (a: A) => boolean, ms: number) =>
  Effect.gen(function*() {
    const until = Date.now() + ms
    while (true) {
      const a = yield* f
      if (ok(a) || Date.now() > until) return a
      yield* Effect.sleep(Duration.millis(100))
    }
  })

const downPaths = [
  "/api/metrics",
  "/api/metrics?metric=errors&from=2024-01-01T00:00:00Z",
  "/api/metrics/names",
  "/api/metrics/summary",
  "/api/metrics/series?interval=1h",
  "/api/metrics/series?interval=1h&agg=p99&from=2024-01-01T00:00:00Z&to=2024-01-02T00:00:00Z"
]

describeReal("a Distributed table over two 18.16 servers, one shard each", () => {
  if (!hasRealServer) return
  layer(apiOverDistributed, { excludeTestServices: true, timeout: 120_000 })("CLICKHOUSE_TABLE naming the Distributed table", (it) => {
    it.effect("the demo rows split over the shards: the README's answers, over their union", () =>
      Effect.gen(function*() {
        yield* resetShards([Model.demo.slice(0, 4), Model.demo.slice(4)])
        // Each shard alone holds a part: only the union gives 458.
        expect(yield* Effect.promise(() => sql(urls[0]!, `SELECT sum(value) FROM ${local}`))).toBe("452\n")
        expect(yield* Effect.promise(() => sql(urls[1]!, `SELECT sum(value) FROM ${local}`))).toBe("6\n")
        yield* expectDemoAnswers
        expect((yield* getJson("/api/metrics/summary?metric=errors")).json).toEqual({
          metrics: [{ name: "errors", count: 3, sum: 8, avg: 8 / 3, min: 1, max: 5, p50: 2, p90: 5, p99: 5 }]
        })
      }))

    // Percentiles are nearest ranks over arraySort(groupArray(value)) (src/Metrics.ts), not quantile(): each
    // shard sends its whole array, the initiator merges and sorts them, so the answer is exactly the one over a
    // local table holding the union, and is compared exactly.
    it.effect("every endpoint, filter and aggregation (percentiles exactly) equals the model over the union", () =>
      Effect.gen(function*() {
        yield* resetShards(fixedParts)
        yield* checkBattery(union(fixedParts))
      }))

    it.effect.prop(
      "model: random rows on each shard and random queries, every answer equals the model's over the union",
      [FastCheck.tuple(rowsArb, rowsArb), FastCheck.array(queryArb, { minLength: 1, maxLength: 8 })],
      ([parts, queries]) =>
        Effect.gen(function*() {
          yield* resetShards(parts)
          yield* expectModelAnswers(union(parts), queries)
        }),
      { fastCheck: { numRuns: 20 } }
    )

    it.effect("a shard down: every read is a clean 503 \"unavailable\", never a partial total; back up, exact again", () =>
      Effect.gen(function*() {
        yield* resetShards(fixedParts)
        const expected = Model.total(union(fixedParts), { metrics: [] }).total
        const firstOnly = Model.total(fixedParts[0], { metrics: [] }).total
        yield* Effect.promise(() => stopServer(dirs[1]!))

        // What 18.16 itself says: code 279, and with skip_unavailable_shards the partial sum we must never serve.
        const refused = yield* Effect.promise(() => sql(urls[0]!, `SELECT sum(value) FROM ${distributed}`).then(() => "", String))
        expect(refused).toMatch(/Code: 279\b/)
        const partial = yield* Effect.promise(() =>
          sql(urls[0]!, `SELECT sum(value) FROM ${distributed} SETTINGS skip_unavailable_shards = 1`)
        )
        expect(Math.abs(Number(partial) - firstOnly)).toBeLessThanOrEqual(Model.tolerance(fixedParts[0].map((row) => row.value)))

        const answers = yield* Effect.all(
          Array.from({ length: 60 }, (_, i) => Effect.map(getJson(downPaths[i % downPaths.length]!), (answer) => ({ i, answer }))),
          { concurrency: "unbounded" }
        )
        for (const { answer, i } of answers) {
          const path = downPaths[i % downPaths.length]
          expect({ path, status: answer.status, json: answer.json }).toEqual({
            path,
            status: 503,
            json: { error: { code: "unavailable", message: "The analytics database is unavailable." } }
          })
          for (const pattern of internals) expect(answer.text, path).not.toMatch(pattern)
        }
        // The server the service talks to answers: it stays ready; only reads over the missing shard fail.
        expect((yield* getJson("/readyz")).status).toBe(200)

        yield* Effect.promise(() => startShard(1))
        const back = yield* eventually(getJson("/api/metrics"), (answer) => answer.status === 200, 20_000)
        expect(back.status).toBe(200)
        expect(Model.agree(back.json, { total: expected }, Model.tolerance(union(fixedParts).map((row) => row.value)))).toBeUndefined()
        yield* checkBattery(union(fixedParts))
      }))

    it.effect("a shard that hangs: a clean 504 \"timeout\" at the service's deadline, never a partial total", () =>
      Effect.gen(function*() {
        yield* resetShards(fixedParts)
        const pid = Number(readFileSync(Path.join(dirs[1]!, "server.pid"), "utf8"))
        const hung = yield* Effect.acquireRelease(
          Effect.sync(() => process.kill(pid, "SIGSTOP")),
          () => Effect.sync(() => process.kill(pid, "SIGCONT"))
        ).pipe(
          Effect.andThen(getJson("/api/metrics")),
          Effect.provide(stack(config(remoteBackend(urls[0]!), { poolSize: 2, queryTimeout: Duration.seconds(2) }), table)),
          Effect.scoped
        )
        expect({ status: hung.status, json: hung.json }).toEqual({
          status: 504,
          json: { error: { code: "timeout", message: "The query did not finish in time." } }
        })
        const back = yield* eventually(getJson("/api/metrics"), (answer) => answer.status === 200, 20_000)
        expect(Model.agree(back.json, Model.total(union(fixedParts), { metrics: [] }), Model.tolerance(union(fixedParts).map((row) => row.value))))
          .toBeUndefined()
      }))
  })
})
