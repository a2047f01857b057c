/** Numbers from the samples of a chaos run, and the Markdown report. */
import type { Hostile } from "./hostile.ts"
import type { Sample } from "./load.ts"
import type { Rejoin } from "./replicas.ts"

export interface PhaseStats {
  readonly phase: string
  readonly seconds: number
  readonly requests: number
  readonly ok: number
  readonly wrong: number
  readonly successPct: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
  /** Outcome keys ("200", "503 unavailable", "timeout", …) by count, most frequent first. */
  readonly statuses: Record<string, number>
  readonly peakRssMb: number | null
}

/** Nearest rank over the latencies of every request of the phase, failed ones included. */
const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0

const round1 = (n: number) => Math.round(n * 10) / 10

export const countBy = (keys: Iterable<string>): Record<string, number> => {
  const counts = new Map<string, number>()
  for (const key of keys) counts.set(key, (counts.get(key) ?? 0) + 1)
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]))
}

export const phaseStats = (
  samples: ReadonlyArray<Sample>,
  phase: string,
  seconds: number,
  peakRssMb: number | null
): PhaseStats => {
  const mine = samples.filter((s) => s.phase === phase)
  const latencies = mine.map((s) => s.ms).sort((a, b) => a - b)
  const ok = mine.filter((s) => s.outcome === "ok").length
  return {
    phase,
    seconds: round1(seconds),
    requests: mine.length,
    ok,
    wrong: mine.filter((s) => s.outcome === "wrong").length,
    successPct: mine.length === 0 ? 0 : Math.floor((ok / mine.length) * 10000) / 100,
    p50Ms: Math.round(percentile(latencies, 50)),
    p99Ms: Math.round(percentile(latencies, 99)),
    maxMs: Math.round(latencies.at(-1) ?? 0),
    statuses: countBy(mine.map((s) => s.key)),
    peakRssMb
  }
}

/**
 * Recovery: the start of the first `windowMs` window, counted from `fromMs`, such that every request of the phase
 * sent in that window or later succeeded (0 when none failed). Null when the last window still had a failure, or
 * when the phase had no request at all after that point (nothing proved the recovery).
 */
export interface Recovery {
  readonly ms: number | null
  /** Requests sent before `fromMs` may still fail after it: until how long after it the last one did. */
  readonly earlierFailuresUntilMs: number
}

export const recovery = (
  samples: ReadonlyArray<Sample>,
  phase: string,
  fromMs: number,
  untilMs: number,
  windowMs = 100
): Recovery => {
  const after = samples.filter((s) => s.phase === phase && s.startMs >= fromMs)
  const lastFailure = after.reduce((last, s) => (s.outcome === "ok" ? last : Math.max(last, s.startMs)), -Infinity)
  const recovered = lastFailure === -Infinity ? 0 : (Math.floor((lastFailure - fromMs) / windowMs) + 1) * windowMs
  const proved = after.some((s) => s.startMs >= fromMs + recovered)
  const earlier = samples.filter((s) => s.startMs < fromMs && s.outcome !== "ok" && s.startMs + s.ms <= untilMs)
  const lastEnd = earlier.reduce((last, s) => Math.max(last, s.startMs + s.ms - fromMs), 0)
  return { ms: fromMs + recovered < untilMs && proved ? recovered : null, earlierFailuresUntilMs: Math.round(lastEnd) }
}

/** Per second of the run, by when requests were sent: for looking at a recovery in detail. */
export const perSecond = (samples: ReadonlyArray<Sample>) => {
  const bySecond = new Map<number, Array<Sample>>()
  for (const s of samples) {
    const second = Math.floor(s.startMs / 1000)
    const list = bySecond.get(second) ?? []
    list.push(s)
    bySecond.set(second, list)
  }
  return [...bySecond].sort((a, b) => a[0] - b[0]).map(([second, list]) => ({
    second,
    phase: [...new Set(list.map((s) => s.phase))].join(" + "),
    requests: list.length,
    ok: list.filter((s) => s.outcome === "ok").length,
    failed: countBy(list.filter((s) => s.outcome !== "ok").map((s) => s.key))
  }))
}

export interface Target {
  readonly name: string
  readonly measured: string
  /** "skip": not measured on purpose (e.g. --hostile 0). */
  readonly pass: boolean | "skip"
}

const cell = (text: string) => text.replace(/\|/g, "\\|")
const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string | number>>) =>
  [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((row) => `| ${row.map((c) => cell(String(c))).join(" | ")} |`)
  ].join("\n")

