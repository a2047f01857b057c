/** The processes of a chaos run: our own ClickHouse server, the API under test, and their clean-up. */
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { demoValues, freePort } from "../support/proc.ts"

export const root = Path.resolve(import.meta.dirname, "../..")
const script = Path.join(root, "scripts/clickhouse")

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const children = new Set<ChildProcess>()

/** Synchronous, for exit handlers: the API, and a `scripts/clickhouse start` still waiting for its server. */
export const killChildren = () => {
  for (const child of children) child.kill("SIGKILL")
}

const track = (child: ChildProcess) => {
  children.add(child)
  child.once("exit", () => children.delete(child))
  return child
}

const run = (args: ReadonlyArray<string>) =>
  new Promise<string>((resolve, reject) => {
    track(execFile("bash", [script, ...args], { cwd: root, encoding: "utf8" }, (error, stdout, stderr) => {
      if (error) reject(new Error(`scripts/clickhouse ${args[0]} failed: ${stderr.trim() || error.message}`))
      else resolve(stdout)
    }))
  })

export interface ClickHouseServer {
  readonly url: string
  readonly port: number
  readonly dir: string
}

const serverDirs = new Set<string>()

/** Starts a fresh server (stopping one left in `dir` by an earlier run, so the settings apply). */
export const startClickHouse = async (dir: string, maxQueries: number, port?: number): Promise<ClickHouseServer> => {
  serverDirs.add(dir)
  const args = ["start", "--dir", dir, "--max-concurrent-queries", String(maxQueries)]
  const out = await run(port === undefined ? args : [...args, "--port", String(port)])
  const url = out.trim().split("\n").at(-1) ?? ""
  if (!url.startsWith("http")) throw new Error(`scripts/clickhouse start printed no URL: ${out}`)
  return { url, port: Number(new URL(url).port), dir }
}

export const stopClickHouse = (dir: string) => {
  spawnSync("bash", [script, "stop", "--dir", dir], { cwd: root, stdio: "ignore" })
  serverDirs.delete(dir)
}

/** Synchronous, for exit handlers: every server started and not stopped yet. */
export const stopAllClickHouse = () => {
  for (const dir of serverDirs) stopClickHouse(dir)
}

const watchdogScript = `
while state=$(sed -n 's/.*) \\(.\\).*/\\1/p' "/proc/$1/stat" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]; do
  sleep 0.5
done
marker=$2; script=$3; shift 3
[ -f "$marker" ] || exit 0
pid=$(cat "$marker"); [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
for dir in "$@"; do bash "$script" stop --dir "$dir"; done; sleep 2
for dir in "$@"; do bash "$script" stop --dir "$dir"; done
rm -f "$marker"
`

/**
 * A detached shell that outlives this process if it is SIGKILLed (tsx does that to a child whose event loop is too
 * busy to acknowledge a relayed SIGINT within 60 ms). `marker` exists while the run is on and holds the API's pid
 * once known; a clean exit removes it. If it is still there when this process is gone, the shell kills the API and
 * stops the servers in `dirs` (twice, in case a restart was about to write its pid).
 */
export const startWatchdog = (dirs: ReadonlyArray<string>, marker: string) => {
  const child = spawn("bash", ["-c", watchdogScript, "watchdog", String(process.pid), marker, script, ...dirs], {
    cwd: root,
    detached: true,
    stdio: "ignore"
  })
  child.unref()
}

const processState = (pid: number): string | undefined => {
  try {
    return /\)\s+(\S)/.exec(Fs.readFileSync(`/proc/${pid}/stat`, "utf8"))?.[1]
  } catch {
    return undefined
  }
}

/**
 * SIGKILLs the server and waits until it is dead. Where PID 1 does not reap orphans the pid stays a zombie that
 * `kill -0` still sees, and `scripts/clickhouse start` would take it for a running server: so server.pid goes.
 */
export const killClickHouse = async (server: ClickHouseServer): Promise<number> => {
  const pidFile = Path.join(root, server.dir, "server.pid")
  const pid = Number(Fs.readFileSync(pidFile, "utf8"))
  process.kill(pid, "SIGKILL")
  for (let i = 0; i < 200; i++) {
    const state = processState(pid)
    if (state === undefined || state === "Z") break
    await sleep(10)
  }
  Fs.rmSync(pidFile, { force: true })
  return pid
}

export const query = async (url: string, sql: string): Promise<string> => {
  const response = await fetch(`${url}/`, { method: "POST", body: sql, signal: AbortSignal.timeout(10_000) })
  const text = await response.text()
  if (!response.ok) throw new Error(`ClickHouse ${response.status} for ${sql.slice(0, 60)}: ${text.trim()}`)
  return text
}

export const pings = async (url: string): Promise<boolean> => {
  try {
    const response = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(500) })
    await response.text()
    return response.ok
  } catch {
    return false
  }
}


