import { HttpClient, HttpClientRequest } from "@effect/platform"
import { expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Fiber, Ref, Schedule } from "effect"
import { readFileSync } from "node:fs"
import * as Path from "node:path"
import { afterAll, beforeAll } from "vitest"
import { ClickHouse } from "../src/ClickHouse/ClickHouse.ts"
import { demoRows } from "../src/Domain/Metrics.ts"
import { removeServer, startServer, stopServer } from "./support/clickhouse-server.ts"
import { config, describeReal, getJson, hasRealServer, internals, remoteBackend, stack } from "./support/layers.ts"
import { type Proxy, startProxy } from "../scripts/support/proxy.ts"

// Three real servers holding the same rows (replicas), each of this file's own: they are killed and restarted.
const dirs = [1, 2, 3].map((n) => Path.resolve(import.meta.dirname, `../.clickhouse/test-replicas-${process.pid}-${n}`))
let urls: Array<string> = []
let proxy: Proxy
const table = { database: `replicas_${process.pid}`, table: "metrics" }
const writes = `${table.database}.writes`

const sql = (url: string, text: string) =>
  fetch(`${url}/?query=${encodeURIComponent(text)}`, { method: "POST" }).then(async (r) => {
    const body = await r.text()
    if (!r.ok) throw new Error(body)
    return body
  })

const withDemoRows = async (url: string) => {
  await sql(url, `CREATE DATABASE IF NOT EXISTS ${table.database}`)
  await sql(url, `CREATE TABLE IF NOT EXISTS ${table.database}.${table.table} (ts DateTime, metric_name String, value Float64) ENGINE = MergeTree ORDER BY (ts, metric_name)`)
  await sql(url, `TRUNCATE TABLE ${table.database}.${table.table}`)
  // For the writes test, apart from the rows every read sums.
  await sql(url, `CREATE TABLE IF NOT EXISTS ${writes} (ts DateTime, metric_name String, value Float64) ENGINE = MergeTree ORDER BY ts`)
  const values = demoRows.map((row) => `('${row.ts}', '${row.metric_name}', ${row.value})`).join(", ")
  await sql(url, `INSERT INTO ${table.database}.${table.table} VALUES ${values}`)
}

beforeAll(async () => {
  if (!hasRealServer) return
  urls = await Promise.all(dirs.map((dir) => startServer({ dir, fresh: true })))
  await Promise.all(urls.map(withDemoRows))
  proxy = await startProxy(urls[0]!)
}, 180_000)
afterAll(async () => {
  await proxy?.close()
  await Promise.all(dirs.map((dir) => removeServer(dir).catch(() => undefined)))
})

const hedgeAfterMs = 300
const replicated = (backendUrls: ReadonlyArray<string>) =>
  stack(
    config(remoteBackend(...backendUrls), {
      poolSize: 4,
      hedgeAfter: Duration.millis(hedgeAfterMs),
      queryTimeout: Duration.seconds(10)
    }),
    table
  )

interface Answer {
  readonly status: number
  readonly ms: number
  readonly right: boolean
}

/**
 * `callers` closed loops on /api/metrics until `stop` is set: every answer's status, time and whether it is the
 * exact total (a 200 with anything else is wrong; any other status must be an honest JSON error).
 */
const load = (callers: number, stop: Ref.Ref<boolean>) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const answers: Array<Answer> = []
    const one = Effect.gen(function*() {
      const since = performance.now()
      const response = yield* client.execute(HttpClientRequest.get("/api/metrics"))
      const text = yield* response.text
      const ms = performance.now() - since
      if (response.status === 200) {
        answers.push({ status: 200, ms, right: text === "{\"total\":458}" })
      } else {
        for (const internal of internals) expect(text).not.toMatch(internal)
        expect(JSON.parse(text)).toMatchObject({ error: { code: expect.any(String) } })
        answers.push({ status: response.status, ms, right: false })
      }
    }).pipe(Effect.scoped, Effect.catchTag("RequestError", () => Effect.sync(() => answers.push({ status: 0, ms: 0, right: false }))))
    const loop: Effect.Effect<void, unknown> = Effect.flatMap(Ref.get(stop), (done) => (done ? Effect.void : Effect.zipRight(one, loop)))
    yield* Effect.all(Array.from({ length: callers }, () => loop), { concurrency: "unbounded", discard: true })
    return answers
  })

