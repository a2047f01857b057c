/**
 * The targets' ratios in interleaved rounds. On this shared machine one timed run moves by a tenth or more from one
 * minute to the next, so a ratio of two single runs minutes apart says little. Here each round starts every system
 * afresh and runs it at each c (a warm-up, then the timed run), one system after the other; a ratio is taken within
 * its round, and the figure is the median over the rounds. Each run also gives the server's CPU per answer (its
 * utime + stime over the timed run), which depends less on how wrk and the server share the cores.
 */
import * as Fs from "node:fs"
import { type Check, errorCount, type Load, run } from "./load.ts"
import { start, type System, type SystemId, type Target } from "./systems.ts"

export interface RoundRun {
  readonly round: number
  readonly system: SystemId
  readonly connections: number
  readonly reqPerSec: number
  readonly p99Ms: number | null
  /** Server CPU (the process itself) per right answer over the timed run; null where /proc cannot tell. */
  readonly cpuUsPerAnswer: number | null
  readonly errors: number
  readonly wrong: number
}

export interface RoundsReport {
  readonly rounds: number
  readonly seconds: number
  readonly warmupSeconds: number
  readonly runs: ReadonlyArray<RoundRun>
  /** Runs that did not happen: the system did not start, or the run failed. */
  readonly failures: ReadonlyArray<string>
}

/** The process's utime + stime in clock ticks (1/100 s on Linux). */
const cpuTicks = (pid: number): number | null => {
  try {
    const fields = Fs.readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ")
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return null
  }
}

export interface RoundsOptions {
  /** In the order each round runs them; with the connections each is measured at. */
  readonly plan: ReadonlyArray<{ readonly system: System; readonly connections: ReadonlyArray<number> }>
  readonly target: Target
  readonly rounds: number
  readonly seconds: number
  readonly warmupSeconds: number
  readonly timeoutS: number
  readonly check: (system: System) => Check
  /** Between a warm-up and its timed run, and after each run (queries left running are finished or killed). */
  readonly settle: () => Promise<unknown>
  readonly log: (line: string) => void
}

export const benchRounds = async (options: RoundsOptions): Promise<RoundsReport> => {
  const runs: Array<RoundRun> = []
  const failures: Array<string> = []
  for (let round = 1; round <= options.rounds; round++) {
    for (const { connections, system } of options.plan) {
      const running = await start(system, options.target).catch((error: unknown) => new Error(String(error)))
      if (running instanceof Error) {
        failures.push(`round ${round} (${system.id}): did not start: ${running.message}`)
        continue
      }
      try {
        for (const c of connections) {
          const load: Load = { kind: "duration", connections: c, seconds: options.seconds, warmupSeconds: options.warmupSeconds }
          let before: number | null = null
          const result = await run(running.url, load, options.check(system), options.timeoutS, async () => {
            await options.settle()
            before = cpuTicks(running.pid)
          }).catch((error: unknown) => new Error(String(error)))
          const after = cpuTicks(running.pid)
          await options.settle()
          if (result instanceof Error) {
            failures.push(`round ${round} (${system.id}) c=${c}: ${result.message}`)
            continue
          }
          const cpuUsPerAnswer = before === null || after === null || result.ok === 0
            ? null
            : Math.round(((after - before) * 10_000) / result.ok)
          runs.push({
            round,
            system: system.id,
            connections: c,
            reqPerSec: result.reqPerSec,
            p99Ms: result.p99Ms,
            cpuUsPerAnswer,
            errors: errorCount(result),
            wrong: result.wrong
          })
          options.log(
            `  round ${round} (${system.id}) c=${c}: ${result.reqPerSec} req/s, p99 ${result.p99Ms ?? "—"} ms, ` +
              `${cpuUsPerAnswer ?? "?"} µs CPU per answer`
          )
        }
      } finally {
        await running.stop()
      }
    }
  }
  return { rounds: options.rounds, seconds: options.seconds, warmupSeconds: options.warmupSeconds, runs, failures }
}

