import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { demoRows } from "../src/Domain/Metrics.ts"
import { nextDelayMs, restartPolicy } from "../src/Workers.ts"
import { describeReal, hasRealServer, realServerUrl } from "./support/layers.ts"
import { freePort, linesOf, run, type Running, startService } from "./support/process.ts"

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const sql = async (text: string) => {
  const response = await fetch(`${realServerUrl}/?query=${encodeURIComponent(text)}`, { method: "POST" })
  if (!response.ok) throw new Error(`${text}: ${await response.text()}`)
}

/** The demo table (total 458), and a view of the same total that takes 0.3 s per read. */
const demo = `workers_${process.pid}`
const slow = `workers_slow_${process.pid}`

beforeAll(async () => {
  if (!hasRealServer) return
  await sql(`CREATE DATABASE IF NOT EXISTS ${demo}`)
  await sql(`CREATE TABLE IF NOT EXISTS ${demo}.metrics (ts DateTime, metric_name String, value Float64) ENGINE = MergeTree ORDER BY (ts, metric_name)`)
  await sql(`INSERT INTO ${demo}.metrics VALUES ${demoRows.map((r) => `('${r.ts}', '${r.metric_name}', ${r.value})`).join(", ")}`)
  await sql(`CREATE DATABASE IF NOT EXISTS ${slow}`)
  await sql(`CREATE VIEW IF NOT EXISTS ${slow}.metrics AS SELECT toDateTime(0) AS ts, 'x' AS metric_name, toFloat64(458 + sleep(0.3)) AS value`)
})

afterAll(async () => {
  if (!hasRealServer) return
  await sql(`DROP DATABASE IF EXISTS ${demo}`)
  await sql(`DROP DATABASE IF EXISTS ${slow}`)
})

/** Pids of a process's children, from /proc. */
const childrenOf = (pid: number) => {
  const tasks = `/proc/${pid}/task`
  return readFileSync(`${tasks}/${pid}/children`, "utf8").trim().split(/\s+/).filter((s) => s !== "").map(Number)
}

/** The `key=value` fields of a logfmt line. */
const fieldsOf = (line: string): Record<string, string> =>
  Object.fromEntries([...line.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S*)/g)].map((m) => [m[1]!, m[2]!.replace(/^"|"$/g, "")]))

/**
 * Resolves with the fields of the first line whose message is `message` and whose fields include `fields`; a
 * plain scan of the output, which is large under load.
 */
const waitForLine = async (service: Running, message: string, fields: Record<string, string | number> = {}) => {
  const text = message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
  const candidates = new RegExp(`^.*message=(?:"${text}"|${text})(?: .*)?$`, "gm")
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    for (const [line] of service.output().matchAll(candidates)) {
      const found = fieldsOf(line)
      if (Object.entries(fields).every(([key, value]) => found[key] === String(value))) return found
    }
    if (service.child.exitCode !== null) break
    await sleep(20)
  }
  throw new Error(`no line "${message}" with ${JSON.stringify(fields)}; output:\n${service.output().slice(-3000)}`)
}

/** Two workers on the real server, `CLICKHOUSE_POOL_SIZE × WORKERS` within the suite server's max_concurrent_queries. */
const startWorkers = async (database: string) => {
  const port = await freePort()
  const service = startService({
    WORKERS: "2",
    PORT: String(port),
    CLICKHOUSE_URL: realServerUrl,
    CLICKHOUSE_DATABASE: database,
    CLICKHOUSE_POOL_SIZE: "2"
  })
  const ready = await waitForLine(service, "workers ready", { workers: 2 })
  return { port, service, pids: ready.pids!.split(",").map(Number) }
}

/** The worker that logged each request, by request id. */
const workerByRequest = (output: string) => {
  const answered = new Map<string, number>()
  for (const line of output.split("\n")) {
    if (!line.includes("message=request ")) continue
    const id = /requestId=(\S+)/.exec(line)?.[1]
    const worker = /worker=(\d+)/.exec(line)?.[1]
    if (id !== undefined && worker !== undefined) answered.set(id, Number(worker))
  }
  return answered
}

