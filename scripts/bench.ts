/**
 * Load-tests GET /api/metrics against its alternatives, under the same load, on a real ClickHouse server.
 *   npm run bench                       full: c=10,100,1000 (1 s warm-up + 7 s each), bursts of 2000, 5M rows, pool sizes
 *   npm run bench -- --quick            about 2.5 minutes: c=100 (1 s warm-up + 2 s), bursts of 300, 500k rows, no pools
 *   options: --duration S  --only a,c,e  --scenarios metrics,c100,burst,cold,warm,idle  --pools 1,2,4,8,16  --no-pools
 *            --connections 100,1000  --burst N  --rows N  --no-build  --rounds N
 * Timed runs are wrk (-t2, scripts/bench/check.lua checks every body), each after a discarded wrk run of the
 * same connections. Bursts are Node's (raw node:net, one request per connection): cold, on a fresh process
 * before any request to the measured path, and warm, after the timed runs on the same process.
 * The series scenario (--scenarios series): /api/metrics/series?interval=1h on the big table, c=100, API off and
 * on, next to raw ClickHouse running the same SQL.
 * Systems: (a) raw ClickHouse HTTP, (b) naive Node server with a client per request, (c) naive Node server
 * with one shared client, (d) node:http constant JSON (the ceiling for Node), (e) the API with
 * COALESCE_READS=false, (f) the API with COALESCE_READS=true, (g) bare @effect/platform constant JSON (the
 * framework's ceiling), (h) a minimal platform route with one shared @clickhouse/client, (i) the API's /healthz,
 * (j) that minimal route with the fresh-read coalescing rule in a dozen lines (the ceiling for a coalesced read),
 * (k) the API as (f) with WORKERS=2 (node:cluster: a primary and two workers behind one port; RSS summed over the three),
 * (l) (h) behind a FIFO queue with as many permits as the client has sockets, as a bounded pool has (rounds only:
 * it splits the uncoalesced read's gap to (h) into what the client costs behind a bounded pool, and the rest).
 * A timed run where (d) does not reach 4× (g) is VOID: the load generator set the pace. The report starts with
 * the targets, computed from the same run.
 * Rounds (--scenarios rounds, --rounds N, 3 in a full run): (d), (g), (i), (f), (j) at c=100 and 1000, (h), (l)
 * and (e) at c=100, each round on fresh processes one after the other; the targets' ratios are medians over the rounds of
 * ratios within a round (scripts/bench/rounds.ts).
 * Idle memory (--scenarios idle): (f) and (g) started side by side and left idle for a minute, VmRSS read every
 * second (scripts/bench/idle.ts).
 * Writes a Markdown report to stdout and bench-results/{<timestamp>,latest}.json, latest.md, latest.svg.
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { chart } from "./bench/chart.ts"
import * as ClickHouse from "./bench/clickhouse.ts"
import { type Check, errorCount, type Load, run, type RunResult } from "./bench/load.ts"
import {
  type Machine,
  markdown,
  type Outcome,
  type PoolReport,
  type ScenarioReport,
  scenarioTitle,
  type Settings
} from "./bench/report.ts"
import { benchIdle, type IdleReport } from "./bench/idle.ts"
import { benchRounds, roundsMarkdown, type RoundsReport } from "./bench/rounds.ts"
import { benchSeries, type SeriesOutcome, seriesMarkdown } from "./bench/series.ts"
import {
  checkFor,
  killAll,
  peakRssMb,
  resetPeakRss,
  type Running,
  start,
  type System,
  systems
} from "./bench/systems.ts"
import { targets } from "./bench/targets.ts"
import { ensureWrk } from "./bench/wrk.ts"

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    duration: { type: "string" },
    only: { type: "string" },
    scenarios: { type: "string" },
    pools: { type: "string", default: "1,2,4,8,16" },
    "no-pools": { type: "boolean", default: false },
    rows: { type: "string" },
    connections: { type: "string" },
    burst: { type: "string" },
    "no-build": { type: "boolean", default: false },
    rounds: { type: "string" }
  }
})

const root = Path.resolve(import.meta.dirname, "..")
const outDir = Path.join(root, "bench-results")
const logDir = Path.join(outDir, "logs")
const list = (s: string | undefined) => (s === undefined ? undefined : s.split(",").map((x) => x.trim()))

const quick = args.quick
const settleMs = quick ? 100 : 1000
/** How long queries left running by a run may finish on their own before they are killed. */
const drainMs = quick ? 0 : 1000
const rows = Number(args.rows ?? (quick ? 500_000 : 5_000_000))
const bigTable = `metrics_${
  rows % 1_000_000 === 0 ? `${rows / 1_000_000}m` : rows % 1000 === 0 ? `${rows / 1000}k` : rows
}`
/** wrk takes whole seconds. */
const durationS = Math.max(1, Math.round(Number(args.duration ?? (quick ? 2 : 7))))
const runWarmupS = 1
/**
 * The rounds start every system afresh, so their warm-up is longer: at c=100 a fresh (e) or (h) needs about 6 s
 * before its req/s stops rising (JIT tiers; (f), (g) and (j) about 2 s).
 */
