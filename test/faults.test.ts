import { HttpClient, HttpClientRequest } from "@effect/platform"
import { expect, it } from "@effect/vitest"
import { Duration, Effect, FastCheck, Redacted, Schema } from "effect"
import { mkdirSync, readFileSync, watch } from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { afterAll, beforeAll } from "vitest"
import { insertDemoRows } from "../src/Bootstrap.ts"
import { ClickHouse, layer as clickHouseLayer } from "../src/ClickHouse/ClickHouse.ts"
import { defaultHttpConfig, qualifiedName, type TableConfig } from "../src/Config.ts"
import { startServer, removeServer } from "./support/clickhouse-server.ts"
import { freePort, startService } from "./support/process.ts"
import { config, describeReal, getJson, hasRealServer, quietLogs, remoteBackend, stack, uniqueTable } from "./support/layers.ts"
import { type Fault, faults, type Proxy, startProxy } from "../scripts/support/proxy.ts"
import { resetTo } from "./support/suites.ts"

// A real server of this file's own (it is killed and restarted), behind the fault-injecting proxy.
const dir = Path.resolve(import.meta.dirname, `../.clickhouse/test-faults-${process.pid}`)
let url = ""
let proxy: Proxy
const endless: TableConfig = { database: `endless_${process.pid}`, table: "metrics" }
beforeAll(async () => {
  if (!hasRealServer) return
  url = await startServer({ dir, fresh: true })
  proxy = await startProxy(url, { seed: 7, latencyMs: 200 })
  // sum(value) over an endless view: only a cancellation that reaches the server stops it.
  await sql(`CREATE DATABASE IF NOT EXISTS ${endless.database}`)
  await sql(
    `CREATE VIEW IF NOT EXISTS ${qualifiedName(endless)} AS ` +
      "SELECT toDateTime(0) AS ts, 'x' AS metric_name, toFloat64(number) AS value FROM system.numbers"
  )
})
afterAll(async () => {
  await proxy?.close()
  if (url !== "") await removeServer(dir)
})

const sql = (text: string) =>
  fetch(`${url}/?query=${encodeURIComponent(text)}`, { method: "POST" }).then(async (r) => {
    const body = await r.text()
    if (!r.ok) throw new Error(body)
    return body
  })

const throughProxy = (table: TableConfig, options = defaultHttpConfig) =>
  stack(
    config(remoteBackend(proxy.url), { poolSize: 4, hedgeAfter: Duration.millis(300), queryTimeout: Duration.seconds(3) }),
    table,
    options
  )

/** What a caller may see while ClickHouse misbehaves: the exact total, or an honest 503/504. */
const expectHonest = (answers: ReadonlyArray<{ status: number; json: unknown }>, total: number) => {
  for (const answer of answers) {
    expect([200, 503, 504]).toContain(answer.status)
    if (answer.status === 200) expect(answer.json).toEqual({ total })
    else expect(answer.json).toMatchObject({ error: { code: expect.any(String) } })
  }
}

