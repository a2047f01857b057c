import { rmSync } from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import * as Path from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest"
import { startServer, removeServer } from "./support/clickhouse-server.ts"
import { mulberry32, type Proxy, startProxy } from "../scripts/support/proxy.ts"

// A server of this file's own with a short keep-alive, so the stale-socket case is quick to reach.
const dir = Path.resolve(import.meta.dirname, `../.clickhouse/test-proxy-${process.pid}`)
// Node's agent drops an idle socket one second before the server's Keep-Alive hint, so 1 s would disable reuse.
const keepAliveSeconds = 2
const describeReal = inject("clickhouseUrl") !== "" ? describe : describe.skip
/** Node's timers run on a millisecond clock taken at the start of each loop turn. */
const timerSlackMs = 2

interface Outcome {
  readonly status?: number
  readonly body: string
  readonly error?: { readonly code?: string; readonly name: string }
  readonly reusedSocket: boolean
  readonly ms: number
}

/** One GET through node:http; never rejects, so tests can look at what arrived before a failure. */
const get = (url: string, options: { agent?: Http.Agent; signal?: AbortSignal } = {}) =>
  new Promise<Outcome>((resolve) => {
    const started = performance.now()
    let status: number | undefined
    let body = ""
    const request = Http.get(url, { agent: options.agent ?? false, ...(options.signal ? { signal: options.signal } : {}) })
    const done = (error?: NodeJS.ErrnoException) =>
      resolve({
        ...(status !== undefined ? { status } : {}),
        body,
        ...(error ? { error: { name: error.name, ...(error.code !== undefined ? { code: error.code } : {}) } } : {}),
        reusedSocket: request.reusedSocket,
        ms: performance.now() - started
      })
    request.once("error", done)
    request.once("response", (response) => {
      status = response.statusCode
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.once("error", done)
      response.once("end", () => (response.complete ? done() : undefined))
    })
  })

const kind = (outcome: Outcome) => (outcome.error ? `error ${outcome.error.code ?? outcome.error.name}` : String(outcome.status))

