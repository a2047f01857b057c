/** What a bench run found, and its Markdown rendering. */
import type { IdleReport } from "./idle.ts"
import { type Check, errorCount, type Load, type RunResult } from "./load.ts"
import type { SystemId } from "./systems.ts"
import type { TargetRow } from "./targets.ts"

export interface Machine {
  readonly cpu: string
  readonly cores: number
  readonly memoryGb: number
  readonly os: string
  readonly node: string
  readonly clickhouse: string
}

export interface Outcome {
  readonly system: SystemId
  readonly name: string
  /** What every 2xx body was checked against. */
  readonly check: Check
  readonly result?: RunResult
  /** Why there is no result (the system did not start, the run failed). */
  readonly failure?: string
  readonly peakRssMb: number | null
  /** VmRSS of the process 1 s after it was ready, before any load (null for ClickHouse). */
  readonly idleRssMb?: number | null
  /** ClickHouse queries still running after the run and its grace, killed before the next run. */
  readonly leftoverQueries?: number
  /** req/s over (d)'s, (g)'s, (h)'s and (j)'s in the same scenario; for bursts, completion time over (d)'s. */
  readonly vsD?: number
  readonly vsG?: number
  readonly vsH?: number
  readonly vsJ?: number
  readonly timeVsD?: number
  /** Set when the figures come from a second process (the first exited by itself). */
  readonly note?: string
}

export interface ScenarioReport {
  readonly id: string
  readonly table: string
  readonly rows: number
  readonly load: Load
  readonly outcomes: Array<Outcome>
  /** A timed run where (d) did not reach 4× (g)'s req/s: the load generator, not the systems, set the pace. */
  readonly void?: boolean
}

export interface PoolReport {
  readonly poolSize: number
  readonly outcome: Outcome
}

export interface Settings {
  readonly mode: "quick" | "full"
  readonly durationS: number
  readonly runWarmupS: number
  readonly warmupS: number
  readonly connections: ReadonlyArray<number>
  readonly burst: number
  readonly timeoutS: number
  readonly tables: ReadonlyArray<{ readonly table: string; readonly rows: number; readonly total: number }>
}

export const loadTitle = (load: Load) =>
  load.kind === "burst" ? `${load.phase} burst of ${load.connections}` : `c=${load.connections} · ${load.seconds} s`

export const scenarioTitle = (s: Pick<ScenarioReport, "table" | "load" | "void">) =>
  `analytics.${s.table} · ${loadTitle(s.load)}${s.void === true ? " · VOID" : ""}`

const num = (n: number | null) => (n === null ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: n < 10 ? 2 : 1 }))
const ratio = (r: number | undefined) =>
  r === undefined ? "" : `${r >= 10 ? r.toFixed(1) : r >= 0.1 ? r.toFixed(2) : r.toPrecision(2)}×`

const errors = (r: RunResult) => {
  const parts = [
    ...Object.entries(r.statuses).map(([status, n]) => `${n} × ${status}`),
    r.errors.timeouts > 0 ? `${r.errors.timeouts} timeouts` : "",
    r.errors.socket > 0 ? `${r.errors.socket} socket` : "",
    r.errors.unanswered > 0 ? `${r.errors.unanswered} unanswered` : ""
  ].filter((p) => p !== "")
  return parts.length === 0 ? "0" : `${errorCount(r)} (${parts.join(", ")})`
}

/** The first `left` columns aligned left, the others (numbers) right. */
const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>, left = 1) =>
  [
    `| ${header.join(" | ")} |`,
    `| ${header.map((_, i) => (i < left ? "---" : "---:")).join(" | ")} |`,
    ...rows.map((row) => `| ${row.join(" | ")} |`)
  ].join("\n")

const label = (o: Outcome) => `(${o.system}) ${o.name}`
const mb = (n: number | null | undefined) => (n === null || n === undefined ? "?" : String(n))

const failed = (o: Outcome, columns: number) =>
  [label(o), `failed: ${o.failure ?? "no result"}`, ...Array.from({ length: columns - 2 }, () => "")]

export const scenarioTable = (s: ScenarioReport): string => {
  if (s.load.kind === "burst") {
    const header = ["system", "all done in s", "req/s", "p50 ms", "p99 ms", "max ms", "ok", "errors", "wrong",
      "peak RSS MB", "time ×(d)"]
    return table(header, s.outcomes.map((o) => {
      const r = o.result
      if (r === undefined) return failed(o, header.length)
      return [label(o), num(r.elapsedS), num(r.reqPerSec), num(r.p50Ms), num(r.p99Ms), num(r.maxMs), num(r.ok),
        errors(r), String(r.wrong), mb(o.peakRssMb), ratio(o.timeVsD)]
    }))
  }
  const header = ["system", "req/s", "p50 ms", "p99 ms", "max ms", "ok", "errors", "wrong", "peak RSS MB", "×(d)",
    "×(g)", "×(h)", "×(j)"]
  return table(header, s.outcomes.map((o) => {
    const r = o.result
    if (r === undefined) return failed(o, header.length)
    return [label(o), num(r.reqPerSec), num(r.p50Ms), num(r.p99Ms), num(r.maxMs), num(r.ok), errors(r),
      String(r.wrong), mb(o.peakRssMb), ratio(o.vsD), ratio(o.vsG), ratio(o.vsH), ratio(o.vsJ)]
  }))
}