describeReal("faults between the API and ClickHouse", () => {
  const table = uniqueTable("faults")

  it.live("each proxy fault on its own is absorbed: 200 with the exact total", () =>
    Effect.gen(function*() {
      yield* resetTo(table, [])
      yield* insertDemoRows(table)
      for (const fault of faults) {
        proxy.next(fault as Fault)
        const answer = yield* getJson("/api/metrics")
        expect({ fault, status: answer.status, json: answer.json }).toEqual({ fault, status: 200, json: { total: 458 } })
      }
    }).pipe(Effect.provide(throughProxy(table))))

  it.live("mixed faults at 30%: every 200 is exact, everything else is 503 or 504 JSON", () =>
    Effect.gen(function*() {
      yield* resetTo(table, [])
      yield* insertDemoRows(table)
      proxy.setFaults({ rate: 0.3, seed: 11, latencyMs: 100, mix: Object.fromEntries(faults.map((f) => [f, 1])) })
      const answers = yield* Effect.all(
        Array.from({ length: 300 }, (_, i) => Effect.delay(getJson("/api/metrics"), Duration.millis(i * 5))),
        { concurrency: "unbounded" }
      ).pipe(Effect.ensuring(Effect.sync(() => proxy.clear())))
      expectHonest(answers, 458)
      expect(answers.filter((a) => a.status === 200).length).toBeGreaterThan(0)
      // Faults gone: the next request is served.
      expect((yield* getJson("/api/metrics")).json).toEqual({ total: 458 })
    }).pipe(Effect.provide(throughProxy(table))))

  it.live("ClickHouse killed and restarted under load: no wrong answer, only 200/503/504, recovery without restarting the API", () =>
    Effect.gen(function*() {
      yield* resetTo(table, [])
      yield* insertDemoRows(table)
      const answers: Array<{ status: number; json: unknown; at: number }> = []
      const started = Date.now()
      const worker = Effect.gen(function*() {
        while (Date.now() - started < 4_000) {
          const answer = yield* getJson("/api/metrics")
          answers.push({ ...answer, at: Date.now() - started })
        }
      })
      const chaos = Effect.gen(function*() {
        yield* Effect.sleep("700 millis")
        const pid = Number(readFileSync(Path.join(dir, "server.pid"), "utf8"))
        process.kill(pid, "SIGKILL")
        yield* Effect.sleep("500 millis")
        yield* Effect.promise(() => startServer({ dir, port: Number(new URL(url).port) }))
        return Date.now() - started
      })
      const [back] = yield* Effect.all([chaos, ...Array.from({ length: 100 }, () => worker)], { concurrency: "unbounded" })
      expect(answers.length).toBeGreaterThan(200)
      expectHonest(answers, 458)
      expect(answers.some((a) => a.status !== 200)).toBe(true)
      // Every request that started a second after the server was back was served.
      const after = answers.filter((a) => a.at > (back as number) + 1_500)
      expect(after.length).toBeGreaterThan(0)
      expect(after.filter((a) => a.status !== 200)).toEqual([])
    }).pipe(Effect.provide(throughProxy(table))))

  it.live("a caller that goes away stops its query on the server", () =>
    Effect.gen(function*() {
      const running = () =>
        sql(`SELECT count() FROM system.processes WHERE query LIKE '%${endless.database}%' AND query NOT LIKE '%processes%'`)
          .then(Number)
      const client = yield* HttpClient.HttpClient
      const gone = yield* client.execute(HttpClientRequest.get("/api/metrics")).pipe(
        Effect.scoped,
        Effect.timeout("700 millis"),
        Effect.either
      )
      expect(gone._tag).toBe("Left")
      let still = yield* Effect.promise(running)
      for (let i = 0; i < 30 && still > 0; i++) {
        yield* Effect.sleep("100 millis")
        still = yield* Effect.promise(running)
      }
      expect(still).toBe(0)
    }).pipe(Effect.provide(stack(config(remoteBackend(url), { queryTimeout: Duration.seconds(30) }), endless))))

  for (const coalesce of [true, false]) {
    it.live(`past the request's deadline: a JSON 504 and its query stops on the server (coalescing ${coalesce ? "on" : "off"})`, () =>
      Effect.gen(function*() {
        const running = () =>
          sql(`SELECT count() FROM system.processes WHERE query LIKE '%${endless.database}%' AND query NOT LIKE '%processes%'`)
            .then(Number)
        const started = Date.now()
        const answer = yield* getJson("/api/metrics")
        const took = Date.now() - started
        expect(answer.status).toBe(504)
        expect(answer.json).toMatchObject({ error: { code: "timeout" } })
        expect(took).toBeGreaterThanOrEqual(500)
        expect(took).toBeLessThan(5_000)
        let still = yield* Effect.promise(running)
        for (let i = 0; i < 30 && still > 0; i++) {
          yield* Effect.sleep("100 millis")
          still = yield* Effect.promise(running)
        }
        expect(still).toBe(0)
      }).pipe(Effect.provide(stack(
        config(remoteBackend(url), { queryTimeout: Duration.seconds(30), coalesce }),
        endless,
        { ...defaultHttpConfig, requestTimeout: Duration.millis(600) }
      ))))
  }

  it.live("an error that the server meets after it started answering is an error, never a partial answer", () =>
    Effect.gen(function*() {
      const ch = yield* ClickHouse
      // Fails at row 900,000 of 1,000,000: after the server has begun streaming rows.
      const result = yield* Effect.either(
        ch.query("SELECT throwIf(number = 900000) AS x FROM numbers(1000000)", Schema.Struct({ x: Schema.Number }))
      )
      expect(result._tag === "Left" && result.left._tag).toBe("ClickHouseQueryError")
    }).pipe(Effect.provide(clickHouseLayer(config(remoteBackend(url)))), Effect.provide(quietLogs)))

  it.live("a read's answer waits for the query's end in the server's memory, not in a temporary file", () =>
    Effect.gen(function*() {
      // The server's files for answers held until the query ends (`tmp_path` of scripts/clickhouse).
      const buffers = Path.join(dir, "tmp", "http_buffers")
      mkdirSync(buffers, { recursive: true })
      const created: Array<string> = []
      const watcher = watch(buffers, (_event, name) => name !== null && created.push(name))
      yield* Effect.addFinalizer(() => Effect.sync(() => watcher.close()))
      const settle = Effect.sleep("300 millis")
      // The watcher sees them: a plain HTTP read held to its end without a buffer makes one.
      yield* Effect.promise(() => fetch(`${url}/?query=SELECT%201&wait_end_of_query=1`).then((r) => r.text()))
      yield* settle
      expect(created.length).toBeGreaterThan(0)
      created.length = 0
      const ch = yield* ClickHouse
      const reads = Array.from({ length: 20 }, (_, i) =>
        ch.query(`SELECT toFloat64(sum(number)) + ${i} AS x FROM numbers(1000)`, Schema.Struct({ x: Schema.Number })))
      expect((yield* Effect.all(reads, { concurrency: 4 })).map((rows) => rows[0]?.x)).toEqual(
        Array.from({ length: 20 }, (_, i) => 499500 + i)
      )
      yield* settle
      expect(created).toEqual([])
    }).pipe(Effect.scoped, Effect.provide(clickHouseLayer(config(remoteBackend(url)))), Effect.provide(quietLogs)))

  it.live("a read runs read-only on the server", () =>
    Effect.gen(function*() {
      const ch = yield* ClickHouse
      const db = `readonly_${process.pid}`
      yield* Effect.promise(() => sql(`CREATE DATABASE IF NOT EXISTS ${db}`))
      const write = yield* Effect.either(ch.query(`CREATE TABLE ${db}.t (a UInt8) ENGINE = Memory`, Schema.Struct({})))
      expect(write._tag === "Left" && write.left._tag).toBe("ClickHouseQueryError")
      expect((yield* Effect.promise(() => sql(`EXISTS TABLE ${db}.t`))).trim()).toBe("0")
    }).pipe(Effect.provide(clickHouseLayer(config(remoteBackend(url)))), Effect.provide(quietLogs)))
})


const methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] as const

const pathArb = FastCheck.oneof(
  FastCheck.constantFrom(
    "/api/metrics",
    "/healthz",
    "/readyz",
    "/api/metrics/",
    "//api//metrics",
    "/api/../api/metrics",
    "/../../etc/passwd",
    "/api/metrics%00",
    "/api/%zz",
    "/%E0%A4%A",
    "/api/metrics;DROP TABLE analytics.metrics",
    "/" + "a".repeat(4000)
  ),
  FastCheck.string({ maxLength: 60 }).map((s) => "/" + encodeURIComponent(s)),
  FastCheck.webPath()
)

const queryArb = FastCheck.oneof(
  FastCheck.constant(""),
  FastCheck.webQueryParameters().map((q) => "?" + q),
  FastCheck.constantFrom("?total=1' OR '1'='1", "?q=SELECT%20*%20FROM%20system.users", "?a=%", "?%%%=%%", "?x=" + "9".repeat(2000))
)

const headerArb = FastCheck.dictionary(
  FastCheck.stringMatching(/^[a-z][a-z0-9-]{0,20}$/),
  FastCheck.stringMatching(/^[ -~]{0,200}$/),
  { maxKeys: 6 }
)

describeReal("hostile input", () => {
  const table = uniqueTable("hostile")
  const keyed = { ...defaultHttpConfig, apiKeys: [Redacted.make("k".repeat(24))] }

  it.effect.prop(
    "any method, path, query or headers → a JSON answer below 500, never text from the database",
    [FastCheck.constantFrom(...methods), pathArb, queryArb, headerArb, FastCheck.boolean()],
    ([method, path, query, headers, withKey]) =>
      Effect.gen(function*() {
        const client = yield* HttpClient.HttpClient
        const sent = HttpClientRequest.make(method)(path + query).pipe(
          HttpClientRequest.setHeaders(headers),
          HttpClientRequest.setHeader("x-api-key", withKey ? "k".repeat(24) : "nope")
        )
        const answer = yield* client.execute(sent).pipe(
          Effect.flatMap((r) => Effect.map(r.text, (text) => ({ status: r.status, text }))),
          Effect.scoped,
          Effect.option
        )
        // A request the client itself could not build or send says nothing about the server.
        if (answer._tag === "None") return
        expect(answer.value.status).toBeLessThan(500)
        if (method !== "HEAD") expect(() => JSON.parse(answer.value.text)).not.toThrow()
        expect(answer.value.text).not.toMatch(/DB::Exception|Code: \d+/)
      }).pipe(Effect.provide(stack(config(remoteBackend(url)), table, keyed))),
    { fastCheck: { numRuns: 150 } }
  )
})