const summary = (answers: ReadonlyArray<Answer>) => {
  const ok = answers.filter((a) => a.status === 200).length
  const wrong = answers.filter((a) => a.status === 200 && !a.right).length
  const sorted = answers.filter((a) => a.status === 200).map((a) => a.ms).sort((a, b) => a - b)
  const p99 = sorted[Math.max(0, Math.ceil(0.99 * sorted.length) - 1)] ?? 0
  return { count: answers.length, ok, wrong, okRatio: ok / Math.max(1, answers.length), p99, max: sorted.at(-1) ?? 0 }
}

/** Polls until `check` is true; the time it first was, or undefined after `ms`. */
const until = (check: () => Promise<boolean>, ms: number, every = 20) =>
  Effect.promise(async () => {
    const deadline = Date.now() + ms
    while (Date.now() < deadline) {
      if (await check().catch(() => false)) return Date.now()
      await new Promise((resolve) => setTimeout(resolve, every))
    }
    return undefined
  })

const pinged = (url: string) => () => fetch(`${url}/ping`).then((r) => r.ok)

const replicaState = (url: string) =>
  Effect.map(getJson("/readyz"), (ready) =>
    (ready.json as { replicas?: ReadonlyArray<{ url: string; state: string }> } | undefined)?.replicas
      ?.find((replica) => replica.url === new URL(url).origin)?.state)

/** How many queries the server has started (its `Query` event), to tell whether reads reach it. */
const queriesStarted = (url: string) =>
  sql(url, "SELECT value FROM system.events WHERE event = 'Query' FORMAT TabSeparated").then((text) => Number(text.trim()))

const killHard = (dir: string) => process.kill(Number(readFileSync(Path.join(dir, "server.pid"), "utf8")), "SIGKILL")

const rowsOf = (url: string, name: string) =>
  sql(url, `SELECT count() FROM ${writes} WHERE metric_name = '${name}' FORMAT TabSeparated`)
    .then((text) => Number(text.trim()))

