/**
 * The replica scenario: three ClickHouse servers holding the same rows, the API given all three in CLICKHOUSE_URL,
 * closed-loop load; one server SIGKILLed mid-load, restarted on its port after `downMs`, and the load goes on. It
 * measures how long the restarted server takes, once it answers /ping, to get reads again.
 */
import { type Sample, startLoad } from "./load.ts"
import { perSecond, type PhaseStats, phaseStats } from "./report.ts"
import * as System from "./system.ts"

export interface ReplicaOptions {
  readonly dirs: ReadonlyArray<string>
  /** Which of `dirs` is killed. */
  readonly victim: number
  readonly main: string
  readonly log: string
  readonly env: Record<string, string>
  readonly concurrency: number
  readonly clientTimeoutMs: number
  readonly expected: number
  readonly warmUpMs: number
  readonly beforeMs: number
  readonly downMs: number
  readonly afterMs: number
  readonly now: () => number
  readonly say: (line: string) => void
  /** Told the API's pid once it runs (for the watchdog). */
  readonly onApi: (pid: number) => void
}

export interface Rejoin {
  /** From the killed server answering /ping to reads reaching it: its `Query` count growing beyond our own polls. */
  readonly queriesMs: number | null
  /** From /ping to /readyz listing it "closed", counted when that answer arrived (through the loaded API). */
  readonly readyzMs: number | null
}

export interface ReplicaRun {
  readonly urls: ReadonlyArray<string>
  readonly version: string
  readonly phases: ReadonlyArray<PhaseStats>
  readonly rejoin: Rejoin
  readonly events: ReadonlyArray<string>
  readonly crashed: boolean
  readonly samples: ReadonlyArray<Sample>
  readonly timeline: ReturnType<typeof perSecond>
}

const queriesStarted = async (url: string) =>
  Number((await System.query(url, "SELECT value FROM system.events WHERE event = 'Query'")).trim())

const readyzState = async (api: string, replica: string): Promise<string | undefined> => {
  try {
    const response = await fetch(`${api}/readyz`, { signal: AbortSignal.timeout(2000) })
    const body = await response.json() as { replicas?: ReadonlyArray<{ url: string; state: string }> }
    return body.replicas?.find((r) => r.url === new URL(replica).origin)?.state
  } catch {
    return undefined
  }
}

/** Polls `check` every `everyMs` until it is true (the time it was, by `now`) or `ms` have passed (null). */
const until = async (check: () => Promise<boolean>, now: () => number, ms: number, everyMs: number) => {
  const deadline = now() + ms
  while (now() < deadline) {
    if (await check().catch(() => false)) return now()
    await System.sleep(everyMs)
  }
  return null
}

