/**
 * The systems under test: how to start one, wait until it is ready without touching the measured path (so
 * that its first burst is cold), and stop it.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { rssMb } from "../support/proc.ts"
import { request } from "./burst.ts"
import { serverPid, totalSql } from "./clickhouse.ts"
import type { Check } from "./load.ts"

export type SystemId = "a" | "b" | "c" | "d" | "e" | "f" | "g" | "h" | "i" | "j"

export interface System {
  readonly id: SystemId
  readonly name: string
  /** The measured path; (a) gets the SQL as its query string instead. */
  readonly path: string
  /** A constant answer, whatever the table: checked against it, not against the table's total. */
  readonly constant?: Check
  /** Reads no table: measured on the first (6-row) table only. */
  readonly firstTableOnly?: boolean
}

export const systems: ReadonlyArray<System> = [
  { id: "a", name: "raw ClickHouse HTTP", path: "/" },
  { id: "b", name: "naive, client per request", path: "/api/metrics" },
  { id: "c", name: "naive, shared client", path: "/api/metrics" },
  { id: "d", name: "node:http constant JSON (Node ceiling)", path: "/api/metrics", constant: { kind: "total", total: 458 } },
  { id: "e", name: "API, COALESCE_READS=false", path: "/api/metrics" },
  { id: "f", name: "API, COALESCE_READS=true", path: "/api/metrics" },
  {
    id: "g",
    name: "bare @effect/platform constant JSON (framework ceiling)",
    path: "/api/metrics",
    constant: { kind: "total", total: 458 }
  },
  { id: "h", name: "minimal platform route + one shared @clickhouse/client", path: "/api/metrics" },
  {
    id: "i",
    name: "API /healthz",
    path: "/healthz",
    constant: { kind: "body", body: "{\"status\":\"ok\"}" },
    firstTableOnly: true
  },
  { id: "j", name: "minimal platform route + one shared client, fresh-read coalesced", path: "/api/metrics" }
]

/** The API's own process (dist/main.js). */
export const isApi = (id: SystemId) => id === "e" || id === "f" || id === "i"

export const checkFor = (system: System, total: number): Check => system.constant ?? { kind: "total", total }

export interface Target {
  readonly clickhouse: string
  readonly table: string
  readonly logDir: string
  readonly poolSize?: number
}

export interface Running {
  /** The measured URL. */
  readonly url: string
  /** Scheme, host and port. */
  readonly origin: string
  /** The process serving the answers (ClickHouse itself for the raw system). */
  readonly pid: number
  /** VmRSS 1 s after it was ready, before any load; null for ClickHouse. */
  readonly idleRssMb: number | null
  /** How the process ended, once it has (killed by something else, or crashed). */
  readonly exited: () => string | undefined
  readonly stop: () => Promise<void>
}

const root = Path.resolve(import.meta.dirname, "../..")
const children = new Set<ChildProcess>()

/** Synchronous, for exit handlers. */
export const killAll = () => {
  for (const child of children) child.kill("SIGKILL")
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = Net.createServer()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const processFor = (system: System, target: Target): { script: string; env: Record<string, string> } => {
  switch (system.id) {
    case "b":
    case "c":
      return {
        script: "scripts/bench/naive-server.mjs",
        env: { NAIVE_CLIENT: system.id === "b" ? "per-request" : "shared" }
      }
    case "d":
      return { script: "scripts/bench/constant-server.mjs", env: {} }
    case "g":
      return { script: "scripts/bench/platform-server.mjs", env: {} }
    case "h":
      return { script: "scripts/bench/platform-client-server.mjs", env: {} }
    case "j":
      return { script: "scripts/bench/platform-coalesced-server.mjs", env: {} }
    default:
      return {
        script: "dist/main.js",
        env: {
          LOG_LEVEL: "Warning",
          ...(system.id === "i" ? {} : { COALESCE_READS: String(system.id === "f") }),
          ...(target.poolSize === undefined ? {} : { CLICKHOUSE_POOL_SIZE: String(target.poolSize) })
        }
      }
  }
}

/**
 * Ready without a request to the measured path: the API once /healthz is 200 (/readyz for (i), whose path is
 * /healthz), ClickHouse once /ping is 200, the others once /ready-probe gets any answer.
 */
const readiness = (system: System): { path: string; needs200: boolean } =>
  system.id === "a"
    ? { path: "/ping", needs200: true }
    : isApi(system.id)
    ? { path: system.id === "i" ? "/readyz" : "/healthz", needs200: true }
    : { path: "/ready-probe", needs200: false }

const waitForExit = (child: ChildProcess, ms: number) =>
  new Promise<boolean>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(true)
    const timer = setTimeout(() => resolve(false), ms)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve(true)
    })
  })