const roundWarmupS = quick ? 1 : 5
const warmupS = 1
const connections = list(args.connections)?.map(Number) ?? (quick ? [100] : [10, 100, 1000])
const burst = Number(args.burst ?? (quick ? 300 : 2000))
const timeoutS = quick ? 10 : 60
const only = list(args.only)
const chosen = systems.filter((s) => only === undefined || only.includes(s.id))
const filters = list(args.scenarios)
/** Interleaved rounds for the targets' ratios (scripts/bench/rounds.ts); none in quick mode unless asked. */
const roundCount = Number(args.rounds ?? (quick ? 0 : 3))
/** How long (f) and (g) are left idle for the idle-memory readings. */
const idleWindowS = quick ? 20 : 60
const pools = quick || args["no-pools"] ? [] : (list(args.pools) ?? []).map(Number)

const loads: ReadonlyArray<Load> = [
  { kind: "burst", connections: burst, phase: "cold" },
  ...connections.map((c): Load => ({ kind: "duration", connections: c, seconds: durationS, warmupSeconds: runWarmupS })),
  { kind: "burst", connections: burst, phase: "warm" }
]
const loadId = (load: Load) => (load.kind === "burst" ? `${load.phase}-burst` : `c${load.connections}`)
/** --scenarios: a table, a load (c100, cold-burst, or cold, warm, burst for both), or table:load. */
const selected = (table: string, load: Load) => {
  const ids = load.kind === "burst" ? [loadId(load), load.phase, "burst"] : [loadId(load)]
  return filters === undefined || filters.some((f) => f === table || ids.some((id) => f === id || f === `${table}:${id}`))
}

const t0 = performance.now()
const log = (line: string) => process.stderr.write(`[${Math.round((performance.now() - t0) / 1000)} s] ${line}\n`)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const message = (error: unknown) => (error instanceof Error ? error.message : String(error))