export const runReplicas = async (o: ReplicaOptions): Promise<ReplicaRun> => {
  const { now, say } = o
  say(`starting ${o.dirs.length} ClickHouse servers`)
  const servers = await Promise.all(o.dirs.map((dir) => {
    System.stopClickHouse(dir)
    return System.startClickHouse(dir, 100)
  }))
  const urls = servers.map((s) => s.url)
  for (const url of urls) {
    const total = await System.seed(url)
    if (total !== o.expected) throw new Error(`seeded total on ${url} is ${total}, not ${o.expected}`)
  }
  const version = (await System.query(urls[0]!, "SELECT version()")).trim()
  const api = await System.startApi(o.main, o.log, { ...o.env, CLICKHOUSE_URL: urls.join(",") }, now)
  o.onApi(api.pid)
  say(`replicas ${urls.join(", ")}, API ${api.url} (pid ${api.pid})`)

  const { enter, marks, phase } = System.phases(api.pid, now, (name) => say(`replicas: ${name}`))
  const alive = () => api.exit() === undefined
  const pause = (ms: number) => Promise.race([System.sleep(Math.max(0, ms)), api.exited])
  const events: Array<string> = []
  const seconds = (ms: number) => (Math.round(ms / 100) / 10).toFixed(1)

  enter("warm-up")
  const load = startLoad({
    url: `${api.url}/api/metrics`,
    concurrency: o.concurrency,
    timeoutMs: o.clientTimeoutMs,
    expected: o.expected,
    now,
    phase
  })
  await pause(o.warmUpMs)
  enter("before")
  await pause(o.beforeMs)

  const victim = servers[o.victim]!
  let killedAt: number | undefined
  let rejoin: Rejoin = { queriesMs: null, readyzMs: null }
  let rejoinedAt: number | undefined
  let baseline = 0
  let polls = 0
  if (alive()) {
    enter("replica down")
    killedAt = now()
    const pid = await System.killClickHouse(victim)
    const whileDown = System.sleep(o.downMs / 2).then(() => readyzState(api.url, victim.url))
    await pause(o.downMs - (now() - killedAt))
    const restartAt = now()
    const restart = System.startClickHouse(victim.dir, 100, victim.port)
      .then(() => undefined, (error: unknown) => (error instanceof Error ? error : new Error(String(error))))
    const pingAt = await until(() => System.pings(victim.url), now, 60_000, 10)
    if (pingAt === null) throw new Error(`${victim.url} did not answer /ping within 60 s of its restart`)
    enter("after restart")
    // Each poll of the count is a query of its own; anything beyond them is a read (the API probes with /ping,
    // which is not a query, and detects a server's version and settings once, before the kill).
    baseline = await queriesStarted(victim.url).catch(() => 0)
    const [reached, ready] = await Promise.all([
      until(async () => (await queriesStarted(victim.url)) - baseline - ++polls >= 1, now, 5000, 10),
      until(async () => (await readyzState(api.url, victim.url)) === "closed", now, 5000, 20)
    ])
    rejoin = {
      queriesMs: reached === null ? null : Math.round(reached - pingAt),
      readyzMs: ready === null ? null : Math.round(ready - pingAt)
    }
    if (reached !== null) rejoinedAt = reached
    const restartError = await restart
    if (restartError !== undefined) throw restartError
    const stateWhileDown = await whileDown
    events.push(
      `replica ${o.victim + 1} (${victim.url}, pid ${pid}) SIGKILLed at ${seconds(killedAt)} s; /readyz listed it ` +
        `"${stateWhileDown ?? "n/a"}" ${seconds(o.downMs / 2)} s later; restarted at ${seconds(restartAt)} s, ` +
        `answered /ping at ${seconds(pingAt)} s (${seconds(pingAt - killedAt)} s down)`
    )
    await pause(o.afterMs - (now() - pingAt))
  }
  await load.stop()
  enter("")

  const crash = api.exit()
  if (crash === undefined) {
    const stopped = await api.stop(15_000)
    events.push(`API alive throughout; SIGTERM → exited in ${stopped.stopMs} ms (${stopped.signal ?? `code ${stopped.code}`})`)
  } else {
    events.push(`API CRASHED at ${seconds(crash.atMs)} s: ${crash.signal ?? `exit code ${crash.code}`}; see ${api.log}`)
  }
  const counts = await Promise.all(urls.map((url) => queriesStarted(url).catch(() => null)))
  const victimCount = counts[o.victim]
  if (rejoinedAt !== undefined && victimCount != null) {
    // Less our polls, and the one just now.
    const reads = victimCount - baseline - polls - 1
    const s = ((marks.at(-1)?.endMs ?? now()) - rejoinedAt) / 1000
    events.push(
      `after the restart the server started ${reads} reads in ${s.toFixed(1)} s (${(reads / s).toFixed(1)}/s): ` +
        "the Query-count figure includes the wait for the first read routed to it once it is back in rotation"
    )
  }
  events.push(
    `queries each server started since it last started: ${counts.map((n, i) => `${i + 1}: ${n ?? "n/a"}`).join(", ")}` +
      ` (${o.victim + 1} restarted)`
  )
  for (const dir of o.dirs) System.stopClickHouse(dir)

  // A request in flight when the replica dies counts in that phase, not in the calm one before.
  const cut = killedAt ?? Infinity
  const samples = load.samples.map((s) =>
    s.startMs < cut && s.startMs + s.ms > cut ? { ...s, phase: "replica down" } : s
  )
  return {
    urls,
    version,
    phases: marks.map((m) => phaseStats(samples, m.phase, (m.endMs - m.startMs) / 1000, m.peakRssMb)),
    rejoin,
    events,
    crashed: crash !== undefined,
    samples,
    timeline: perSecond(samples)
  }
}
