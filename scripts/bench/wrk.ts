/**
 * One wrk run (2 threads) with every answer's body checked by check.lua, which prints one JSON line at the end.
 * Latencies are wrk's own per-request latency of every answer (any status), from its histogram.
 */
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { ensureDebianCommand } from "../support/proc.ts"
import type { Check, RunResult } from "./load.ts"

const script = Path.join(import.meta.dirname, "check.lua")

/** What check.lua prints. */
interface Summary {
  readonly requests: number
  readonly ok: number
  readonly wrong: number
  readonly statuses: Record<string, number>
  readonly errors: { connect: number; read: number; write: number; timeout: number; status: number }
  readonly durationS: number
  readonly p50Ms: number | null
  readonly p99Ms: number | null
  readonly maxMs: number | null
}

/** Installs wrk with apt-get when it is missing and this is root; otherwise fails with one line. */
export const ensureWrk = (log: (line: string) => void) => ensureDebianCommand("wrk", log)

const round = (n: number) => Math.round(n * 10) / 10

/** `wrk -t2 -c<connections> -d<seconds>s --timeout <timeoutS>s --latency -s check.lua <url>`. */
export const wrk = (url: string, connections: number, seconds: number, check: Check, timeoutS: number) =>
  new Promise<RunResult>((resolve, reject) => {
    const args = ["-t2", `-c${connections}`, `-d${seconds}s`, "--timeout", `${timeoutS}s`, "--latency", "-s", script, url]
    const env = { ...process.env, ...(check.kind === "total" ? { BENCH_TOTAL: String(check.total) } : { BENCH_BODY: check.body }) }
    const child = spawn("wrk", args, { env, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    child.on("error", reject)
    child.on("close", (code) => {
      const line = stdout.split("\n").filter((l) => l.startsWith("{\"requests\"")).at(-1)
      if (code !== 0 || line === undefined) {
        return reject(new Error(`wrk exited with ${code}: ${(stderr || stdout).trim().split("\n").slice(-3).join(" / ")}`))
      }
      const s = JSON.parse(line) as Summary
      const non2xx = Object.values(s.statuses).reduce((a, b) => a + b, 0)
      resolve({
        reqPerSec: round(s.ok / Math.max(s.durationS, 1e-3)),
        p50Ms: s.p50Ms === null ? null : round(s.p50Ms),
        p99Ms: s.p99Ms === null ? null : round(s.p99Ms),
        maxMs: s.maxMs === null ? null : round(s.maxMs),
        latencySamples: s.requests,
        ok: s.ok,
        wrong: s.wrong,
        errors: { non2xx, timeouts: s.errors.timeout, socket: s.errors.connect + s.errors.read + s.errors.write, unanswered: 0 },
        statuses: s.statuses,
        elapsedS: Math.round(s.durationS * 100) / 100
      })
    })
  })