/** Per table: each process's idle RSS and its peak in each run. */
export const memoryTable = (tableName: string, scenarios: ReadonlyArray<ScenarioReport>): string => {
  const mine = scenarios.filter((s) => s.table === tableName)
  const outcomes = mine.flatMap((s) => s.outcomes).filter((o) => o.idleRssMb !== undefined && o.idleRssMb !== null)
  const ids = [...new Set(outcomes.map((o) => o.system))]
  if (ids.length === 0) return ""
  const header = ["system", "idle RSS MB", ...mine.map((s) => `peak ${loadTitle(s.load).replace(/ · .*/, "")}`)]
  return table(header, ids.map((id) => {
    const first = outcomes.find((o) => o.system === id)
    return [first === undefined ? id : label(first), mb(first?.idleRssMb),
      ...mine.map((s) => mb(s.outcomes.find((o) => o.system === id)?.peakRssMb))]
  }))
}

export const poolTable = (pools: ReadonlyArray<PoolReport>): string => {
  const header = ["CLICKHOUSE_POOL_SIZE", "req/s", "p50 ms", "p99 ms", "max ms", "ok", "errors", "wrong",
    "peak RSS MB"]
  return table(header, pools.map(({ outcome: o, poolSize }) => {
    const r = o.result
    if (r === undefined) return [String(poolSize), `failed: ${o.failure ?? "no result"}`, ...Array(7).fill("")]
    return [String(poolSize), num(r.reqPerSec), num(r.p50Ms), num(r.p99Ms), num(r.maxMs), num(r.ok), errors(r),
      String(r.wrong), mb(o.peakRssMb)]
  }))
}

export const idleTable = (reports: ReadonlyArray<IdleReport>): string =>
  table(["system", "RSS MB 1 s after ready", "RSS MB at the end", "steady from"], reports.map((r) =>
    r.failure !== undefined
      ? [`(${r.system}) ${r.name}`, `failed: ${r.failure}`, "", ""]
      : [`(${r.system}) ${r.name}`, mb(r.atStartMb), mb(r.settledMb), r.settledAfterS === null ? "—" : `${r.settledAfterS} s`]))

export const targetsTable = (rows: ReadonlyArray<TargetRow>): string =>
  table(["target", "measured", "result"], rows.map((t) => [t.target, t.measured, t.status]), 3)

