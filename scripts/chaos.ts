/**
 * Chaos run, two scenarios on the production build of the API under closed-loop load:
 *   single    the API behind a fault-injecting proxy in front of one real ClickHouse; faults, then ClickHouse
 *             SIGKILLed and restarted; then hostile requests
 *   replicas  three ClickHouse servers with the same rows in CLICKHOUSE_URL; one SIGKILLed and restarted on its port
 *   npm run chaos                  faults 30 s, no faults 10 s, ClickHouse down 3 s, 10k hostile requests; replicas
 *                                  10 s before the kill, down 3 s, 10 s after
 *   npm run chaos -- --quick       faults 5 s, no faults 3 s, 2000 hostile requests; replicas 3 s, 3 s, 3 s
 *   options: --scenarios single,replicas (the default; name one to run only it)
 *            --rate 0.2  --duration S  --no-fault S  --down S  --back S  --hostile N  --concurrency 500  --seed 42
 *            (--no-fault, --down and --back also time the replica scenario's before, down and after)
 *            --pool-size N  --query-timeout-ms MS  --env KEY=VALUE (repeatable, passed to the API)  --strict
 *            --no-build (reuse chaos-results/dist)  --samples (also write every request to
 *            chaos-results/{samples,replica-samples}.json)
 * Prints a Markdown report on stdout and writes chaos-results/{latest,<timestamp>}.json and latest.md.
 * Exit code 0 whatever the targets say (1 with --strict when one is missed); 2 when the run itself broke.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { type Fault, faults, type Proxy, type Stats, startProxy } from "./support/proxy.ts"
import { type Hostile, runHostile } from "./chaos/hostile.ts"
import { startLoad } from "./chaos/load.ts"
import { markdown, perSecond, type PhaseStats, phaseStats, recovery, type Target } from "./chaos/report.ts"
import { runReplicas } from "./chaos/replicas.ts"
import * as System from "./chaos/system.ts"

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    scenarios: { type: "string", default: "single,replicas" },
    rate: { type: "string", default: "0.2" },
    duration: { type: "string" },
    "no-fault": { type: "string" },
    down: { type: "string", default: "3" },
    back: { type: "string" },
    hostile: { type: "string" },
    concurrency: { type: "string", default: "500" },
    seed: { type: "string", default: "42" },
    "pool-size": { type: "string" },
    "query-timeout-ms": { type: "string" },
    env: { type: "string", multiple: true, default: [] },
    "no-build": { type: "boolean", default: false },
    samples: { type: "boolean", default: false },
    strict: { type: "boolean", default: false }
  }
})

const fail = (message: string): never => {
  process.stderr.write(`chaos: ${message}\n`)
  process.exit(2)
}
const numberArg = (name: string, raw: string | undefined, fallback: number, min: number, max: number) => {
  const value = raw === undefined ? fallback : Number(raw)
  return Number.isFinite(value) && value >= min && value <= max ? value : fail(`--${name} must be in [${min}, ${max}]`)
}

const scenarioNames = ["single", "replicas"] as const
const scenarios = new Set(args.scenarios.split(",").map((name) => name.trim()).filter((name) => name !== ""))
for (const name of scenarios) {
  if (!(scenarioNames as ReadonlyArray<string>).includes(name)) fail(`--scenarios takes ${scenarioNames.join(", ")}; not "${name}"`)
}
if (scenarios.size === 0) fail(`--scenarios takes ${scenarioNames.join(", ")}`)
const quick = args.quick
const rate = numberArg("rate", args.rate, 0.2, 0, 1)
const faultsMs = numberArg("duration", args.duration, quick ? 5 : 30, 0.1, 3600) * 1000
const noFaultMs = numberArg("no-fault", args["no-fault"], quick ? 3 : 10, 1, 3600) * 1000
const downMs = numberArg("down", args.down, 3, 0, 600) * 1000
const backMs = numberArg("back", args.back, quick ? 3 : 10, 1, 3600) * 1000
const hostileCount = numberArg("hostile", args.hostile, quick ? 2000 : 10_000, 0, 10_000_000)
const concurrency = numberArg("concurrency", args.concurrency, 500, 1, 100_000)
const seed = numberArg("seed", args.seed, 42, 0, 2 ** 32)
const warmUpMs = 2000
const clientTimeoutMs = 10_000
const hostileTimeoutMs = 5000
const hostileConcurrency = 32
const expected = 458
const latency = { latencyMs: 200, jitterMs: 300 }
const mix: Record<Fault, number> = Object.fromEntries(faults.map((f) => [f, 1])) as Record<Fault, number>

const apiEnv: Record<string, string> = Object.fromEntries(
  args.env.map((pair) => {
    const at = pair.indexOf("=")
    return at > 0 ? [pair.slice(0, at), pair.slice(at + 1)] : fail(`--env wants KEY=VALUE, got "${pair}"`)
  })
)
if (args["pool-size"] !== undefined) apiEnv.CLICKHOUSE_POOL_SIZE = args["pool-size"]
if (args["query-timeout-ms"] !== undefined) apiEnv.CLICKHOUSE_QUERY_TIMEOUT_MS = args["query-timeout-ms"]

const outDir = Path.join(System.root, "chaos-results")
/** A private build: `dist/` may be rebuilt by others while this runs. */
const buildDir = Path.join(outDir, "dist")
const clickhouseDir = ".clickhouse/chaos"
const replicaDirs = [1, 2, 3].map((n) => `chaos-results/replicas/${n}`)