describeReal("the fault-injecting proxy", () => {
  let server = ""
  let proxy: Proxy
  const agents: Array<Http.Agent> = []
  const keepAlive = () => {
    const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
    agents.push(agent)
    return agent
  }
  const select1 = () => `${proxy.url}/?query=SELECT%201`

  beforeAll(async () => {
    server = await startServer({ dir, fresh: true, keepAliveTimeout: keepAliveSeconds })
    proxy = await startProxy(server)
  })
  afterEach(() => {
    proxy.clear()
    for (const agent of agents.splice(0)) agent.destroy()
  })
  afterAll(async () => {
    await proxy?.close()
    if (server !== "") await removeServer(dir)
    rmSync(dir, { recursive: true, force: true })
  })

  it("passes requests through untouched without faults", async () => {
    const agent = keepAlive()
    const first = await get(select1(), { agent })
    const second = await get(select1(), { agent })
    expect([first, second].map((o) => [o.status, o.body])).toEqual([[200, "1\n"], [200, "1\n"]])
    expect(second.reusedSocket).toBe(true)
  })

  it("delays the request, the response or both by at least the latency", async () => {
    proxy.setFaults({ rate: 1, mix: { latency: 1 }, latencyMs: 150, jitterMs: 50 })
    const request = await get(select1())
    expect(request).toMatchObject({ status: 200, body: "1\n" })
    expect(request.ms).toBeGreaterThanOrEqual(150 - timerSlackMs)
    proxy.setFaults({ rate: 1, mix: { latency: 1 }, latencyMs: 150, latencyOn: "both" })
    const both = await get(select1())
    expect(both).toMatchObject({ status: 200, body: "1\n" })
    expect(both.ms).toBeGreaterThanOrEqual(300 - timerSlackMs)
  })

  it("refuses a connection with a reset, then serves the next one", async () => {
    const before = proxy.stats().refuse
    proxy.next("refuse")
    expect((await get(select1())).error).toMatchObject({ code: "ECONNRESET" })
    expect(proxy.stats().refuse).toBe(before + 1)
    expect(await get(select1())).toMatchObject({ status: 200, body: "1\n" })
  })

  it("resets the next request on a reused keep-alive connection", async () => {
    const agent = keepAlive()
    expect(await get(select1(), { agent })).toMatchObject({ status: 200, reusedSocket: false })
    proxy.next("reset")
    const broken = await get(select1(), { agent })
    expect(broken).toMatchObject({ reusedSocket: true, error: { code: "ECONNRESET" } })
    expect(broken.status).toBeUndefined()
    expect(await get(select1(), { agent })).toMatchObject({ status: 200, reusedSocket: false })
  })

  it("hides the server's close of a stale socket: no FIN, then a reset on reuse", async () => {
    const socket = Net.connect(Number(new URL(proxy.url).port), "127.0.0.1")
    const seen: Array<string> = []
    let received = ""
    const closed = new Promise((resolve) => socket.once("close", resolve))
    socket.on("data", (chunk) => (received += chunk.toString()))
    socket.on("end", () => seen.push("FIN")).on("error", (error: NodeJS.ErrnoException) => seen.push(error.code ?? ""))
    const request = "GET /?query=SELECT%201 HTTP/1.1\r\nHost: proxy\r\n\r\n"
    proxy.next("reset")
    socket.write(request)
    while (!received.endsWith("0\r\n\r\n")) await new Promise((resolve) => setTimeout(resolve, 10))
    expect(received).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    // A plain connection used at the same time shows the server closing idle ones: its client sees the FIN.
    const control = Net.connect(Number(new URL(proxy.url).port), "127.0.0.1").resume()
    const controlEnded = new Promise((resolve) => control.once("end", resolve))
    control.write(request)
    await new Promise((resolve) => setTimeout(resolve, keepAliveSeconds * 1000 + 500))
    await controlEnded
    control.destroy()
    expect(seen).toEqual([])
    socket.write(request)
    await closed
    expect(seen).toEqual(["ECONNRESET"])
  })

  it("cuts a response midway: headers and part of the body, then the socket closes", async () => {
    const query = `${proxy.url}/?query=${encodeURIComponent("SELECT number FROM system.numbers LIMIT 100000")}`
    const full = await get(query)
    expect(full.status).toBe(200)
    proxy.next("cut")
    const cut = await get(query)
    expect(cut.status).toBe(200)
    expect(cut.error).toMatchObject({ code: "ECONNRESET" })
    expect(cut.body.length).toBeGreaterThan(0)
    expect(cut.body.length).toBeLessThan(full.body.length)
    expect(full.body.startsWith(cut.body)).toBe(true)
  })

  it("blackholes a request until the client's own timeout fires", async () => {
    proxy.next("blackhole")
    const stalled = await get(select1(), { signal: AbortSignal.timeout(300) })
    expect(stalled.error).toMatchObject({ name: "AbortError" })
    expect(stalled.status).toBeUndefined()
    expect(stalled.ms).toBeGreaterThanOrEqual(300 - timerSlackMs)
    expect(await get(select1())).toMatchObject({ status: 200, body: "1\n" })
  })

  it("answers 503 itself and closes the connection", async () => {
    const agent = keepAlive()
    proxy.next("http503")
    const refused = await get(select1(), { agent })
    expect(refused).toMatchObject({ status: 503, body: "Service Unavailable (proxy)\n" })
    expect(refused.error).toBeUndefined()
    expect(await get(select1(), { agent })).toMatchObject({ status: 200, reusedSocket: false })
  })

  it("forces faults in order with next(), 'none' passing one request through", async () => {
    const agent = keepAlive()
    proxy.next("none", "http503", "none")
    const statuses = []
    for (let i = 0; i < 4; i++) statuses.push((await get(select1(), { agent })).status)
    expect(statuses).toEqual([200, 503, 200, 200])
  })

  it("applies a fault at about its rate", async () => {
    proxy.setFaults({ rate: 0.2, mix: { http503: 1 }, seed: 1 })
    const before = proxy.stats()
    const agent = keepAlive()
    const outcomes = []
    for (let i = 0; i < 100; i++) outcomes.push(await get(select1(), { agent }))
    const refused = outcomes.filter((o) => o.status === 503).length
    expect(outcomes.filter((o) => o.status === 200).length).toBe(100 - refused)
    expect(refused).toBe(proxy.stats().http503 - before.http503)
    expect(refused).toBeGreaterThanOrEqual(10)
    expect(refused).toBeLessThanOrEqual(35)
  })

  it("gives the same fault sequence for the same seed", async () => {
    const run = async (seed: number) => {
      proxy.setFaults({ rate: 0.5, latencyMs: 20, seed })
      const start = proxy.history().length
      const agent = keepAlive()
      const outcomes = []
      for (let i = 0; i < 30; i++) outcomes.push(kind(await get(select1(), { agent, signal: AbortSignal.timeout(200) })))
      agent.destroy()
      return { decisions: proxy.history().slice(start), outcomes }
    }
    const first = await run(42)
    const again = await run(42)
    const other = await run(7)
    expect(again).toEqual(first)
    expect(other.decisions).not.toEqual(first.decisions)
    expect(new Set(first.decisions).size).toBeGreaterThanOrEqual(4)
  })

  it("mulberry32 is deterministic and uniform enough", () => {
    const a = mulberry32(42)
    const b = mulberry32(42)
    const draws = Array.from({ length: 10_000 }, () => a())
    expect(Array.from({ length: 10_000 }, () => b())).toEqual(draws)
    expect(draws.every((u) => u >= 0 && u < 1)).toBe(true)
    const mean = draws.reduce((sum, u) => sum + u, 0) / draws.length
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.02)
  })
})