export const markdown = (
  startedAt: Date,
  machine: Machine,
  settings: Settings,
  scenarios: ReadonlyArray<ScenarioReport>,
  targets: ReadonlyArray<TargetRow>,
  idle: ReadonlyArray<IdleReport>,
  rounds: string,
  pools: ReadonlyArray<PoolReport>,
  poolLoad: string | undefined,
  series: string,
  wallS: number
): string => {
  const tables = settings.tables
    .map((t) => `analytics.${t.table} (${t.rows.toLocaleString("en-US")} rows, total ${t.total})`)
    .join(" and ")
  const voided = scenarios.filter((s) => s.void === true)
  const lines = [
    `# analytics-api bench: ${settings.mode} (${startedAt.toISOString()})`,
    "",
    voided.length === 0
      ? "Void runs: none ((d) reached at least 4× (g)'s req/s in every timed run where both ran)."
      : `**VOID runs** (the load generator was the bottleneck: (d), plain node:http, did not reach 4× (g)'s req/s): ` +
        `${voided.map((s) => `analytics.${s.table} ${loadTitle(s.load)}`).join("; ")}.`,
    "",
    `## Targets${settings.mode === "quick" ? " (quick run: smoke figures only)" : ""}`,
    "",
    targetsTable(targets),
    "",
    `- machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGb} GB RAM, ${machine.os}, ` +
    `Node ${machine.node}, ClickHouse ${machine.clickhouse} (local server, max_concurrent_queries 1000, ` +
    "queue_max_wait_ms 5000); the load generator (wrk, 2 threads, and Node for the bursts) shares the machine",
    `- ${settings.mode} mode: timed runs of ${settings.durationS} s at c = ${settings.connections.join(", ")}, each ` +
    `after a separate, discarded wrk run of ${settings.runWarmupS} s at the same c; bursts of ${settings.burst}; ` +
    `tables ${tables}; timeout ${settings.timeoutS} s` +
    (settings.mode === "quick"
      ? ". Quick is a smoke test (fewer rows, loads and seconds than the full run, no pool sizes): use the full " +
        "run for figures"
      : ""),
    "- timed runs: `wrk -t2 -c<c> -d<s>s --timeout <t>s --latency -s scripts/bench/check.lua`; the Lua script " +
    "checks every answer's body. req/s: right answers (2xx, `total` within 1e-9 relative of ClickHouse's own " +
    "`sum(value)`, or the exact body for (i)) over wrk's run time. Latencies: wrk's per-request latency of every " +
    "answer (any status), request written → answer read, from its histogram; requests still in flight when the " +
    "run ends are not counted, and ClickHouse queries they left running are killed before the next run",
    "- (i) reads no table and is measured on the 6-row table only. A process that exits by itself during a " +
    "run (stopped from outside, or crashed) is started once more and the run repeated on it, with a note under " +
    "the table",
    "- errors: non-2xx (by status), timeouts (wrk: answers later than the timeout; bursts: none within it), socket " +
    "errors (connect/read/write), burst connections closed without an answer; wrong: 2xx with another body. (d) and " +
    "(g) answer a constant 458 on every table and are checked against it; (i) is checked against `{\"status\":\"ok\"}`",
    "- bursts (Node, raw node:net): all connections opened at once, each sends one `GET` with `Connection: close`; " +
    "latency = connect start → last byte of the body, over every answer; `all done in` = until the last was " +
    "answered or failed; req/s = right answers / that time; time ×(d) = that time over (d)'s in the same kind " +
    "of burst. Cold: the first requests of the path on a fresh process, started for the system alone and left idle " +
    "1 s after it was ready (the API: /healthz 200, /readyz for (i); the others: any answer to /ready-probe; " +
    "(a) is the shared ClickHouse server, not restarted). Warm: after the timed runs, on the same process",
    "- ×(d), ×(g), ×(h), ×(j): req/s over (d)'s (node:http constant), (g)'s (bare @effect/platform constant, tracer " +
    "off, as the API runs untraced), (h)'s (minimal platform route + one shared client) and (j)'s (the same, " +
    "fresh-read coalesced). A timed run is VOID " +
    "when (d) did not reach 4× (g)'s req/s: wrk, not the servers, set the pace",
    "- peak RSS: VmHWM of the serving process (clickhouse-server for (a)), reset before each run (so a timed " +
    "run's includes its warm-up); idle RSS: " +
    "VmRSS 1 s after the process was ready, before any request to the measured path. For (k), a primary and two " +
    "workers, both are summed over the three processes: each one's own peak (an upper bound of their joint peak), " +
    "and pages they share (Node's code) counted once per process",
    "- (k): the API with WORKERS=2 behind one port (node:cluster, round-robin: the primary accepts, the workers " +
    "answer), each worker with its own pool (CLICKHOUSE_POOL_SIZE 4 each, 8 in all) and coalescer; ready once " +
    "both workers take connections. The workers share the machine's cores with wrk and ClickHouse",
    ""
  ]
  for (const s of scenarios) {
    lines.push(`## ${scenarioTitle(s)}`, "", scenarioTable(s), "")
    for (const o of s.outcomes) if (o.note !== undefined) lines.push(`- (${o.system}): ${o.note}`)
    if (s.outcomes.some((o) => o.note !== undefined)) lines.push("")
  }
  if (rounds !== "") {
    lines.push("## Targets in interleaved rounds (analytics.metrics)", "", rounds, "")
  }
  if (idle.length > 0) {
    lines.push(
      `## Idle memory: side by side, left idle ${idle[0]!.windowS} s`,
      "",
      idleTable(idle),
      "",
      "VmRSS read every second from 1 s after ready; steady from: the first second after which every reading stayed " +
        "within 2 MB of the last. A process keeps the pages its start-up touched until V8's memory reducer, which waits " +
        "for it to go quiet, collects and gives them back; the last reading is what the idle process holds.",
      ""
    )
  }
  for (const t of settings.tables) {
    const memory = memoryTable(t.table, scenarios)
    if (memory !== "") lines.push(`## Memory on analytics.${t.table}`, "", memory, "")
  }
  if (pools.length > 0 && poolLoad !== undefined) {
    lines.push(`## Pool size: API with COALESCE_READS=false, ${poolLoad}`, "", poolTable(pools), "")
  }
  if (series !== "") lines.push(series, "")
  lines.push(`Wall time: ${Math.round(wallS)} s`)
  return lines.join("\n")
}
