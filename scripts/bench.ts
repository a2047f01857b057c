/**
 * Load-tests GET /api/metrics against its alternatives, under the same load, on a real ClickHouse server.
 *   npm run bench                       full: c=10,100,1000 (1 s warm-up + 7 s each), bursts of 2000, 5M rows, pool sizes
 *   npm run bench -- --quick            under 2 minutes: c=100 (0.5 s + 2 s), bursts of 300, 500k rows, no pools
 *   options: --duration S  --only a,c,e  --scenarios metrics,c100,burst  --pools 1,2,4,8,16  --no-pools
 *            --connections 100,1000  --burst N  --rows N  --no-build
 * The series scenario (--scenarios series): /api/metrics/series?interval=1h on the big table, c=100, API off and
 * on, next to raw ClickHouse running the same SQL.
 * Systems: (a) raw ClickHouse HTTP, (b) naive Node server with a client per request, (c) naive Node server
 * with one shared client, (d) constant JSON (the ceiling for Node), (e) the API with COALESCE_READS=false,
 * (f) the API with COALESCE_READS=true. Every body is checked.
 * Writes a Markdown report to stdout and bench-results/{<timestamp>,latest}.json, latest.md, latest.svg.
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { chart } from "./bench/chart.ts"
import * as ClickHouse from "./bench/clickhouse.ts"
import { checker, errorCount, type Load, run } from "./bench/load.ts"
import {
  type Machine,
  markdown,
  type Outcome,
  type PoolReport,
  type ScenarioReport,
  scenarioTitle,
  type Settings
} from "./bench/report.ts"
import { benchSeries, type SeriesOutcome, seriesMarkdown } from "./bench/series.ts"
import { killAll, peakRssMb, resetPeakRss, type Running, start, type System, systems } from "./bench/systems.ts"

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
    "no-build": { type: "boolean", default: false }
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
const durationS = Number(args.duration ?? (quick ? 2 : 7))
const runWarmupS = quick ? 0.5 : 1
const warmupS = quick ? 0.3 : 0.5
const connections = list(args.connections)?.map(Number) ?? (quick ? [100] : [10, 100, 1000])
const burst = Number(args.burst ?? (quick ? 300 : 2000))
const timeoutS = quick ? 10 : 60
const only = list(args.only)
const chosen = systems.filter((s) => only === undefined || only.includes(s.id))
const filters = list(args.scenarios)
const pools = quick || args["no-pools"] ? [] : (list(args.pools) ?? []).map(Number)

const loads: ReadonlyArray<Load> = [
  ...connections.map((c): Load => ({ kind: "duration", connections: c, seconds: durationS, warmupSeconds: runWarmupS })),
  { kind: "burst", connections: burst }
]
const loadId = (load: Load) => (load.kind === "burst" ? "burst" : `c${load.connections}`)
const selected = (table: string, load: Load) =>
  filters === undefined || filters.some((f) => f === table || f === loadId(load) || f === `${table}:${loadId(load)}`)

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

/** Runs one load against a running system and measures it; never throws. */
const measure = async (
  ctx: Context,
  system: System,
  running: Running,
  load: Load,
  expected: number
): Promise<Omit<Outcome, "system" | "name" | "expected">> => {
  const rssReset = resetPeakRss(running.pid)
  try {
    const result = await run(running.url, load, checker(expected), timeoutS)
    const peak = rssReset ? peakRssMb(running.pid) : null
    const leftoverQueries = await ClickHouse.settle(ctx.clickhouse, drainMs)
    await sleep(settleMs)
    return { result, peakRssMb: peak, leftoverQueries }
  } catch (error) {
    await ClickHouse.settle(ctx.clickhouse, drainMs).catch(() => 0)
    return { failure: `(${system.id}) ${message(error)}`, peakRssMb: null }
  }
}

interface Job {
  readonly system: System
  readonly table: string
  readonly poolSize?: number
  readonly loads: ReadonlyArray<Load>
  readonly record: (load: Load, outcome: Outcome) => void
}

const expectedFor = (ctx: Context, job: Job) => job.system.constant ?? ctx.totals.get(job.table) ?? NaN

const launch = (ctx: Context, job: Job): Promise<Running | Error> =>
  start(
    job.system,
    { clickhouse: ctx.clickhouse, table: job.table, logDir, ...(job.poolSize === undefined ? {} : { poolSize: job.poolSize }) },
    checker(expectedFor(ctx, job))
  ).catch((error: unknown) => (error instanceof Error ? error : new Error(String(error))))

/**
 * Warms the system up, runs each load of the job, stops the system. A system found dead before a run (it was
 * launched with the others and waited) is started again once; one that dies during a run is reported.
 */