interface Sent {
  readonly id: string
  readonly socket: number
  /** When the request was made, written, and ended (answered or failed), in performance.now() ms. */
  readonly startedAt: number
  readonly sentAt: number
  readonly endedAt: number
  readonly status?: number
  readonly body?: string
  readonly error?: string
}

const sockets = new WeakMap<Net.Socket, number>()
let nextSocket = 0
let nextRequest = 0

/** One GET; never rejects. */
const get = (port: number, path: string, agent: Http.Agent | false) =>
  new Promise<Sent>((resolve) => {
    const id = `w${process.pid}-${nextRequest++}`
    const startedAt = performance.now()
    let socket = -1
    let sentAt = Number.POSITIVE_INFINITY
    let status: number | undefined
    let body = ""
    const end = (error?: Error) =>
      resolve({
        id,
        socket,
        startedAt,
        sentAt,
        endedAt: performance.now(),
        ...(status === undefined ? {} : { status, body }),
        ...(error === undefined ? {} : { error: (error as NodeJS.ErrnoException).code ?? error.message })
      })
    const request = Http.get({ host: "127.0.0.1", port, path, agent, headers: { "x-request-id": id }, timeout: 20_000 })
    request.on("socket", (s) => {
      if (!sockets.has(s)) sockets.set(s, nextSocket++)
      socket = sockets.get(s)!
    })
    request.on("finish", () => (sentAt = performance.now()))
    request.on("timeout", () => request.destroy(new Error("timeout")))
    request.once("error", end)
    request.once("response", (response) => {
      status = response.statusCode
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.once("error", end)
      response.once("end", () => end())
    })
  })

/** `connections` loops, each on a keep-alive connection of its own (a new one after a failure), until stopped. */
const closedLoop = (port: number, connections: number, path: string, pauseMs = 0) => {
  let running = true
  const sent: Array<Sent> = []
  const loops = Array.from({ length: connections }, async () => {
    const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
    while (running) {
      sent.push(await get(port, path, agent))
      if (pauseMs > 0) await sleep(pauseMs)
    }
    agent.destroy()
  })
  return {
    sent,
    stop: async () => {
      running = false
      await Promise.all(loops)
      return sent
    }
  }
}

const ok = (r: Sent) => r.status === 200 && r.body === "{\"total\":458}"

describe("the restart back-off", () => {
  it("doubles while workers die young, up to its cap, and starts over after one that lived", () => {
    const delays: Array<number> = []
    let delay: number | undefined
    for (let i = 0; i < 8; i++) delays.push((delay = nextDelayMs(delay, 50)))
    expect(delays).toEqual([100, 200, 400, 800, 1600, 3200, 5000, 5000])
    expect(nextDelayMs(5000, restartPolicy.stableAfterMs)).toBe(100)
    expect(nextDelayMs(5000, restartPolicy.stableAfterMs - 1)).toBe(5000)
  })
})

