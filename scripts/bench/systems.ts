/** The systems under test, each answering GET with {"total": n}: how to start one, wait for it, stop it. */
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { serverPid, totalSql } from "./clickhouse.ts"

export type SystemId = "a" | "b" | "c" | "d" | "e" | "f"

export interface System {
  readonly id: SystemId
  readonly name: string
  /** What it answers whatever the table: the constant server, checked against its own constant. */
  readonly constant?: number
}

export const systems: ReadonlyArray<System> = [
  { id: "a", name: "raw ClickHouse HTTP" },
  { id: "b", name: "naive, client per request" },
  { id: "c", name: "naive, shared client" },
  { id: "d", name: "constant JSON (ceiling)", constant: 458 },
  { id: "e", name: "API, COALESCE_READS=false" },
  { id: "f", name: "API, COALESCE_READS=true" }
]

export interface Target {
  readonly clickhouse: string
  readonly table: string
  readonly logDir: string
  readonly poolSize?: number
}

export interface Running {
  readonly url: string
  /** The process serving the answers (ClickHouse itself for the raw system). */
  readonly pid: number
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
    default:
      return {
        script: "dist/main.js",
        env: {
          COALESCE_READS: String(system.id === "f"),
          LOG_LEVEL: "Warning",
          ...(target.poolSize === undefined ? {} : { CLICKHOUSE_POOL_SIZE: String(target.poolSize) })
        }
      }
  }
}

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

/** Polls until the system answers 200 with the right body (30 s at most). */
const waitUntilAnswering = async (
  url: string,
  check: (body: string) => boolean,
  child?: { process: ChildProcess; log: string }
) => {
  const deadline = Date.now() + 30_000
  let last = ""
  while (Date.now() < deadline) {
    if (child && (child.process.exitCode !== null || child.process.signalCode !== null)) {
      throw new Error(`exited before answering; last lines of ${child.log}:\n${tail(child.log)}`)
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(5000) })
      const body = await response.text()
      if (response.status === 200 && check(body)) return
      last = `${response.status} ${body.slice(0, 200)}`
    } catch (error) {
      last = String(error)
    }
    await sleep(100)
  }
  throw new Error(`no right answer from ${url} within 30 s (last: ${last})`)
}

export const start = async (system: System, target: Target, check: (body: string) => boolean): Promise<Running> => {
  if (system.id === "a") {
    const url = `${target.clickhouse}/?query=${encodeURIComponent(totalSql(target.table))}`
    await waitUntilAnswering(url, check)
    const pid = serverPid()
    return { url, pid, exited: () => (Fs.existsSync(`/proc/${pid}`) ? undefined : "ClickHouse exited"), stop: async () => {} }
  }
  const port = await freePort()
  const { env, script } = processFor(system, target)
  const pool = target.poolSize === undefined ? "" : `-pool${target.poolSize}`
  const log = Path.join(target.logDir, `${system.id}-${target.table}${pool}.log`)
  const fd = Fs.openSync(log, "w")
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
  const url = `http://127.0.0.1:${port}/api/metrics`
  try {
    await waitUntilAnswering(url, check, { process: child, log })
  } catch (error) {
    await stopChild(child)
    throw new Error(`(${system.id}) ${system.name}: ${error instanceof Error ? error.message : String(error)}`)
  }
  if (child.pid === undefined) throw new Error(`(${system.id}) has no pid`)
  const exited = () =>
    child.exitCode !== null || child.signalCode !== null
      ? `exited (${child.signalCode ?? `code ${child.exitCode}`}); last lines of ${log}:\n${tail(log)}`
      : undefined
  return { url, pid: child.pid, exited, stop: () => stopChild(child) }
}

export { peakRssMb, resetPeakRss } from "../support/proc.ts"
