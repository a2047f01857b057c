/**
 * Idle memory: (f) and (g) started side by side and left alone, their VmRSS read every second. A Node process
 * keeps the pages its start-up touched (most of the young generation, grown while modules loaded) until V8's
 * memory reducer, which waits for the process to go quiet, collects and gives them back: 10 to 30 s after
 * start here. So the figure 1 s after ready is start-up's; the one at the end of the window is what an idle
 * service holds.
 */
import { rssMb, start, type System, type Target } from "./systems.ts"

export interface IdleReport {
  readonly system: System["id"]
  readonly name: string
  /** VmRSS 1 s after ready (the same reading as the timed runs' idle RSS). */
  readonly atStartMb: number | null
  /** VmRSS at the end of the window. */
  readonly settledMb: number | null
  /** Seconds after ready from which every reading stayed within 2 MB of the last one. */
  readonly settledAfterS: number | null
  readonly windowS: number
  readonly failure?: string
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export const benchIdle = async (
  pair: ReadonlyArray<System>,
  target: Target,
  windowS: number
): Promise<ReadonlyArray<IdleReport>> => {
  const started = await Promise.all(pair.map((system) =>
    start(system, target).catch((error: unknown) => new Error(error instanceof Error ? error.message : String(error)))
  ))
  try {
    // Index s holds the reading s + 1 seconds after ready; the first is start's own.
    const readings = started.map((r) => (r instanceof Error ? [] : [r.idleRssMb]))
    for (let s = 2; s <= windowS; s++) {
      await sleep(1000)
      started.forEach((r, i) => {
        if (!(r instanceof Error)) readings[i]!.push(rssMb(r.pid))
      })
    }
    return pair.map((system, i): IdleReport => {
      const running = started[i]!
      const base = { system: system.id, name: system.name, windowS }
      if (running instanceof Error) {
        return { ...base, atStartMb: null, settledMb: null, settledAfterS: null, failure: running.message }
      }
      const mine = readings[i]!
      const last = mine.at(-1) ?? null
      const stable = last === null ? -1 : mine.findIndex((_, at) => mine.slice(at).every((mb) => mb !== null && Math.abs(mb - last) <= 2))
      return { ...base, atStartMb: mine[0] ?? null, settledMb: last, settledAfterS: stable < 0 ? null : stable + 1 }
    })
  } finally {
    await Promise.all(started.map((r) => (r instanceof Error ? undefined : r.stop())))
  }
}