const statuses = (counts: Record<string, number>) =>
  Object.entries(counts).map(([key, n]) => `${key}: ${n}`).join(", ")

export interface Report {
  readonly title: string
  readonly settings: string
  /** One ClickHouse behind the fault proxy: faults, then killed and restarted. */
  readonly single: {
    readonly phases: ReadonlyArray<PhaseStats>
    readonly recovery: { readonly faults: Recovery; readonly restart: Recovery | undefined }
    readonly events: ReadonlyArray<string>
  } | undefined
  readonly hostile: Hostile | undefined
  readonly replicas: {
    readonly settings: string
    readonly phases: ReadonlyArray<PhaseStats>
    readonly rejoin: Rejoin
    readonly events: ReadonlyArray<string>
  } | undefined
  readonly targets: ReadonlyArray<Target>
  readonly notes: ReadonlyArray<string>
}

const ms = (r: Recovery | undefined) =>
  r === undefined
    ? "n/a"
    : `${r.ms === null ? "not recovered" : `${r.ms} ms`}` +
      (r.earlierFailuresUntilMs > 0 ? ` (requests sent before failed until +${r.earlierFailuresUntilMs} ms)` : "")

const phaseTable = (phases: ReadonlyArray<PhaseStats>) =>
  table(
    ["phase", "s", "requests", "success", "wrong", "p50 ms", "p99 ms", "max ms", "peak RSS MB", "answers"],
    phases.map((p) => [
      p.phase,
      p.seconds,
      p.requests,
      `${p.successPct}%`,
      p.wrong,
      p.p50Ms,
      p.p99Ms,
      p.maxMs,
      p.peakRssMb ?? "n/a",
      statuses(p.statuses)
    ])
  )

const after = (ms: number | null) => (ms === null ? "not seen" : `${ms} ms`)

export const markdown = (r: Report): string => {
  const lines = [`# ${r.title}`, "", r.settings]
  if (r.single !== undefined) {
    lines.push(
      "",
      "## Load (GET /api/metrics, every 200 checked)",
      "",
      "A request counts in the phase it was sent in, except one still in flight when ClickHouse is killed: it counts " +
        "there. Success: 200 with the right total. Latencies include failed requests.",
      "",
      phaseTable(r.single.phases),
      "",
      `Recovery (first 100 ms window from which every request succeeded): after faults cleared ${ms(r.single.recovery.faults)}, ` +
        `after ClickHouse answered /ping again ${ms(r.single.recovery.restart)}.`,
      "",
      ...r.single.events.map((e) => `- ${e}`)
    )
  }
  if (r.hostile !== undefined) {
    const h = r.hostile
    lines.push(
      "",
      `## Hostile requests (${h.requests} in ${h.seconds} s)`,
      "",
      table(["answer", "count"], Object.entries(h.statuses)),
      "",
      `5xx: ${h.fiveXx}; non-JSON answers: ${h.nonJson}; connection drops: ${Object.values(h.drops).reduce((a, b) => a + b, 0)}` +
        `${Object.keys(h.drops).length > 0 ? ` (${statuses(h.drops)})` : ""}; no answer within the timeout: ${h.noAnswer}`
    )
    const examples = Object.entries(h.examples)
    if (examples.length > 0) {
      lines.push("", "Examples (first bytes of the request):", "")
      for (const [key, list] of examples) lines.push(`- ${key}: ${list.map((e) => `\`${e.replace(/`/g, "'")}\``).join(" · ")}`)
    }
  }
  if (r.replicas !== undefined) {
    const x = r.replicas
    lines.push(
      "",
      "## Replicas (three ClickHouse servers, one SIGKILLed mid-load and restarted on its port)",
      "",
      `${x.settings} A request counts in the phase it was sent in, except one still in flight at the kill: it counts ` +
        "there. Success: 200 with the right total.",
      "",
      phaseTable(x.phases),
      "",
      `Back in rotation after the killed server answered /ping again: ${after(x.rejoin.queriesMs)} by its own count of ` +
        `started queries (reads beyond our polls); ${after(x.rejoin.readyzMs)} by /readyz listing it "closed" ` +
        "(polled through the loaded API: counted when the answer arrived).",
      "",
      ...x.events.map((e) => `- ${e}`)
    )
  }
  lines.push("", "## Targets", "", table(["target", "measured", "result"], r.targets.map((t) => [t.name, t.measured, t.pass === "skip" ? "SKIP" : t.pass ? "PASS" : "FAIL"])))
  if (r.notes.length > 0) lines.push("", ...r.notes.map((n) => `- ${n}`))
  return lines.join("\n")
}