describeReal("replicas", () => {
  it.live("writes go to the first replica in rotation, once: never retried on another", () =>
    Effect.gen(function*() {
      const ch = yield* ClickHouse
      const row = (name: string) => [{ ts: "2024-01-02 00:00:00", metric_name: name, value: 1 }]
      const counts = (name: string) => Effect.promise(() => Promise.all(urls.map((url) => rowsOf(url, name))))

      // The first replica (behind the proxy) is in rotation: the row lands there, and only there.
      yield* ch.insert(writes, row("write_first"))
      expect(yield* counts("write_first")).toEqual([1, 0, 0])

      // It stops answering as ClickHouse (a proxy's 503 page): the write fails, and is not replayed on the others.
      proxy.setFaults({ rate: 1, mix: { http503: 1 } })
      const failed = yield* Effect.either(ch.insert(writes, row("write_failed")))
      expect(failed._tag).toBe("Left")
      expect(yield* counts("write_failed")).toEqual([0, 0, 0])

      // Three failures took it out of rotation: the next write goes to the second, the first in rotation.
      for (let i = 0; i < 2; i++) yield* Effect.either(ch.insert(writes, row("write_failed")))
      yield* ch.insert(writes, row("write_next"))
      proxy.clear()
      expect(yield* counts("write_next")).toEqual([0, 1, 0])
      expect(yield* counts("write_failed")).toEqual([0, 0, 0])
    }).pipe(Effect.provide(replicated([proxy.url, urls[1]!, urls[2]!]))), 60_000)


  it.live("one of three SIGKILLed and restarted under 500 callers: no wrong answer, ≥ 99.9% 200s, back in rotation within 1 s of answering /ping", () =>
    Effect.gen(function*() {
      const [, second] = urls as [string, string, string]
      const stop = yield* Ref.make(false)
      const running = yield* Effect.fork(load(500, stop))
      yield* Effect.sleep("1 second")

      killHard(dirs[1]!)
      yield* Effect.sleep("1500 millis")
      expect(yield* replicaState(second)).toBe("open")

      const restarted = startServer({ dir: dirs[1]!, port: Number(new URL(second).port) })
      const answering = yield* until(pinged(second), 60_000, 10)
      expect(answering).toBeDefined()
      // Reads reach it again: its count of started queries grows by more than the polls that read it.
      const baseline = yield* Effect.promise(() => queriesStarted(second))
      let polls = 0
      const reached = yield* until(async () => (await queriesStarted(second)) - baseline - ++polls >= 3, 3000)
      yield* Effect.promise(() => restarted)
      expect(reached).toBeDefined()
      expect(reached! - answering!).toBeLessThanOrEqual(1000)

      yield* Effect.sleep("500 millis")
      yield* Ref.set(stop, true)
      const result = summary(yield* Fiber.join(running))
      expect(result.count).toBeGreaterThan(1000)
      expect(result.wrong).toBe(0)
      expect(result.okRatio).toBeGreaterThanOrEqual(0.999)
    }).pipe(Effect.provide(replicated(urls))), 120_000)

  it.live("one replica blackholed (accepts, never answers): p99 within the hedge delay + normal latency + 100 ms, nothing waits for the deadline", () =>
    Effect.gen(function*() {
      // Few callers, so that normal latency is the service's and not the test client's queue.
      const callers = 20
      const stop = yield* Ref.make(false)
      const normal = summary(yield* Effect.zipRight(
        Effect.fork(Effect.zipRight(Effect.sleep("2 seconds"), Ref.set(stop, true))),
        load(callers, stop)
      ))
      expect(normal.wrong).toBe(0)

      yield* Ref.set(stop, false)
      const running = yield* Effect.fork(load(callers, stop))
      yield* Effect.sleep("300 millis")
      proxy.setFaults({ rate: 1, mix: { blackhole: 1 } })
      yield* Effect.sleep("3 seconds")
      expect(yield* replicaState(proxy.url)).not.toBe("closed")
      yield* Ref.set(stop, true)
      const result = summary(yield* Fiber.join(running))
      proxy.clear()

      expect(proxy.stats().blackhole).toBeGreaterThan(0)
      expect(result.wrong).toBe(0)
      expect(result.ok).toBe(result.count)
      expect(result.p99).toBeLessThan(hedgeAfterMs + normal.p99 + 100)
      expect(result.max).toBeLessThan(3000)
    }).pipe(Effect.provide(replicated([proxy.url, urls[1]!, urls[2]!]))), 60_000)

  it.live("every replica down: clean 503s and /readyz 503; one back: 200s again", () =>
    Effect.gen(function*() {
      expect((yield* getJson("/api/metrics")).json).toEqual({ total: 458 })
      yield* Effect.promise(() => Promise.all(dirs.map(stopServer)))

      const down = yield* Effect.all(Array.from({ length: 50 }, () => getJson("/api/metrics")), { concurrency: "unbounded" })
      for (const answer of down) {
        expect(answer.status).toBe(503)
        expect(answer.json).toEqual({ error: { code: "unavailable", message: "The analytics database is unavailable." } })
      }
      const notReady = yield* getJson("/readyz")
      expect(notReady.status).toBe(503)
      for (const internal of internals) expect(notReady.text).not.toMatch(internal)

      const third = urls[2]!
      yield* Effect.promise(() => startServer({ dir: dirs[2]!, port: Number(new URL(third).port) }))
      const back = yield* getJson("/api/metrics").pipe(
        Effect.filterOrFail((answer) => answer.status === 200),
        Effect.retry({ times: 100, schedule: Schedule.spaced("50 millis") }),
        Effect.either
      )
      expect(Either.isRight(back) && back.right.json).toEqual({ total: 458 })
      const ready = yield* getJson("/readyz")
      expect(ready.status).toBe(200)
      const states = (ready.json as { replicas: ReadonlyArray<{ url: string; up: boolean }> }).replicas
      expect(states.map((replica) => replica.up)).toEqual([false, false, true])
      yield* Effect.promise(() => Promise.all(dirs.slice(0, 2).map((dir, i) => startServer({ dir, port: Number(new URL(urls[i]!).port) }))))
    }).pipe(Effect.provide(replicated(urls))), 120_000)
})