/** Recreates analytics.metrics with the six demo rows; returns the sum ClickHouse computes. */
export const seed = async (url: string): Promise<number> => {
  await query(url, "CREATE DATABASE IF NOT EXISTS analytics")
  await query(url, "DROP TABLE IF EXISTS analytics.metrics")
  await query(
    url,
    "CREATE TABLE analytics.metrics (ts DateTime, metric_name String, value Float64) " +
      "ENGINE = MergeTree ORDER BY (ts, metric_name)"
  )
  await query(url, `INSERT INTO analytics.metrics VALUES ${demoValues}`)
  return Number((await query(url, "SELECT sum(value) FROM analytics.metrics")).trim())
}

/**
 * `tsc -p tsconfig.build.json` into `outDir`. Type errors still emit JavaScript (src/ may be mid-edit): then the
 * run goes on with what was emitted and the result says so; no main.js at all stops it. A copy of package.json goes
 * next to `outDir`, where the service looks for its version.
 */
export const build = (outDir: string): { readonly typeErrors: boolean } => {
  const tsc = Path.join(root, "node_modules/typescript/bin/tsc")
  Fs.rmSync(outDir, { recursive: true, force: true })
  const result = spawnSync(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", outDir, "--tsBuildInfoFile", Path.join(outDir, ".tsbuildinfo")], {
    cwd: root,
    stdio: ["ignore", 2, 2]
  })
  if (!Fs.existsSync(Path.join(outDir, "main.js"))) throw new Error("the build failed (tsc -p tsconfig.build.json)")
  // The service reads its version from the package.json next to its dist/ folder, as in the published package.
  Fs.copyFileSync(Path.join(root, "package.json"), Path.join(outDir, "..", "package.json"))
  return { typeErrors: result.status !== 0 }
}

export interface Exit {
  readonly atMs: number
  readonly code: number | null
  readonly signal: string | null
}

export interface Api {
  readonly url: string
  readonly pid: number
  readonly log: string
  /** Set once the process has exited, whoever stopped it. */
  readonly exit: () => Exit | undefined
  /** Settles when the process exits. */
  readonly exited: Promise<Exit>
  /** SIGTERM, then SIGKILL after `graceMs`; how long it took and how it ended. */
  readonly stop: (graceMs: number) => Promise<Exit & { readonly stopMs: number }>
}

const tail = (file: string) => Fs.readFileSync(file, "utf8").split("\n").slice(-15).join("\n")

export const startApi = async (
  main: string,
  log: string,
  env: Record<string, string>,
  now: () => number
): Promise<Api> => {
  const port = await freePort()
  const fd = Fs.openSync(log, "w")
  const child = spawn(process.execPath, [main], {
    cwd: root,
    env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", ...env },
    stdio: ["ignore", fd, fd]
  })
  Fs.closeSync(fd)
  if (child.pid === undefined) throw new Error("the API did not start")
  track(child)
  let exit: Exit | undefined
  const exited = new Promise<Exit>((resolve) => {
    child.once("exit", (code, signal) => {
      exit = { atMs: now(), code, signal }
      resolve(exit)
    })
  })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    if (exit !== undefined) throw new Error(`the API exited while starting; last lines of ${log}:\n${tail(log)}`)
    if (Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`the API did not answer 200 on /api/metrics within 30 s; see ${log}`)
    }
    try {
      const response = await fetch(`${url}/api/metrics`, { signal: AbortSignal.timeout(2000) })
      await response.text()
      if (response.status === 200) break
    } catch {
      // not listening yet
    }
    await sleep(100)
  }
  const stop = async (graceMs: number) => {
    const started = now()
    if (exit === undefined) child.kill("SIGTERM")
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
    const result = await exited
    clearTimeout(timer)
    return { ...result, stopMs: Math.round(result.atMs - started) }
  }
  return { url, pid: child.pid, log, exit: () => exit, exited, stop }
}

import { peakRssMb, resetPeakRss } from "../support/proc.ts"

export { peakRssMb, resetPeakRss }

export interface Mark {
  readonly phase: string
  readonly startMs: number
  endMs: number
  peakRssMb: number | null
}

/**
 * The phases of a run, in order: `enter(name)` ends the current one (its end and the API's peak RSS in it) and
 * starts the next; `enter("")` ends the last. `phase()` is the current one's name, for the load's samples.
 */
export const phases = (pid: number, now: () => number, say: (line: string) => void) => {
  const marks: Array<Mark> = []
  let phase = ""
  const enter = (name: string) => {
    const at = now()
    const last = marks.at(-1)
    if (last !== undefined) {
      last.endMs = at
      last.peakRssMb = peakRssMb(pid)
    }
    if (name === "") return
    phase = name
    marks.push({ phase: name, startMs: at, endMs: at, peakRssMb: null })
    resetPeakRss(pid)
    say(name)
  }
  return { marks, enter, phase: () => phase }
}