describe("the primary, over a stand-in app", () => {
  it("a worker that keeps dying before it is ready: restarted with a doubling back-off, then the primary gives up, exit 1", async () => {
    const dir = mkdtempSync(Path.join(tmpdir(), "analytics-api-workers-"))
    const flag = Path.join(dir, "fail")
    const service = run(process.execPath, ["--import", "tsx", "test/support/workers-app.ts"], { WORKERS: "2", FAIL_FILE: flag })
    const timer = setTimeout(() => service.child.kill("SIGKILL"), 50_000)
    try {
      const ready = await waitForLine(service, "workers ready", { workers: 2 })
      const [victim, other] = ready.pids!.split(",").map(Number)
      writeFileSync(flag, "")
      process.kill(victim!, "SIGKILL")
      expect(await service.exited).toBe(1)
      const lines = linesOf(service.output())
      const exits = lines.filter((line) => line.includes("message=\"worker exited\"")).map(fieldsOf)
      expect(exits.map((e) => e.restartInMs)).toEqual(["100", "200", "400", "800", "1600", undefined])
      expect(exits[0]).toMatchObject({ pid: String(victim), signal: "SIGKILL" })
      expect(exits.slice(1).every((e) => e.code === "1")).toBe(true)
      expect(lines.filter((line) => line.includes("message=\"worker stopped\"")).map(fieldsOf)).toEqual([
        expect.objectContaining({ pid: String(other), code: "0" })
      ])
      expect(lines.at(-1)).toContain("Startup failed: workers exited before they were ready 5 times in a row")
    } finally {
      clearTimeout(timer)
      service.child.kill("SIGKILL")
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)
})

describe("startup with WORKERS: the primary checks everything first, one line and exit 1", () => {
  const startAndFail = async (env: Record<string, string>) => {
    const dead = await freePort()
    const service = startService({ PORT: String(await freePort()), CLICKHOUSE_URL: `http://127.0.0.1:${dead}`, ...env })
    const timer = setTimeout(() => service.child.kill("SIGKILL"), 30_000)
    const code = await service.exited
    clearTimeout(timer)
    return { code, lines: linesOf(service.output()) }
  }

  it.concurrent.each([
    [{ WORKERS: "0" }, /Invalid configuration.*WORKERS.*from 1 to 256, or auto/],
    [{ WORKERS: "two" }, /Invalid configuration.*WORKERS/],
    [{ WORKERS: "2", CLICKHOUSE_URL: "embedded:/nonexistent/never-created" }, /Invalid configuration.*WORKERS.*CLICKHOUSE_URL.*embedded/],
    [{ WORKERS: "2", CLICKHOUSE_URL: "" }, /Invalid configuration.*WORKERS.*CLICKHOUSE_URL/],
    [{ WORKERS: "2", CLICKHOUSE_POOL_SIZE: "many" }, /Invalid configuration.*CLICKHOUSE_POOL_SIZE/]
  ])("%o", async (env, message) => {
    const { code, lines } = await startAndFail(env)
    expect(code).toBe(1)
    expect(lines).toEqual([expect.stringMatching(message)])
  })

  it("a port in use: the first worker says so, and the primary exits 1 without restarting it or starting others", async () => {
    const holder = Net.createServer().listen(0, "127.0.0.1")
    await new Promise((resolve) => holder.once("listening", resolve))
    try {
      const port = (holder.address() as Net.AddressInfo).port
      const { code, lines } = await startAndFail({ WORKERS: "2", PORT: String(port) })
      expect(code).toBe(1)
      expect(lines.filter((line) => line.includes("level=ERROR"))).toEqual([expect.stringContaining(`PORT ${port} is in use`)])
      expect(lines.join("\n")).not.toMatch(/worker exited|worker restarted|worker=2/)
    } finally {
      holder.close()
    }
  })
})

describeReal("WORKERS against the real server", () => {
  it("WORKERS unset: one process, as before (no children, no worker on the log lines)", async () => {
    const port = await freePort()
    const service = startService({ PORT: String(port), CLICKHOUSE_URL: realServerUrl, CLICKHOUSE_DATABASE: demo })
    try {
      await waitForLine(service, "Listening on http://127.0.0.1:" + port)
      expect(await fetch(`http://127.0.0.1:${port}/api/metrics`).then((r) => r.json())).toEqual({ total: 458 })
      expect(childrenOf(service.child.pid!)).toEqual([])
      expect(service.output()).not.toContain("worker")
    } finally {
      service.child.kill("SIGKILL")
    }
  })

  it("WORKERS=2: both serve; one SIGKILLed under load is restarted, new connections succeed, the other's requests are unaffected", async () => {
    const { port, service, pids } = await startWorkers(demo)
    try {
      expect(childrenOf(service.child.pid!).sort()).toEqual([...pids].sort())

      // Fresh connections are handed to the workers in turn: both answer.
      const fresh = await Promise.all(Array.from({ length: 20 }, () => get(port, "/api/metrics", false)))
      expect(fresh.filter((r) => !ok(r))).toEqual([])
      await sleep(200)
      expect(new Set(fresh.map((r) => workerByRequest(service.output()).get(r.id)))).toEqual(new Set([1, 2]))

      const load = closedLoop(port, 8, "/api/metrics", 10)
      await sleep(1500)
      const victim = pids[0]!
      const killedAt = performance.now()
      process.kill(victim, "SIGKILL")
      const exited = await waitForLine(service, "worker exited", { pid: victim, signal: "SIGKILL", code: "null" })
      const victimId = Number(exited.worker)
      expect(exited.restartInMs).toBe("100")
      const restarted = await waitForLine(service, "worker restarted", { replaces: victimId })
      const [newId, newPid] = [Number(restarted.worker), Number(restarted.pid)]
      await waitForLine(service, "worker ready", { worker: newId, pid: newPid })
      expect(childrenOf(service.child.pid!).sort()).toEqual([pids[1]!, newPid].sort())
      await sleep(1000)

      // New connections after the restart: all answered, some by the new worker.
      const after = await Promise.all(Array.from({ length: 20 }, () => get(port, "/api/metrics", false)))
      const sent = await load.stop()
      await sleep(300)
      const byRequest = workerByRequest(service.output())
      expect(after.filter((r) => !ok(r))).toEqual([])
      expect(after.some((r) => byRequest.get(r.id) === newId)).toBe(true)

      // The load's connections, each with the worker that answered on it.
      const workerOfSocket = new Map<number, number>()
      for (const r of sent) {
        const worker = byRequest.get(r.id)
        if (worker !== undefined) workerOfSocket.set(r.socket, worker)
      }
      const victimSockets = [...workerOfSocket].filter(([, worker]) => worker === victimId).map(([socket]) => socket)
      expect(victimSockets.length).toBeGreaterThan(0)
      const failed = sent.filter((r) => !ok(r))
      // Only requests on the killed worker's connections failed, at most one per connection (the one in flight).
      expect(failed.filter((r) => !victimSockets.includes(r.socket))).toEqual([])
      expect(new Set(failed.map((r) => r.socket)).size).toBe(failed.length)
      expect(failed.every((r) => r.error !== undefined && r.startedAt < killedAt + 50)).toBe(true)
      // The surviving worker kept answering its connections through the kill.
      const survivorAfterKill = sent.filter((r) => r.sentAt > killedAt && byRequest.get(r.id) === (victimId === 1 ? 2 : 1))
      expect(survivorAfterKill.length).toBeGreaterThan(20)
      expect(sent.filter((r) => r.sentAt > killedAt + 50).every(ok)).toBe(true)
    } finally {
      service.child.kill("SIGKILL")
    }
  })

  it("WORKERS=2: SIGTERM under load, every request in flight is answered, the port is closed, exit 0", async () => {
    const { port, service } = await startWorkers(slow)
    try {
      const load = closedLoop(port, 12, "/api/metrics")
      await sleep(1500)
      const termAt = performance.now()
      const stopping = load.stop()
      service.child.kill("SIGTERM")
      await sleep(200)
      const late = await get(port, "/healthz", false)
      const sent = await stopping
      const code = await service.exited
      // Sent well before the signal (a request written in the same millisecond may still be in the socket's buffer).
      const before = sent.filter((r) => r.sentAt < termAt - 20)
      const inFlight = before.filter((r) => r.endedAt > termAt)
      expect(inFlight.length).toBeGreaterThanOrEqual(8)
      expect(before.filter((r) => !ok(r))).toEqual([])
      expect(late.error).toBe("ECONNREFUSED")
      expect(code).toBe(0)
      expect(service.output().match(/message="worker stopped" code=0/g)).toHaveLength(2)
    } finally {
      service.child.kill("SIGKILL")
    }
  })
})

describe("real-server tier", () => {
  it("ran", () => {
    if (!hasRealServer && process.env.CI) throw new Error("the real ClickHouse server is required under CI")
    expect(true).toBe(true)
  })
})