const median = (values: ReadonlyArray<number>): number | undefined => {
  if (values.length === 0) return undefined
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** A round is void at c when (d) did not reach 4× (g)'s req/s in it (the load generator set the pace). */
export const voidRound = (report: RoundsReport, round: number, c: number): boolean => {
  const of = (id: SystemId) => report.runs.find((r) => r.round === round && r.connections === c && r.system === id)
  const d = of("d")
  const g = of("g")
  return d !== undefined && g !== undefined && d.reqPerSec < 4 * g.reqPerSec
}

export interface RoundsRatio {
  /** Per round with both systems: `value(system) / value(base)`. */
  readonly perRound: ReadonlyArray<{ readonly round: number; readonly ratio: number; readonly void: boolean }>
  /** Over the rounds that are not void, or over all when every one is. */
  readonly median: number
  readonly allVoid: boolean
}

export const roundsRatio = (
  report: RoundsReport,
  id: SystemId,
  base: SystemId,
  c: number,
  value: (run: RoundRun) => number | null = (run) => run.reqPerSec
): RoundsRatio | undefined => {
  const perRound = [...new Set(report.runs.map((r) => r.round))].flatMap((round) => {
    const of = (system: SystemId) => report.runs.find((r) => r.round === round && r.connections === c && r.system === system)
    const a = of(id)
    const b = of(base)
    const x = a === undefined ? null : value(a)
    const y = b === undefined ? null : value(b)
    return x === null || y === null || y === 0 ? [] : [{ round, ratio: x / y, void: voidRound(report, round, c) }]
  })
  const valid = perRound.filter((r) => !r.void)
  const m = median((valid.length > 0 ? valid : perRound).map((r) => r.ratio))
  return m === undefined ? undefined : { perRound, median: m, allVoid: valid.length === 0 }
}

const perRoundText = (values: ReadonlyArray<number | null | undefined>, digits = 0) =>
  values.map((v) => (v === null || v === undefined ? "—" : v.toFixed(digits))).join(" / ")

/** One row per system and c: each round's figures in order, and the median ratio to (g) and to (j). */
export const roundsMarkdown = (report: RoundsReport): string => {
  const pairs = [...new Map(report.runs.map((r) => [`${r.system}:${r.connections}`, r] as const)).values()]
    .sort((a, b) => a.connections - b.connections)
  const rounds = Array.from({ length: report.rounds }, (_, i) => i + 1)
  const rows = pairs.map(({ connections: c, system }) => {
    const runs = rounds.map((round) => report.runs.find((r) => r.round === round && r.system === system && r.connections === c))
    const vs = (base: SystemId) => {
      const x = roundsRatio(report, system, base, c)
      return x === undefined ? "—" : `${perRoundText(x.perRound.map((r) => r.ratio), 2)} → **${x.median.toFixed(2)}×**`
    }
    const byCpu = roundsRatio(report, "g", system, c, (run) => run.cpuUsPerAnswer)
    return `| (${system}) | ${c} | ${perRoundText(runs.map((r) => r?.reqPerSec))} | ${perRoundText(runs.map((r) => r?.p99Ms))} | ` +
      `${perRoundText(runs.map((r) => r?.cpuUsPerAnswer))} | ${vs("g")} | ${byCpu === undefined ? "—" : `${byCpu.median.toFixed(2)}×`} | ` +
      `${runs.reduce((n, r) => n + (r?.errors ?? 0), 0)} / ${runs.reduce((n, r) => n + (r?.wrong ?? 0), 0)} |`
  })
  const voids = [...new Set(report.runs.map((r) => r.connections))].flatMap((c) =>
    rounds.filter((round) => voidRound(report, round, c)).map((round) => `round ${round} at c=${c}`)
  )
  // (e) over (h) in two steps: the client behind a bounded pool's queue (l), then the rest of the API's read.
  const lOverH = roundsRatio(report, "l", "h", 100)
  const eOverL = roundsRatio(report, "e", "l", 100)
  const inSteps = (x: RoundsRatio) => `${x.median.toFixed(2)}× (${perRoundText(x.perRound.map((r) => r.ratio), 2)})`
  const split = lOverH === undefined || eOverL === undefined
    ? ""
    : ` The uncoalesced read at c=100 in two steps: (l) over (h) ${inSteps(lOverH)}, (e) over (l) ${inSteps(eOverL)}.`
  return [
    "| system | c | req/s by round | p99 ms by round | server CPU µs per answer by round | ×(g) by round → median | ×(g) by CPU per answer (median) | errors / wrong |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows,
    "",
    `Each run: a ${report.warmupSeconds} s warm-up at its c, discarded, then ${report.seconds} s timed. ` +
    `Void rounds ((d) under 4× (g)): ${voids.length === 0 ? "none" : voids.join(", ")}; a median is over the rounds that are not void.` +
      (report.failures.length === 0 ? "" : ` Failed: ${report.failures.join("; ")}.`) + split
  ].join("\n")
}