const runJob = async (ctx: Context, job: Job, launched: Running | Error) => {
  const { system, table, poolSize } = job
  const expected = expectedFor(ctx, job)
  const base = { system: system.id, name: system.name, expected }
  const title = `(${system.id}) ${system.name}${poolSize === undefined ? "" : `, pool ${poolSize}`} on analytics.${table}`
  let running = launched
  if (!(running instanceof Error) && running.exited() !== undefined) {
    log(`${title}: ${running.exited()}\n  starting it again`)
    running = await launch(ctx, job)
  }
  if (running instanceof Error) {
    log(`${title}: did not start: ${running.message}`)
    for (const load of job.loads) job.record(load, { ...base, failure: "did not start", peakRssMb: null })
    return
  }
  log(title)
  try {
    const warmup: Load = { kind: "duration", connections: 10, seconds: warmupS, warmupSeconds: 0 }
    await run(running.url, warmup, checker(expected), timeoutS)
    await ClickHouse.settle(ctx.clickhouse, drainMs)
    await sleep(settleMs)
    for (const load of job.loads) {
      const before = running.exited()
      const measured = before === undefined
        ? await measure(ctx, system, running, load, expected)
        : { failure: `not running: ${before.split("\n")[0]}`, peakRssMb: null }
      const died = before === undefined ? running.exited() : undefined
      const outcome: Outcome = {
        ...base,
        ...(died === undefined ? measured : { failure: `died during the run: ${died.split("\n")[0]}`, peakRssMb: null })
      }
      if (died !== undefined) log(`  ${died}`)
      const r = outcome.result
      log(
        `  ${scenarioTitle({ table, load })}: ` +
          (r === undefined
            ? outcome.failure
            : `${r.reqPerSec} req/s, p50 ${r.p50Ms ?? "—"} ms, p99 ${r.p99Ms ?? "—"} ms, ok ${r.ok}, ` +
              `errors ${errorCount(r)}, wrong ${r.wrong}, ` +
              `RSS ${outcome.peakRssMb} MB` + (load.kind === "burst" ? `, done in ${r.elapsedS} s` : ""))
      )
      job.record(load, outcome)
    }
  } finally {
    await running.stop()
  }
}

/** Starts every system of the jobs at once (idle while the others are measured), then measures one at a time. */
const runJobs = async (ctx: Context, jobs: ReadonlyArray<Job>) => {
  const launched = await Promise.all(jobs.map((job) => launch(ctx, job)))
  try {
    for (const [i, job] of jobs.entries()) {
      const running = launched[i]
      if (running !== undefined) await runJob(ctx, job, running)
    }
  } finally {
    for (const running of launched) if (!(running instanceof Error)) await running?.stop()
  }
}

const addRatios = (scenario: ScenarioReport) => {
  const of = (id: string) => scenario.outcomes.find((o) => o.system === id)?.result
  const b = of("b")
  const c = of("c")
  const d = of("d")
  scenario.outcomes.forEach((o, i) => {
    const r = o.result
    if (r === undefined) return
    scenario.outcomes[i] = scenario.load.kind === "burst"
      ? { ...o, ...(c && c.elapsedS > 0 ? { timeVsC: r.elapsedS / c.elapsedS } : {}) }
      : {
        ...o,
        ...(b && b.reqPerSec > 0 ? { vsB: r.reqPerSec / b.reqPerSec } : {}),
        ...(d && d.reqPerSec > 0 ? { vsD: r.reqPerSec / d.reqPerSec } : {})
      }
  })
}

const svg = (startedAt: Date, scenarios: ReadonlyArray<ScenarioReport>) => {
  const names = chosen.map((s) => `(${s.id}) ${s.name}`)
  const groups = (value: (o: Outcome) => number | undefined) =>
    scenarios.map((s) => ({
      label: `${s.table}\n${s.load.kind === "burst" ? `burst ${s.load.connections}` : `c=${s.load.connections}`}`,
      bars: s.outcomes.map((o) => ({ system: `(${o.system}) ${o.name}`, value: value(o) }))
    }))
  return chart(`analytics-api bench, ${args.quick ? "quick" : "full"}, ${startedAt.toISOString()}`, names, [
    { title: "Throughput: right answers per second", unit: "req/s", groups: groups((o) => o.result?.reqPerSec) },
    { title: "p99 latency", unit: "ms", groups: groups((o) => o.result?.p99Ms ?? undefined) }
  ])
}

const main = async () => {
  const startedAt = new Date()
  Fs.mkdirSync(logDir, { recursive: true })
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

  const scenarios: Array<ScenarioReport> = []
  for (const t of tables) {
    const mine = loads.filter((load) => selected(t.table, load)).map((load): ScenarioReport => ({
      id: `${t.table}:${loadId(load)}`,
      table: t.table,
      rows: t.rows,
      load,
      outcomes: []
    }))
    if (mine.length === 0) continue
    scenarios.push(...mine)
    await runJobs(ctx, chosen.map((system): Job => ({
      system,
      table: t.table,
      loads: mine.map((s) => s.load),
      record: (load, outcome) => mine.find((s) => s.load === load)?.outcomes.push(outcome)
    })))
  }
  scenarios.forEach(addRatios)

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
      target: { clickhouse: url, table: bigTable, logDir },
      total: totals.get(bigTable) ?? NaN,
      api: apis,
      load: seriesLoad,
      timeoutS,
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
    poolReports,
    `analytics.${bigTable}, c=${poolLoad.connections}, ${durationS} s per size`,
    wallS
  )
  const fullReport = seriesReport === "" ? report : `${report}\n\n${seriesReport}`
  process.stdout.write(`${fullReport}\n`)
  const json = JSON.stringify(
    {
      startedAt,
      wallSeconds: Math.round(wallS),
      machine: machine(version),
      settings,
      scenarios,
      pools: poolReports,
      series: seriesOutcomes
    },
    null,
    2
  )
  Fs.writeFileSync(Path.join(outDir, `${startedAt.toISOString().replace(/[:.]/g, "-")}.json`), json)
  Fs.writeFileSync(Path.join(outDir, "latest.json"), json)
  Fs.writeFileSync(Path.join(outDir, "latest.md"), `${fullReport}\n`)
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