const machine = (clickhouse: string): Machine => {
  const cpuinfo = Fs.existsSync("/proc/cpuinfo") ? Fs.readFileSync("/proc/cpuinfo", "utf8") : ""
  return {
    cpu: /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1]?.trim() ?? Os.cpus()[0]?.model ?? "unknown",
    cores: Os.availableParallelism(),
    memoryGb: Math.round((Os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${Os.type()} ${Os.release()}`,
    node: process.version,
    clickhouse
  }
}

/** `npm run build`, run while ClickHouse starts and is seeded. */
const build = () =>
  new Promise<void>((resolve, reject) => {
    log("building: tsc -b tsconfig.build.json")
    const tsc = Path.join(root, "node_modules/typescript/bin/tsc")
    spawn(process.execPath, [tsc, "-b", "tsconfig.build.json"], { cwd: root, stdio: ["ignore", "inherit", "inherit"] })
      .on("error", reject)
      .on("exit", (code) => (code === 0 ? resolve() : reject(new Error("the build failed (npm run build)"))))
  })

let clickhouseStarted = false
const cleanup = () => {
  killAll()
  if (clickhouseStarted) ClickHouse.stop()
  clickhouseStarted = false
}
process.on("exit", cleanup)
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    log(`\n${signal}: stopping the systems and ClickHouse`)
    cleanup()
    process.exit(130)
  })
}

interface Context {
  readonly clickhouse: string
  readonly totals: Map<string, number>
}

/** Queries left by the warm-up's connections finished or killed, then a short pause. */
const afterWarmup = async (clickhouse: string) => {
  await ClickHouse.settle(clickhouse, drainMs)
  await sleep(200)
}

/** Runs one load against a running system and measures it; never throws. */
const measure = async (
  ctx: Context,
  system: System,
  running: Running,
  load: Load,
  check: Check
): Promise<Omit<Outcome, "system" | "name" | "check">> => {
  const rssReset = resetPeakRss(running.pid)
  const idle = { idleRssMb: running.idleRssMb }
  try {
    const result = await run(running.url, load, check, timeoutS, () => afterWarmup(ctx.clickhouse))
    const peak = rssReset ? peakRssMb(running.pid) : null
    const leftoverQueries = await ClickHouse.settle(ctx.clickhouse, drainMs)
    await sleep(settleMs)
    return { result, peakRssMb: peak, ...idle, leftoverQueries }
  } catch (error) {
    await ClickHouse.settle(ctx.clickhouse, drainMs).catch(() => 0)
    return { failure: `(${system.id}) ${message(error)}`, peakRssMb: null, ...idle }
  }
}

interface Job {
  readonly system: System
  readonly table: string
  readonly poolSize?: number
  /** In order: the cold burst first, the warm burst last. */
  readonly loads: ReadonlyArray<Load>
  readonly record: (load: Load, outcome: Outcome) => void
}

/** A warm burst with no timed run before it on the same process gets this first. */
const burstWarmup: Load = { kind: "duration", connections: 10, seconds: warmupS, warmupSeconds: 0 }

const logOutcome = (table: string, load: Load, outcome: Outcome) => {
  const r = outcome.result
  log(
    `  ${scenarioTitle({ table, load })}: ` +
      (r === undefined
        ? outcome.failure
        : `${r.reqPerSec} req/s, p50 ${r.p50Ms ?? "—"} ms, p99 ${r.p99Ms ?? "—"} ms, ok ${r.ok}, ` +
          `errors ${errorCount(r)}, wrong ${r.wrong}, RSS ${outcome.peakRssMb} MB` +
          (load.kind === "burst" ? `, done in ${r.elapsedS} s` : ""))
  )
}

const firstLine = (text: string) => text.split("\n")[0] ?? text

/**
 * Starts a fresh process for the job and runs its loads in order on it. A process that exits by itself
 * (stopped by something else, or crashed) is started once more and the load it missed is run again on the new
 * process, with a note; a cold burst is not re-run.
 */
const runJob = async (ctx: Context, job: Job) => {
  const { system, table, poolSize } = job
  const check = checkFor(system, ctx.totals.get(table) ?? NaN)
  const base = { system: system.id, name: system.name, check }
  const title = `(${system.id}) ${system.name}${poolSize === undefined ? "" : `, pool ${poolSize}`} on analytics.${table}`
  const target = { clickhouse: ctx.clickhouse, table, logDir, ...(poolSize === undefined ? {} : { poolSize }) }
  const launch = () => start(system, target).catch((error: unknown) => new Error(message(error)))
  let running = await launch()
  if (running instanceof Error) {
    log(`${title}: did not start: ${running.message}`)
    for (const load of job.loads) job.record(load, { ...base, failure: "did not start", peakRssMb: null })
    return
  }
  log(`${title}${running.idleRssMb === null ? "" : `, idle RSS ${running.idleRssMb} MB`}`)
  let warmed = false
  const attempt = async (on: Running, load: Load): Promise<Outcome> => {
    const before = on.exited()
    if (before !== undefined) return { ...base, failure: `not running: ${firstLine(before)}`, peakRssMb: null }
    if (load.kind === "burst" && load.phase === "warm" && !warmed) {
      await run(on.url, burstWarmup, check, timeoutS).catch(() => undefined)
      await sleep(settleMs)
    }
    const measured = await measure(ctx, system, on, load, check)
    const died = on.exited()
    return died === undefined
      ? { ...base, ...measured }
      : { ...base, failure: `died during the run: ${firstLine(died)}`, peakRssMb: null }
  }
  let restarted = false
  try {
    for (const load of job.loads) {
      let outcome = await attempt(running, load)
      const lost = running.exited()
      if (lost !== undefined && !restarted && !(load.kind === "burst" && load.phase === "cold")) {
        restarted = true
        log(`  ${lost}\n  starting (${system.id}) again`)
        const again = await launch()
        if (!(again instanceof Error)) {
          running = again
          warmed = false
          outcome = { ...(await attempt(running, load)), note: `re-run on a fresh process: the first ${firstLine(lost)}` }
        }
      }
      logOutcome(table, load, outcome)
      job.record(load, outcome)
      if (load.kind === "duration") warmed = true
    }
  } finally {
    await running.stop()
  }
}

const runJobs = async (ctx: Context, jobs: ReadonlyArray<Job>) => {
  for (const job of jobs) await runJob(ctx, job)
}

/** Ratios to (d), (g), (h) and (j) (for bursts, time over (d)'s), and VOID when (d) did not reach 4× (g). */
const withRatios = (scenario: ScenarioReport): ScenarioReport => {
  const of = (id: string) => scenario.outcomes.find((o) => o.system === id)?.result
  const d = of("d")
  const g = of("g")
  const h = of("h")
  const j = of("j")
  const over = (r: RunResult, base: RunResult | undefined) =>
    base !== undefined && base.reqPerSec > 0 ? r.reqPerSec / base.reqPerSec : undefined
  const outcomes = scenario.outcomes.map((o): Outcome => {
    const r = o.result
    if (r === undefined) return o
    if (scenario.load.kind === "burst") return d && d.elapsedS > 0 ? { ...o, timeVsD: r.elapsedS / d.elapsedS } : o
    const vsD = over(r, d)
    const vsG = over(r, g)
    const vsH = over(r, h)
    const vsJ = over(r, j)
    return {
      ...o,
      ...(vsD === undefined ? {} : { vsD }),
      ...(vsG === undefined ? {} : { vsG }),
      ...(vsH === undefined ? {} : { vsH }),
      ...(vsJ === undefined ? {} : { vsJ })
    }
  })
  const voided = scenario.load.kind === "duration" && d !== undefined && g !== undefined && d.reqPerSec < 4 * g.reqPerSec
  return { ...scenario, outcomes, ...(voided ? { void: true } : {}) }
}

const svg = (startedAt: Date, scenarios: ReadonlyArray<ScenarioReport>) => {
  const names = chosen.map((s) => `(${s.id}) ${s.name}`)
  const groups = (value: (o: Outcome) => number | undefined) =>
    scenarios.map((s) => ({
      label: `${s.table}\n${s.load.kind === "burst" ? `${s.load.phase} ${s.load.connections}` : `c=${s.load.connections}`}` +
        (s.void === true ? " VOID" : ""),
      bars: s.outcomes.map((o) => ({ system: `(${o.system}) ${o.name}`, value: value(o) }))
    }))
  return chart(`analytics-api bench, ${args.quick ? "quick" : "full"}, ${startedAt.toISOString()}`, names, [
    { title: "Throughput: right answers per second", unit: "req/s", groups: groups((o) => o.result?.reqPerSec) },
    { title: "p99 latency", unit: "ms", groups: groups((o) => o.result?.p99Ms ?? undefined) }
  ])
}

const main = async () => {
  const startedAt = new Date()
  ensureWrk(log)
  Fs.rmSync(logDir, { recursive: true, force: true })
  Fs.mkdirSync(Path.join(logDir, "series"), { recursive: true })
  const built = args["no-build"] ? Promise.resolve() : build()
  built.catch(() => {})
  log("starting ClickHouse")
  clickhouseStarted = true
  const url = ClickHouse.start()
  const version = (await ClickHouse.query(url, "SELECT version()")).trim()
  log(`ClickHouse ${version} at ${url}; seeding analytics.metrics (6 rows) and analytics.${bigTable} (${rows} rows)`)
  await ClickHouse.seed(url, "metrics")
  await ClickHouse.seed(url, bigTable, rows)
  const tables = [{ table: "metrics", rows: 6 }, { table: bigTable, rows }]
  const totals = new Map<string, number>()
  for (const t of tables) totals.set(t.table, await ClickHouse.total(url, t.table))
  const ctx: Context = { clickhouse: url, totals }
  const settings: Settings = {
    mode: quick ? "quick" : "full",
    durationS,
    warmupS,
    runWarmupS,
    connections,
    burst,
    timeoutS,
    tables: tables.map((t) => ({ ...t, total: totals.get(t.table) ?? NaN }))
  }
  await built
  log(`setup done in ${Math.round((performance.now() - t0) / 1000)} s`)

  let idle: ReadonlyArray<IdleReport> = []
  const idlePair = chosen.filter((s) => s.id === "f" || s.id === "g")
  if ((filters === undefined || filters.includes("idle")) && idlePair.length > 0) {
    log(`idle memory: ${idlePair.map((s) => `(${s.id})`).join(" and ")} side by side, ${idleWindowS} s`)
    idle = await benchIdle(idlePair, { clickhouse: url, table: "metrics", logDir }, idleWindowS)
    for (const r of idle) {
      log(`  (${r.system}): ${r.failure ?? `${r.atStartMb} MB 1 s after ready, ${r.settledMb} MB after ${r.windowS} s`}`)
    }
  }

  const measured: Array<ScenarioReport> = []
  for (const [i, t] of tables.entries()) {
    const mine = loads.filter((load) => selected(t.table, load)).map((load): ScenarioReport => ({
      id: `${t.table}:${loadId(load)}`,
      table: t.table,
      rows: t.rows,
      load,
      outcomes: []
    }))
    if (mine.length === 0) continue
    measured.push(...mine)
    await runJobs(ctx, chosen.filter((system) => system.roundsOnly !== true && (i === 0 || system.firstTableOnly !== true)).map((system): Job => ({
      system,
      table: t.table,
      loads: mine.map((s) => s.load),
      record: (load, outcome) => mine.find((s) => s.load === load)?.outcomes.push(outcome)
    })))
  }
  const scenarios = measured.map(withRatios)

  let rounds: RoundsReport | undefined
  const roundLoads = connections.filter((c) => c === 100 || c === 1000)
  if ((filters === undefined || filters.includes("rounds")) && roundCount > 0 && roundLoads.length > 0) {
    // (e), (h) and (l) only where their target is (c=100); (d) for the void rule.
    const plan = (["d", "g", "i", "f", "j", "h", "l", "e"] as const).flatMap((id) => {
      const system = chosen.find((s) => s.id === id)
      const at = id === "e" || id === "h" || id === "l" ? roundLoads.filter((c) => c === 100) : roundLoads
      return system === undefined || at.length === 0 ? [] : [{ system, connections: at }]
    })
    log(`targets in ${roundCount} interleaved rounds: ${plan.map((p) => `(${p.system.id})`).join(" ")} at c=${roundLoads.join(", ")}`)
    rounds = await benchRounds({
      plan,
      target: { clickhouse: url, table: "metrics", logDir },
      rounds: roundCount,
      seconds: durationS,
      warmupSeconds: roundWarmupS,
      timeoutS,
      check: (system) => checkFor(system, totals.get("metrics") ?? NaN),
      settle: () => afterWarmup(url),
      log
    })
  }
  const targetRows = targets(scenarios, "metrics", idle, rounds)

  const poolReports: Array<PoolReport> = []
  const poolLoad: Load = { kind: "duration", connections: 100, seconds: durationS, warmupSeconds: runWarmupS }
  const api = chosen.find((s) => s.id === "e")
  if (api !== undefined && pools.length > 0) {
    await runJobs(ctx, pools.map((poolSize): Job => ({
      system: api,
      table: bigTable,
      poolSize,
      loads: [poolLoad],
      record: (_load, outcome) => poolReports.push({ poolSize, outcome })
    })))
  }

  let seriesReport = ""
  let seriesOutcomes: ReadonlyArray<SeriesOutcome> = []
  const seriesLoad: Load = { kind: "duration", connections: 100, seconds: durationS, warmupSeconds: runWarmupS }
  const apis = chosen.filter((s) => s.id === "e" || s.id === "f")
  if ((filters === undefined || filters.includes("series")) && apis.length > 0) {
    seriesOutcomes = await benchSeries({
      target: { clickhouse: url, table: bigTable, logDir: Path.join(logDir, "series") },
      api: apis,
      load: seriesLoad,
      timeoutS,
      settle: () => afterWarmup(url),
      log
    })
    seriesReport = seriesMarkdown(bigTable, seriesLoad, seriesOutcomes)
  }

  const wallS = (performance.now() - t0) / 1000
  const report = markdown(
    startedAt,
    machine(version),
    settings,
    scenarios,
    targetRows,
    idle,
    rounds === undefined ? "" : roundsMarkdown(rounds),
    poolReports,
    `analytics.${bigTable}, c=${poolLoad.connections}, ${durationS} s per size`,
    seriesReport,
    wallS
  )
  process.stdout.write(`${report}\n`)
  const json = JSON.stringify(
    {
      startedAt,
      wallSeconds: Math.round(wallS),
      machine: machine(version),
      settings,
      targets: targetRows,
      voidRuns: scenarios.filter((s) => s.void === true).map((s) => s.id),
      scenarios,
      idle,
      rounds,
      pools: poolReports,
      series: seriesOutcomes
    },
    null,
    2
  )
  Fs.writeFileSync(Path.join(outDir, `${startedAt.toISOString().replace(/[:.]/g, "-")}.json`), json)
  Fs.writeFileSync(Path.join(outDir, "latest.json"), json)
  Fs.writeFileSync(Path.join(outDir, "latest.md"), `${report}\n`)
  Fs.writeFileSync(Path.join(outDir, "latest.svg"), svg(startedAt, scenarios))
  log(`wrote bench-results/latest.{json,md,svg} in ${Math.round(wallS)} s`)
}

main().then(
  () => {
    cleanup()
    process.exit(0)
  },
  (error: unknown) => {
    log(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    cleanup()
    process.exit(1)
  }
)