let servicePort = 0

const rawRequest = (port: number, raw: string) =>
  new Promise<string>((resolve, reject) => {
    const socket = Net.connect(port, "127.0.0.1")
    let text = ""
    socket.on("data", (d) => (text += d))
    socket.on("end", () => resolve(text))
    socket.on("error", (e) => (text === "" ? reject(e) : resolve(text)))
    socket.write(raw)
  })

describeReal("the service process", () => {
  const secret = "s3cret-key-that-must-not-leak"
  const slow: TableConfig = { database: `slow_${process.pid}`, table: "metrics" }
  let service: ReturnType<typeof startService>

  beforeAll(async () => {
    if (!hasRealServer) return
    // Each read takes a second and answers 458.
    await sql(`CREATE DATABASE IF NOT EXISTS ${slow.database}`)
    await sql(
      `CREATE VIEW IF NOT EXISTS ${qualifiedName(slow)} AS ` +
        "SELECT toDateTime(0) AS ts, 'x' AS metric_name, toFloat64(458 + sleep(1)) AS value"
    )
    servicePort = await freePort()
    service = startService({
      PORT: String(servicePort),
      CLICKHOUSE_URL: url,
      CLICKHOUSE_DATABASE: slow.database,
      API_KEYS: `${secret},another-key-0123456789`,
      COALESCE_READS: "false"
    })
    await service.waitFor(/Listening on/)
  })
  afterAll(() => {
    service?.child.kill("SIGKILL")
  })

  it.live("what Node's parser rejects still gets a JSON 4xx", () =>
    Effect.gen(function*() {
      const port = servicePort
      for (const raw of ["GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", `GET /${"a".repeat(20_000)} HTTP/1.1\r\n\r\n`]) {
        const text = yield* Effect.promise(() => rawRequest(port, raw))
        const [head, body] = text.split("\r\n\r\n")
        expect(head).toMatch(/^HTTP\/1\.1 4\d\d /)
        expect(JSON.parse(body!)).toMatchObject({ error: { code: expect.any(String) } })
      }
    }))

  it("graceful shutdown: requests in flight complete, new connections are refused, exit 0, no secret in the logs", async () => {
    const get = () =>
      fetch(`http://127.0.0.1:${servicePort}/api/metrics`, { headers: { authorization: `Bearer ${secret}` } })
        .then(async (r) => ({ status: r.status, json: await r.json() }))
    const inFlight = Array.from({ length: 10 }, get)
    await new Promise((r) => setTimeout(r, 300))
    service.child.kill("SIGTERM")
    await new Promise((r) => setTimeout(r, 200))
    const late = await fetch(`http://127.0.0.1:${servicePort}/healthz`).then(() => "answered", (e) => String(e.cause?.code ?? e))
    expect(late).toBe("ECONNREFUSED")
    expect(await Promise.all(inFlight)).toEqual(Array.from({ length: 10 }, () => ({ status: 200, json: { total: 458 } })))
    expect(await service.exited).toBe(0)
    expect(service.output()).toContain("request")
    expect(service.output()).not.toContain(secret)
  }, 30_000)
})
