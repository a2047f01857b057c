/** The targets the API is held to, each checked against the same run's figures on the 6-row table. */
import type { IdleReport } from "./idle.ts"
import { errorCount, type RunResult } from "./load.ts"
import type { Outcome, ScenarioReport } from "./report.ts"
import { type RoundsReport, roundsRatio } from "./rounds.ts"
import type { SystemId } from "./systems.ts"

export interface TargetRow {
  readonly target: string
  readonly measured: string
  readonly status: "met" | "NOT met" | "not measured"
}

const fixed = (n: number, digits = 2) => n.toFixed(digits)

const row = (target: string, measure: () => { measured: string; met: boolean } | undefined, voidRun = false): TargetRow => {
  const m = measure()
  return m === undefined
    ? { target, measured: "—", status: "not measured" }
    : { target, measured: `${m.measured}${voidRun ? " (VOID run)" : ""}`, status: m.met ? "met" : "NOT met" }
}

export const targets = (
  scenarios: ReadonlyArray<ScenarioReport>,
  table: string,
  idleReports: ReadonlyArray<IdleReport> = [],
  rounds?: RoundsReport
): ReadonlyArray<TargetRow> => {
  /** The outcome of a system in the timed run at c=load, or in the cold burst. */
  const pick = (load: number | "cold", id: SystemId): { outcome?: Outcome; void: boolean } => {
    const s = scenarios.find((s) =>
      s.table === table &&
      (load === "cold" ? s.load.kind === "burst" && s.load.phase === "cold" : s.load.kind === "duration" && s.load.connections === load)
    )
    const outcome = s?.outcomes.find((o) => o.system === id)
    return { ...(outcome === undefined ? {} : { outcome }), void: s?.void === true }
  }
  const result = (load: number | "cold", id: SystemId): RunResult | undefined => pick(load, id).outcome?.result
  const voidAt = (c: number) => pick(c, "d").void

  /** `x×` per round (void ones marked) and their median, as the rows show them. */
  const inRounds = (ratio: NonNullable<ReturnType<typeof roundsRatio>>) =>
    `median of ${ratio.perRound.length} rounds (${ratio.perRound.map((r) => `${fixed(r.ratio)}${r.void ? " void" : ""}`).join(", ")})`

  // From the interleaved rounds when the run has them (medians of ratios within a round), else from the one run.
  const throughput = (id: SystemId, base: SystemId, c: number, at: number, exact: boolean) => {
    const title = `(${id}) ≥ ${at}× (${base}) req/s at c=${c}${exact ? ", 0 errors, 0 wrong" : ""}`
    const ratio = rounds === undefined ? undefined : roundsRatio(rounds, id, base, c)
    if (rounds !== undefined && ratio !== undefined) {
      const mine = rounds.runs.filter((r) => r.system === id && r.connections === c)
      const errors = mine.reduce((n, r) => n + r.errors, 0)
      const wrong = mine.reduce((n, r) => n + r.wrong, 0)
      const byCpu = roundsRatio(rounds, base, id, c, (r) => r.cpuUsPerAnswer)
      return row(title, () => ({
        measured: `${fixed(ratio.median, 3)}×, ${inRounds(ratio)}` +
          (byCpu === undefined ? "" : `; by server CPU per answer ${fixed(byCpu.median)}×`) +
          (exact ? `; ${errors} errors, ${wrong} wrong` : ""),
        met: ratio.median >= at && (!exact || (errors === 0 && wrong === 0))
      }), ratio.allVoid)
    }
    return row(title, () => {
      const r = result(c, id)
      const b = result(c, base)
      if (r === undefined || b === undefined || b.reqPerSec === 0) return undefined
      const x = r.reqPerSec / b.reqPerSec
      const clean = errorCount(r) === 0 && r.wrong === 0
      return {
        measured: `${fixed(x)}× (${r.reqPerSec} vs ${b.reqPerSec})` +
          (exact ? `, ${errorCount(r)} errors, ${r.wrong} wrong` : ""),
        met: x >= at && (!exact || clean)
      }
    }, voidAt(c))
  }

  const p99Title = "(f) p99 at c=1000 ≤ 1.5× (g)'s p99"
  const p99InRounds = rounds === undefined ? undefined : roundsRatio(rounds, "f", "g", 1000, (r) => r.p99Ms)
  const p99 = p99InRounds !== undefined
    ? row(p99Title, () => ({ measured: `${fixed(p99InRounds.median, 3)}×, ${inRounds(p99InRounds)}`, met: p99InRounds.median <= 1.5 }), p99InRounds.allVoid)
    : row(p99Title, () => {
      const f = result(1000, "f")?.p99Ms
      const g = result(1000, "g")?.p99Ms
      if (f === undefined || f === null || g === undefined || g === null || g === 0) return undefined
      return { measured: `${fixed(f / g)}× (${f} ms vs ${g} ms)`, met: f <= 1.5 * g }
    }, voidAt(1000))

  const cold = result("cold", "f")
  const coldD = result("cold", "d")
  const burstSize = cold === undefined ? "" : ` of ${cold.ok + cold.wrong + errorCount(cold)}`
  const idle = scenarios.filter((s) => s.table === table).flatMap((s) => s.outcomes)
    .find((o) => o.system === "f" && typeof o.idleRssMb === "number")?.idleRssMb
  const idleOf = (id: SystemId) => idleReports.find((r) => r.system === id && r.settledMb !== null)
  const settled = idleOf("f")
  const settledG = idleOf("g")

  return [
    throughput("i", "g", 100, 0.9, false),
    throughput("i", "g", 1000, 0.9, false),
    throughput("f", "g", 100, 0.8, true),
    throughput("f", "g", 1000, 0.8, true),
    throughput("e", "h", 100, 0.9, false),
    p99,
    row(`(f) cold burst${burstSize}: all exact, done within 1.5× (d)'s time`, () => {
      if (cold === undefined || coldD === undefined || coldD.elapsedS === 0) return undefined
      const all = cold.ok + cold.wrong + errorCount(cold)
      const x = cold.elapsedS / coldD.elapsedS
      return {
        measured: `${cold.ok} of ${all} exact, ${cold.elapsedS} s vs ${coldD.elapsedS} s: ${fixed(x)}×`,
        met: cold.ok === all && x <= 1.5
      }
    }),
    // Idle is what the process holds once it has been idle (the idle readings); without them, 1 s after ready.
    row("(f) idle RSS ≤ 110 MB", () =>
      settled?.settledMb !== undefined && settled.settledMb !== null
        ? {
          measured: `${settled.settledMb} MB after ${settled.windowS} s idle (${settled.atStartMb} MB 1 s after ready)` +
            (settledG === undefined ? "" : `; (g) ${settledG.settledMb} MB (${settledG.atStartMb} MB)`),
          met: settled.settledMb <= 110
        }
        : idle === undefined || idle === null
        ? undefined
        : { measured: `${idle} MB 1 s after ready`, met: idle <= 110 }),
    row("(f) peak RSS during c=1000 ≤ 200 MB", () => {
      const peak = pick(1000, "f").outcome?.peakRssMb
      return peak === undefined || peak === null ? undefined : { measured: `${peak} MB`, met: peak <= 200 }
    })
  ]
}
