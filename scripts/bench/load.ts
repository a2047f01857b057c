/**
 * The loads of the bench and what a run of one yields. A timed run is wrk (wrk.ts): first a warm-up run of
 * the same connections for `warmupSeconds`, discarded, then the timed run on new connections. A burst is
 * Node's own (burst.ts): wrk cannot send exactly one request per connection.
 */
import { burst } from "./burst.ts"
import { wrk } from "./wrk.ts"

export type Load =
  | {
    readonly kind: "duration"
    readonly connections: number
    readonly seconds: number
    readonly warmupSeconds: number
  }
  /** cold: the first requests of the path on a fresh process; warm: after the timed runs on the same process. */
  | { readonly kind: "burst"; readonly connections: number; readonly phase: "cold" | "warm" }

/** What a right 2xx body is: one whose "total" is within 1e-9 relative of `total`, or exactly `body`. */
export type Check =
  | { readonly kind: "total"; readonly total: number }
  | { readonly kind: "body"; readonly body: string }

export interface RunResult {
  /** Right answers per second: over the run, or for a burst over the time until all were answered. */
  readonly reqPerSec: number
  /** Over every answer (any status); null when there was none. */
  readonly p50Ms: number | null
  readonly p99Ms: number | null
  readonly maxMs: number | null
  readonly latencySamples: number
  /** 2xx with the right body. */
  readonly ok: number
  /** 2xx with another body. */
  readonly wrong: number
  /**
   * timeouts: answers later than the timeout (wrk) or none within it (burst); socket: connect, read and write
   * errors; unanswered: burst connections closed before a full answer.
   */
  readonly errors: {
    readonly non2xx: number
    readonly timeouts: number
    readonly socket: number
    readonly unanswered: number
  }
  /** The non-2xx answers by status. */
  readonly statuses: Readonly<Record<string, number>>
  /** Length of a timed run; time until the last request was answered or failed for a burst. */
  readonly elapsedS: number
}

export const errorCount = (r: RunResult) =>
  r.errors.non2xx + r.errors.timeouts + r.errors.socket + r.errors.unanswered

/** Nearest rank: the smallest sample with at least p% of the samples at or below it. */
export const percentile = (sorted: ReadonlyArray<number>, p: number): number | null =>
  sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? null

/** The same rule as check.lua. */
export const matches = (check: Check, body: string): boolean => {
  if (check.kind === "body") return body === check.body
  const total = Number(/"total":\s*(-?[\d.eE+-]+)/.exec(body)?.[1] ?? NaN)
  return Math.abs(total - check.total) <= 1e-9 * Math.max(1, Math.abs(check.total))
}

/** `settle` runs between the warm-up and the timed run: the warm-up leaves up to one request per connection behind. */
export const run = async (
  url: string,
  load: Load,
  check: Check,
  timeoutS: number,
  settle: () => Promise<unknown> = async () => {}
): Promise<RunResult> => {
  if (load.kind === "burst") return burst(url, load.connections, check, timeoutS)
  if (load.warmupSeconds > 0) {
    await wrk(url, load.connections, load.warmupSeconds, check, timeoutS)
    await settle()
  }
  return wrk(url, load.connections, load.seconds, check, timeoutS)
}