const t0 = performance.now()
const now = () => performance.now() - t0
const seconds = (ms: number) => Math.round(ms / 100) / 10
const log = (line: string) => process.stderr.write(`[${seconds(now()).toFixed(1)} s] ${line}\n`)

/** Exists while a run is on, with the API's pid once it runs: see System.startWatchdog. */
const marker = Path.join(outDir, `.running-${process.pid}`)
const cleanup = () => {
  System.killChildren()
  System.stopAllClickHouse()
  Fs.rmSync(marker, { force: true })
}
process.on("exit", cleanup)
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping the API and ClickHouse`)
    cleanup()
    process.exit(code)
  })
}

const answersRight = async (url: string) => {
  try {
    const response = await fetch(`${url}/api/metrics`, { signal: AbortSignal.timeout(5000) })
    return response.status === 200 && (await response.json() as { total?: unknown }).total === expected
  } catch {
    return false
  }
}

/** One ClickHouse behind the fault proxy: faults, no faults, ClickHouse SIGKILLed and restarted, hostile requests. */
const single = async (notes: Array<string>) => {
  log("starting ClickHouse")
  System.stopClickHouse(clickhouseDir)
  const clickhouse = await System.startClickHouse(clickhouseDir, 100)
  const version = (await System.query(clickhouse.url, "SELECT version()")).trim()
  const seeded = await System.seed(clickhouse.url)
  if (seeded !== expected) throw new Error(`seeded total is ${seeded}, not ${expected}`)
  const proxy: Proxy = await startProxy(clickhouse.url, { seed })
  const api = await System.startApi(
    Path.join(buildDir, "main.js"),
    Path.join(outDir, "logs", "api.log"),
    { CLICKHOUSE_URL: proxy.url, LOG_LEVEL: "WARN", ...apiEnv },
    now
  )
  Fs.writeFileSync(marker, String(api.pid))
  log(`ClickHouse ${version} at ${clickhouse.url}, proxy ${proxy.url}, API ${api.url} (pid ${api.pid})`)

  const { enter, marks, phase } = System.phases(api.pid, now, log)
  const alive = () => api.exit() === undefined
  const pause = (ms: number) => Promise.race([System.sleep(Math.max(0, ms)), api.exited])
  const events: Array<string> = []

  enter("warm-up")
  const load = startLoad({ url: `${api.url}/api/metrics`, concurrency, timeoutMs: clientTimeoutMs, expected, now, phase })
  await pause(warmUpMs)

  enter("faults")
  const before: Stats = proxy.stats()
  proxy.setFaults({ rate, mix, ...latency, seed })
  await pause(faultsMs)
  proxy.clear()
  const after: Stats = proxy.stats()
  enter("no faults")
  const clearedAt = now()
  const injected = faults.map((f) => `${f} ${after[f] - before[f]}`).join(", ")
  const injectedCount = faults.reduce((sum, f) => sum + after[f] - before[f], 0)
  if (injectedCount < 10) {
    notes.push(
      `Only ${injectedCount} faults were injected (the API sent ${after.requests - before.requests} requests to ClickHouse ` +
        "during the faults): the faults targets prove little. Try a longer --duration or --env COALESCE_READS=false."
    )
  }
  events.push(
    `during the faults the proxy saw ${after.requests - before.requests} requests to ClickHouse on ` +
      `${after.connections - before.connections} new connections and injected: ${injected}`
  )
  await pause(noFaultMs)

  let backAt: number | undefined
  let killedAt: number | undefined
  if (alive()) {
    enter("ClickHouse down")
    killedAt = now()
    const pid = await System.killClickHouse(clickhouse)
    await pause(downMs - (now() - killedAt))
    const restartAt = now()
    const restart = System.startClickHouse(clickhouseDir, 100, clickhouse.port)
      .then(() => undefined, (error: unknown) => (error instanceof Error ? error : new Error(String(error))))
    while (alive() && !(await System.pings(clickhouse.url))) {
      if (now() - restartAt > 60_000) throw new Error("ClickHouse did not answer /ping within 60 s of its restart")
      await System.sleep(20)
    }
    backAt = now()
    enter("ClickHouse back")
    const restartError = await restart
    if (restartError !== undefined) throw restartError
    events.push(
      `ClickHouse (pid ${pid}) SIGKILLed at ${seconds(killedAt)} s, restarted at ${seconds(restartAt)} s, ` +
        `answered /ping at ${seconds(backAt)} s (${seconds(backAt - killedAt)} s without ClickHouse)`
    )
    await pause(backMs)
  }
  await load.stop()
  enter("")

  let hostile: Hostile | undefined
  if (alive() && hostileCount > 0) {
    log(`${hostileCount} hostile requests`)
    System.resetPeakRss(api.pid)
    hostile = await runHostile({
      port: Number(new URL(api.url).port),
      count: hostileCount,
      seed,
      concurrency: hostileConcurrency,
      timeoutMs: hostileTimeoutMs
    })
    events.push(`peak RSS of the API during the hostile requests: ${System.peakRssMb(api.pid) ?? "n/a"} MB`)
  }

  const crash = api.exit()
  const servingAtEnd = crash === undefined && (await answersRight(api.url))
  if (crash === undefined) {
    const stopped = await api.stop(15_000)
    events.push(
      `API alive throughout, ${servingAtEnd ? "still" : "NOT"} answering ${expected} at the end; SIGTERM → exited in ` +
        `${stopped.stopMs} ms (${stopped.signal ?? `code ${stopped.code}`})`
    )
  } else {
    events.push(`API CRASHED at ${seconds(crash.atMs)} s: ${crash.signal ?? `exit code ${crash.code}`}; see ${api.log}`)
  }
  await proxy.close()
  System.stopClickHouse(clickhouseDir)

  // A request in flight when ClickHouse dies counts in that phase, not in the calm one before.
  const cut = killedAt ?? Infinity
  const samples = load.samples.map((s) =>
    s.startMs < cut && s.startMs + s.ms > cut ? { ...s, phase: "ClickHouse down" } : s
  )
  const phases: Array<PhaseStats> = marks.map((m) => phaseStats(samples, m.phase, (m.endMs - m.startMs) / 1000, m.peakRssMb))
  const endOf = (name: string) => marks.find((m) => m.phase === name)?.endMs ?? 0
  const recovered = {
    faults: recovery(samples, "no faults", clearedAt, endOf("no faults")),
    restart: backAt === undefined ? undefined : recovery(samples, "ClickHouse back", backAt, endOf("ClickHouse back"))
  }
  const of = (name: string) => phases.find((p) => p.phase === name)
  const wrongIn = (...names: ReadonlyArray<string>) => names.reduce((sum, n) => sum + (of(n)?.wrong ?? 0), 0)
  const faultsPhase = of("faults")
  const hostileRan = hostile !== undefined
  const targets: Array<Target> = [
    { name: "0 crashes (API never exited)", measured: crash === undefined ? "0" : "1", pass: crash === undefined },
    {
      name: "faults: 0 wrong answers (warm-up, faults, no faults)",
      measured: String(wrongIn("warm-up", "faults", "no faults")),
      pass: wrongIn("warm-up", "faults", "no faults") === 0
    },
    {
      name: `faults: success ≥ 99% (${rate * 100}% faults, ${seconds(faultsMs)} s)`,
      measured: `${faultsPhase?.successPct ?? 0}%`,
      pass: (faultsPhase?.successPct ?? 0) >= 99
    },
    {
      name: "faults: recovery ≤ 1 s after they stop",
      measured: recovered.faults.ms === null ? "not recovered" : `${recovered.faults.ms} ms`,
      pass: recovered.faults.ms !== null && recovered.faults.ms <= 1000
    },
    {
      name: "ClickHouse kill: 0 wrong answers",
      measured: backAt === undefined ? "not run (API exited)" : String(wrongIn("ClickHouse down", "ClickHouse back")),
      pass: backAt !== undefined && wrongIn("ClickHouse down", "ClickHouse back") === 0
    },
    {
      name: "ClickHouse kill: recovery ≤ 1 s after /ping answers",
      measured: recovered.restart?.ms == null ? "not recovered" : `${recovered.restart.ms} ms`,
      pass: recovered.restart?.ms != null && recovered.restart.ms <= 1000
    },
    {
      name: `hostile: 0 5xx (${hostileCount} requests)`,
      measured: hostileRan ? String(hostile?.fiveXx) : "not run",
      pass: hostileCount === 0 ? "skip" : hostileRan && hostile?.fiveXx === 0
    }
  ]
  return { version, phases, recovery: recovered, events, hostile, targets, samples, timeline: perSecond(samples) }
}

/** Three servers with the same rows; the second SIGKILLed mid-load and restarted on its port. */
const replicas = async (notes: Array<string>) => {
  const victim = 1
  const run = await runReplicas({
    dirs: replicaDirs,
    victim,
    main: Path.join(buildDir, "main.js"),
    log: Path.join(outDir, "logs", "api-replicas.log"),
    env: { LOG_LEVEL: "WARN", ...apiEnv },
    concurrency,
    clientTimeoutMs,
    expected,
    warmUpMs,
    beforeMs: noFaultMs,
    downMs,
    afterMs: backMs,
    now,
    say: log,
    onApi: (pid) => Fs.writeFileSync(marker, String(pid))
  })
  // The warm-up is a cold API meeting 500 clients at once, before any fault: its failures are noted, not counted.
  const loaded = run.phases.filter((p) => p.phase !== "warm-up")
  const warmUp = run.phases.find((p) => p.phase === "warm-up")
  if (warmUp !== undefined && warmUp.ok < warmUp.requests) {
    notes.push(
      `Replicas: ${warmUp.requests - warmUp.ok} of the ${warmUp.requests} warm-up requests failed ` +
        `(${Object.entries(warmUp.statuses).filter(([key]) => key !== "200").map(([key, n]) => `${key}: ${n}`).join(", ")}), ` +
        "before anything was killed; the 99.9% target counts from the end of the warm-up."
    )
  }
  const requests = loaded.reduce((sum, p) => sum + p.requests, 0)
  const ok = loaded.reduce((sum, p) => sum + p.ok, 0)
  const wrong = run.phases.reduce((sum, p) => sum + p.wrong, 0)
  const all = run.phases.reduce((sum, p) => sum + p.requests, 0)
  const okPct = requests === 0 ? 0 : Math.floor((ok / requests) * 10000) / 100
  const rejoined = run.rejoin.queriesMs
  const targets: Array<Target> = [
    { name: "replicas: 0 crashes (API never exited)", measured: run.crashed ? "1" : "0", pass: !run.crashed },
    { name: "replicas: 0 wrong answers (warm-up included)", measured: `${wrong} in ${all}`, pass: wrong === 0 },
    { name: "replicas: ≥ 99.9% 200s across the run (before, down, after)", measured: `${okPct}% (${ok} of ${requests})`, pass: requests > 0 && ok / requests >= 0.999 },
    {
      name: "replicas: back in rotation ≤ 1 s after /ping answers (its Query count)",
      measured: rejoined === null ? "not seen within 5 s" : `${rejoined} ms`,
      pass: rejoined !== null && rejoined <= 1000
    }
  ]
  return { ...run, victim: victim + 1, okPct, targets }
}

const main = async () => {
  const startedAt = new Date()
  Fs.mkdirSync(Path.join(outDir, "logs"), { recursive: true })
  Fs.writeFileSync(marker, "")
  System.startWatchdog([...(scenarios.has("single") ? [clickhouseDir] : []), ...(scenarios.has("replicas") ? replicaDirs : [])], marker)
  const notes: Array<string> = []
  if (!args["no-build"]) {
    log(`building the API into ${Path.relative(System.root, buildDir)}`)
    if (System.build(buildDir).typeErrors) {
      notes.push("The build reported type errors (src/ mid-edit?); this run used the JavaScript tsc emitted anyway.")
      log("the build reported type errors; running the emitted JavaScript")
    }
  }
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  const one = scenarios.has("single") ? await single(notes) : undefined
  const three = scenarios.has("replicas") ? await replicas(notes) : undefined
  delay.disable()

  const targets: Array<Target> = [...(one?.targets ?? []), ...(three?.targets ?? [])]
  const envText = Object.entries(apiEnv).map(([k, v]) => `${k}=${v}`).join(" ") || "API defaults"
  const version = one?.version ?? three?.version ?? "n/a"
  const settings = {
    mode: quick ? "quick" : "full",
    scenarios: [...scenarios],
    rate,
    mix,
    latency,
    faultsS: faultsMs / 1000,
    noFaultS: noFaultMs / 1000,
    downS: downMs / 1000,
    backS: backMs / 1000,
    concurrency,
    clientTimeoutMs,
    hostile: hostileCount,
    hostileTimeoutMs,
    seed,
    apiEnv,
    clickhouse: version
  }
  const machine = { cores: Os.availableParallelism(), memoryGb: Math.round(Os.totalmem() / 2 ** 30), node: process.version }
  const harness = {
    eventLoopDelayP99Ms: Math.round(delay.percentile(99) / 1e6),
    eventLoopDelayMaxMs: Math.round(delay.max / 1e6)
  }
  const faultText = `Faults ${rate * 100}% of requests/connections, even mix of ${faults.join(", ")} (latency ` +
    `${latency.latencyMs}+0–${latency.jitterMs} ms); `
  const report = markdown({
    title: `analytics-api chaos, ${settings.mode}, ${startedAt.toISOString()}`,
    settings: `${one === undefined ? "" : faultText}${concurrency} workers, keep-alive, client timeout ` +
      `${clientTimeoutMs / 1000} s; seed ${seed}; ${envText}; ClickHouse ${version}; ${machine.cores} cores, ` +
      `Node ${machine.node}. Harness event-loop delay p99 ${harness.eventLoopDelayP99Ms} ms, max ${harness.eventLoopDelayMaxMs} ms.`,
    single: one,
    hostile: one?.hostile,
    replicas: three === undefined ? undefined : {
      settings: `CLICKHOUSE_URL lists ${three.urls.length} servers (${three.urls.join(", ")}), each seeded with the ` +
        `demo rows; server ${three.victim} SIGKILLed after ${seconds(noFaultMs)} s, restarted on its port after ` +
        `${seconds(downMs)} s. From the end of the warm-up: ${three.okPct}% 200s.`,
      phases: three.phases,
      rejoin: three.rejoin,
      events: three.events
    },
    targets,
    notes
  })
  process.stdout.write(`${report}\n`)
  const replicaJson = three === undefined ? undefined : {
    urls: three.urls,
    killed: three.victim,
    phases: three.phases,
    okPct: three.okPct,
    rejoin: three.rejoin,
    events: three.events,
    timeline: three.timeline
  }
  const json = JSON.stringify(
    {
      startedAt,
      wallSeconds: seconds(now()),
      machine,
      settings,
      harness,
      phases: one?.phases,
      recovery: one?.recovery,
      events: one?.events,
      hostile: one?.hostile,
      replicas: replicaJson,
      targets,
      notes,
      timeline: one?.timeline
    },
    null,
    2
  )
  Fs.writeFileSync(Path.join(outDir, `${startedAt.toISOString().replace(/[:.]/g, "-")}.json`), json)
  Fs.writeFileSync(Path.join(outDir, "latest.json"), json)
  if (args.samples && one !== undefined) Fs.writeFileSync(Path.join(outDir, "samples.json"), JSON.stringify(one.samples))
  if (args.samples && three !== undefined) Fs.writeFileSync(Path.join(outDir, "replica-samples.json"), JSON.stringify(three.samples))
  Fs.writeFileSync(Path.join(outDir, "latest.md"), `${report}\n`)
  const missed = targets.filter((t) => t.pass === false).length
  log(`wrote chaos-results/latest.{json,md}; ${missed} target(s) missed`)
  return missed === 0
}

main().then(
  (passed) => {
    cleanup()
    process.exit(args.strict && !passed ? 1 : 0)
  },
  (error: unknown) => {
    log(`chaos failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    cleanup()
    process.exit(2)
  }
)