const stopChild = async (child: ChildProcess) => {
  child.kill("SIGTERM")
  if (!(await waitForExit(child, 3000))) {
    child.kill("SIGKILL")
    await waitForExit(child, 3000)
  }
}

const tail = (file: string) => Fs.readFileSync(file, "utf8").split("\n").slice(-15).join("\n")

/** How the process ended, with the end of its log; undefined while it runs. */
const howExited = (child: ChildProcess, log: string) => {
  if (child.exitCode === null && child.signalCode === null) return undefined
  const end = tail(log)
  return `exited (${child.signalCode ?? `code ${child.exitCode}`})` +
    (end.trim() === "" ? ", nothing in its log" : `; last lines of ${log}:\n${end}`)
}

/** Polls (a new connection each time) until the probe is answered as `readiness` says, 30 s at most. */
const waitUntilReady = async (origin: string, system: System, child?: { process: ChildProcess; log: string }) => {
  const { needs200, path } = readiness(system)
  const url = new URL(path, origin)
  const deadline = Date.now() + 30_000
  let last = ""
  while (Date.now() < deadline) {
    const exited = child === undefined ? undefined : howExited(child.process, child.log)
    if (exited !== undefined) throw new ExitedEarly(`before it was ready: ${exited}`)
    const answer = await request(url, 5000)
    if (answer.kind === "answer" && (!needs200 || answer.status === 200)) return
    last = answer.kind === "answer" ? `${answer.status} ${answer.body.slice(0, 200)}` : answer.detail
    await sleep(50)
  }
  throw new Error(`${url} not ready within 30 s (last: ${last})`)
}

class ExitedEarly extends Error {}

/**
 * Starts a fresh process (none for (a)), waits until it is ready, then 1 s more, and reads its idle RSS.
 * A process that exits before it is ready is started once more, 2 s later (dist/ may be being rebuilt).
 */
export const start = (system: System, target: Target): Promise<Running> =>
  startOnce(system, target).catch(async (error: unknown) => {
    if (!(error instanceof ExitedEarly)) throw error
    await sleep(2000)
    return startOnce(system, target)
  })

const startOnce = async (system: System, target: Target): Promise<Running> => {
  if (system.id === "a") {
    await waitUntilReady(target.clickhouse, system)
    const pid = serverPid()
    return {
      url: `${target.clickhouse}/?query=${encodeURIComponent(totalSql(target.table))}`,
      origin: target.clickhouse,
      pid,
      idleRssMb: null,
      exited: () => (Fs.existsSync(`/proc/${pid}`) ? undefined : "ClickHouse exited"),
      stop: async () => {}
    }
  }
  const port = await freePort()
  const { env, script } = processFor(system, target)
  const pool = target.poolSize === undefined ? "" : `-pool${target.poolSize}`
  const log = Path.join(target.logDir, `${system.id}-${target.table}${pool}.log`)
  // Appended: a process started again after its first exited keeps the first one's last lines.
  const fd = Fs.openSync(log, "a")
  const child = spawn(process.execPath, [script], {
    cwd: root,
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      CLICKHOUSE_URL: target.clickhouse,
      CLICKHOUSE_DATABASE: "analytics",
      CLICKHOUSE_TABLE: target.table,
      ...env
    },
    stdio: ["ignore", fd, fd]
  })
  Fs.closeSync(fd)
  children.add(child)
  child.once("exit", () => children.delete(child))
  const origin = `http://127.0.0.1:${port}`
  try {
    await waitUntilReady(origin, system, { process: child, log })
    if (child.pid === undefined) throw new Error("no pid")
  } catch (error) {
    await stopChild(child)
    const text = `(${system.id}) ${system.name}: ${error instanceof Error ? error.message : String(error)}`
    throw error instanceof ExitedEarly ? new ExitedEarly(text) : new Error(text)
  }
  const pid = child.pid
  await sleep(1000)
  return {
    url: `${origin}${system.path}`,
    origin,
    pid,
    idleRssMb: rssMb(pid),
    exited: () => howExited(child, log),
    stop: () => stopChild(child)
  }
}

export { peakRssMb, resetPeakRss } from "../support/proc.ts"
