/**
 * The systems under test: how to start one, wait until it is ready without touching the measured path (so
 * that its first burst is cold), and stop it.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { freePort, peakRssMb as ownPeakRssMb, resetPeakRss as resetOwnPeakRss, rssMb as ownRssMb } from "../support/proc.ts"
import { request } from "./burst.ts"
import { serverPid, totalSql } from "./clickhouse.ts"
import type { Check } from "./load.ts"

export type SystemId = "a" | "b" | "c" | "d" | "e" | "f" | "g" | "h" | "i" | "j" | "k" | "l"

export interface System {
  readonly id: SystemId
  readonly name: string
  /** The measured path; (a) gets the SQL as its query string instead. */
  readonly path: string
  /** A constant answer, whatever the table: checked against it, not against the table's total. */
  readonly constant?: Check
  /** Reads no table: measured on the first (6-row) table only. */
  readonly firstTableOnly?: boolean
  /** The API's WORKERS: a primary and this many worker processes. */
  readonly workers?: number
  /** A baseline for the rounds only (it splits a target's gap), not measured in the scenarios. */
  readonly roundsOnly?: boolean
}

export const systems: ReadonlyArray<System> = [
  { id: "a", name: "raw ClickHouse HTTP", path: "/" },
  { id: "b", name: "naive, client per request", path: "/api/metrics" },
  { id: "c", name: "naive, shared client", path: "/api/metrics" },
  { id: "d", name: "node:http constant JSON (Node ceiling)", path: "/api/metrics", constant: { kind: "total", total: 458 } },
  { id: "e", name: "API, COALESCE_READS=false", path: "/api/metrics" },
  { id: "f", name: "API, COALESCE_READS=true, WORKERS=1", path: "/api/metrics" },
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
  { id: "j", name: "minimal platform route + one shared client, fresh-read coalesced", path: "/api/metrics" },
  { id: "k", name: "API, COALESCE_READS=true, WORKERS=2 (node:cluster)", path: "/api/metrics", workers: 2 },
  {
    id: "l",
    name: "(h) behind a FIFO queue with as many permits as sockets",
    path: "/api/metrics",
    roundsOnly: true
  }
]

/** The API's own process (dist/main.js). */
export const isApi = (id: SystemId) => id === "e" || id === "f" || id === "i" || id === "k"

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
    case "l":
      return { script: "scripts/bench/platform-client-gated-server.mjs", env: {} }
    default:
      return {
        script: "dist/main.js",
        env: {
          LOG_LEVEL: "Warning",
          ...(system.id === "i" ? {} : { COALESCE_READS: String(system.id === "f" || system.id === "k") }),
          ...(system.workers === undefined ? {} : { WORKERS: String(system.workers) }),
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

/** Inodes of the sockets a process holds open. */
const socketInodes = (pid: number) => {
  const inodes = new Set<string>()
  for (const fd of Fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(Fs.readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1]
      if (inode !== undefined) inodes.add(inode)
    } catch {
      // closed meanwhile
    }
  }
  return inodes
}

/** Inodes of the server's ends of connections from these client ports to `port` (IPv4, /proc/net/tcp). */
const serverEnds = (port: number, clientPorts: ReadonlySet<number>) =>
  Fs.readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1).flatMap((line) => {
    const fields = line.trim().split(/\s+/)
    const local = Number.parseInt(fields[1]?.split(":")[1] ?? "", 16)
    const remote = Number.parseInt(fields[2]?.split(":")[1] ?? "", 16)
    return local === port && clientPorts.has(remote) && fields[9] !== undefined ? [fields[9]] : []
  })

/** Opens `count` connections at once, each answered once on /healthz, and returns them still open. */
const heldConnections = (origin: URL, count: number) =>
  Promise.all(Array.from({ length: count }, () =>
    new Promise<Net.Socket>((resolve, reject) => {
      const socket = Net.connect(Number(origin.port), origin.hostname, () => {
        socket.write(`GET /healthz HTTP/1.1\r\nHost: ${origin.host}\r\n\r\n`)
      })
      socket.once("data", () => resolve(socket))
      socket.once("error", reject)
    })
  ))

/**
 * A WORKERS=n API is ready once every worker takes connections (a worker joins the port's rotation once it can
 * serve): of 2n connections opened at once, each worker holds at least one, by /proc. Measured path untouched.
 */
const waitForWorkers = async (origin: string, pid: number, workers: number) => {
  const url = new URL(origin)
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const children = processTree(pid).slice(1)
    if (children.length === workers) {
      const sockets = await heldConnections(url, 2 * workers)
      const ends = serverEnds(Number(url.port), new Set(sockets.map((socket) => socket.localPort ?? 0)))
      const serving = children.filter((child) => ends.some((inode) => socketInodes(child).has(inode)))
      for (const socket of sockets) socket.destroy()
      if (serving.length === workers) return
    }
    await sleep(100)
  }
  throw new Error(`not all ${workers} workers took connections within 30 s`)
}

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
    if (system.workers !== undefined) await waitForWorkers(origin, child.pid, system.workers)
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

/** A process and its descendants (the API's primary and its workers), from /proc/<pid>/task/<tid>/children. */
const processTree = (pid: number): Array<number> => {
  let children: Array<number> = []
  try {
    children = Fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
      Fs.readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").split(" ").filter((s) => s.trim() !== "").map(Number)
    )
  } catch {
    // gone, or no /proc
  }
  return [pid, ...children.flatMap(processTree)]
}

/** Summed over the process and its descendants; null when the process itself cannot be read. */
const overTree = (pid: number, of: (pid: number) => number | null) => {
  const [own, ...rest] = processTree(pid).map(of)
  return own === null || own === undefined ? null : rest.reduce<number>((sum, mb) => sum + (mb ?? 0), own)
}

/** VmRSS now, summed over the process and its children. */
export const rssMb = (pid: number) => overTree(pid, ownRssMb)

/** Each process's VmHWM since its reset, summed over the process and its children (an upper bound of their joint peak). */
export const peakRssMb = (pid: number) => overTree(pid, ownPeakRssMb)

export const resetPeakRss = (pid: number) => processTree(pid).map(resetOwnPeakRss).every((done) => done)
