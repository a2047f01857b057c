/** What a bench run found, and its Markdown rendering. */
import { errorCount, type Load, type RunResult } from "./load.ts"
import type { SystemId } from "./systems.ts"

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
  /** The total every answer was checked against. */
  readonly expected: number
  readonly result?: RunResult
  /** Why there is no result (the system did not start, the run failed). */
  readonly failure?: string
  readonly peakRssMb: number | null
  /** ClickHouse queries still running after the run and its grace, killed before the next run. */
  readonly leftoverQueries?: number
  /** req/s over (b)'s and (d)'s in the same scenario; for bursts, completion time over (c)'s. */
  readonly vsB?: number
  readonly vsD?: number
  readonly timeVsC?: number
}

export interface ScenarioReport {
  readonly id: string
  readonly table: string
  readonly rows: number
  readonly load: Load
  readonly outcomes: Array<Outcome>
}

export interface PoolReport {
  readonly poolSize: number
  readonly outcome: Outcome
}

export interface Settings {
  readonly mode: "quick" | "full"
  readonly durationS: number
  readonly warmupS: number
  readonly runWarmupS: number
  readonly connections: ReadonlyArray<number>
  readonly burst: number
  readonly timeoutS: number
  readonly tables: ReadonlyArray<{ readonly table: string; readonly rows: number; readonly total: number }>
}

export const scenarioTitle = (s: Pick<ScenarioReport, "table" | "load">) =>
  s.load.kind === "burst"
    ? `analytics.${s.table} · burst of ${s.load.connections}`
    : `analytics.${s.table} · c=${s.load.connections} · ${s.load.seconds} s`

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

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>) =>
  [
    `| ${header.join(" | ")} |`,
    `| ${header.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
    ...rows.map((row) => `| ${row.join(" | ")} |`)
  ].join("\n")

const label = (o: Outcome) => `(${o.system}) ${o.name}`
const rss = (o: Outcome) => (o.peakRssMb === null ? "?" : String(o.peakRssMb))

const failed = (o: Outcome, columns: number) =>
  [label(o), `failed: ${o.failure ?? "no result"}`, ...Array.from({ length: columns - 2 }, () => "")]

export const scenarioTable = (s: ScenarioReport): string => {
  if (s.load.kind === "burst") {
    const header = ["system", "all done in s", "req/s", "p50 ms", "p99 ms", "max ms", "ok", "errors", "wrong",
      "peak RSS MB", "time ×(c)"]
    return table(header, s.outcomes.map((o) => {
      const r = o.result
      if (r === undefined) return failed(o, header.length)
      return [label(o), num(r.elapsedS), num(r.reqPerSec), num(r.p50Ms), num(r.p99Ms), num(r.maxMs), num(r.ok),
        errors(r), String(r.wrong), rss(o), ratio(o.timeVsC)]
    }))
  }
  const header = ["system", "req/s", "p50 ms", "p99 ms", "max ms", "ok", "errors", "wrong", "peak RSS MB", "×(b)",
    "×(d)"]
  return table(header, s.outcomes.map((o) => {
    const r = o.result
    if (r === undefined) return failed(o, header.length)
    return [label(o), num(r.reqPerSec), num(r.p50Ms), num(r.p99Ms), num(r.maxMs), num(r.ok), errors(r),
      String(r.wrong), rss(o), ratio(o.vsB), ratio(o.vsD)]
  }))
}

export const poolTable = (pools: ReadonlyArray<PoolReport>): string => {
  const header = ["CLICKHOUSE_POOL_SIZE", "req/s", "p50 ms", "p99 ms", "max ms", "ok", "errors", "wrong",
    "peak RSS MB"]
  return table(header, pools.map(({ outcome: o, poolSize }) => {
    const r = o.result
    if (r === undefined) return [String(poolSize), `failed: ${o.failure ?? "no result"}`, ...Array(7).fill("")]
    return [String(poolSize), num(r.reqPerSec), num(r.p50Ms), num(r.p99Ms), num(r.maxMs), num(r.ok), errors(r),
      String(r.wrong), rss(o)]
  }))
}

export const markdown = (
  startedAt: Date,
  machine: Machine,
  settings: Settings,
  scenarios: ReadonlyArray<ScenarioReport>,
  pools: ReadonlyArray<PoolReport>,
  poolLoad: string | undefined,
  wallS: number
): string => {
  const tables = settings.tables
    .map((t) => `analytics.${t.table} (${t.rows.toLocaleString("en-US")} rows, total ${t.total})`)
    .join(" and ")
  const lines = [
    `# analytics-api bench: ${settings.mode} (${startedAt.toISOString()})`,
    "",
    `- machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGb} GB RAM, ${machine.os}, ` +
    `Node ${machine.node}, ClickHouse ${machine.clickhouse} (local server, max_concurrent_queries 1000, ` +
    "queue_max_wait_ms 5000); the load generator (autocannon, one thread) runs on the same machine",
    `- ${settings.mode} mode: timed runs of ${settings.durationS} s at c = ${settings.connections.join(", ")}, each ` +
    `after ${settings.runWarmupS} s of the same load on the same connections (not counted); bursts of ` +
    `${settings.burst}; each system first warmed up ${settings.warmupS} s at c=10; tables ${tables}; ` +
    `autocannon timeout ${settings.timeoutS} s` +
    (settings.mode === "quick"
      ? ". Quick is a smoke test (fewer rows, loads and seconds than the full run, no pool sizes): use the full " +
        "run for figures"
      : ""),
    "- req/s: right answers (2xx, `total` within 1e-9 relative of ClickHouse's own `sum(value)`) per second. " +
    "Latencies: every right answer's own time (autocannon's per-request responseTime, request written → last " +
    "byte), nearest-rank percentiles; in a timed run only requests both sent and answered inside the window " +
    "(— when none was: each took longer than the window)",
    "- errors: non-2xx (by status), timeouts, socket errors, burst requests never answered; wrong: 2xx with another total. (d) answers a constant 458 on every " +
    "table and is checked against its own constant",
    "- a timed run counts what completed inside its window; requests still in flight at its end (at most one " +
    "per connection) are not counted, and ClickHouse queries they left running are killed before the next run",
    "- burst: all connections send one request at once; `all done in` = until the last was answered or failed; " +
    "req/s = right answers / that time; time ×(c) = that time over (c)'s",
    "- ×(b), ×(d): req/s over those systems' in the same scenario. Peak RSS: VmHWM of the serving process " +
    "(clickhouse-server for (a)), reset before each run",
    ""
  ]
  for (const s of scenarios) lines.push(`## ${scenarioTitle(s)}`, "", scenarioTable(s), "")
  if (pools.length > 0 && poolLoad !== undefined) {
    lines.push(`## Pool size: API with COALESCE_READS=false, ${poolLoad}`, "", poolTable(pools), "")
  }
  lines.push(`Wall time: ${Math.round(wallS)} s`)
  return lines.join("\n")
}
