/**
 * One autocannon run with every response checked and every latency kept. Latency is autocannon's own
 * per-request responseTime (hrtime from writing the request to its last byte); percentiles are nearest-rank
 * over the right answers. A timed run first loads the system for `warmupSeconds` on the same connections;
 * then what completes inside the window counts, and the latencies are those of the right answers that were
 * also sent inside it (not the cold first requests of the warm-up). A burst counts everything.
 */
import autocannon from "autocannon"

export type Load =
  | {
    readonly kind: "duration"
    readonly connections: number
    readonly seconds: number
    readonly warmupSeconds: number
  }
  | { readonly kind: "burst"; readonly connections: number }

export interface RunResult {
  /** Right answers per second: over the fixed window, or for a burst over the time until all were answered. */
  readonly reqPerSec: number
  /** Null when no request sent inside the window was answered before its end. */
  readonly p50Ms: number | null
  readonly p99Ms: number | null
  readonly maxMs: number | null
  readonly latencySamples: number
  /** 2xx with the right total. */
  readonly ok: number
  /** 2xx with another total or an unreadable body. */
  readonly wrong: number
  /** unanswered: burst requests that got neither an answer nor an error (connection closed, or cut by the cap). */
  readonly errors: {
    readonly non2xx: number
    readonly timeouts: number
    readonly socket: number
    readonly unanswered: number
  }
  /** The non-2xx answers by status. */
  readonly statuses: Readonly<Record<string, number>>
  /** Window length for a timed run; time until the last request was answered or failed for a burst. */
  readonly elapsedS: number
}

export const errorCount = (r: RunResult) =>
  r.errors.non2xx + r.errors.timeouts + r.errors.socket + r.errors.unanswered

/** Nearest rank: the smallest sample with at least p% of the samples at or below it. */
export const percentile = (sorted: ReadonlyArray<number>, p: number): number | null =>
  sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? null

/** Total in the body equals expected within 1e-9 relative. */
export const checker = (expected: number) => (body: string): boolean => {
  try {
    const total: unknown = JSON.parse(body).total
    return typeof total === "number" && Math.abs(total - expected) <= 1e-9 * Math.max(1, Math.abs(expected))
  } catch {
    return false
  }
}

const round = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : Math.round(ms * 10) / 10)

export const run = (
  url: string,
  load: Load,
  check: (body: string) => boolean,
  timeoutS: number
): Promise<RunResult> =>
  new Promise((resolve, reject) => {
    const latencies: Array<number> = []
    const errors = { non2xx: 0, timeouts: 0, socket: 0, unanswered: 0 }
    const statuses: Record<string, number> = {}
    let ok = 0
    let wrong = 0
    let lastBodyRight = false
    const startedAt = performance.now()
    const windowStart = load.kind === "duration" ? startedAt + load.warmupSeconds * 1000 : startedAt
    const windowEnd = load.kind === "duration" ? windowStart + load.seconds * 1000 : Infinity
    let lastAt = startedAt
    const counted = () => {
      const now = performance.now()
      if (now < windowStart || now > windowEnd) return false
      lastAt = now
      return true
    }
    const instance = autocannon(
      {
        url,
        connections: load.connections,
        timeout: timeoutS,
        sampleInt: 100,
        ...(load.kind === "duration" ? { duration: load.warmupSeconds + load.seconds } : { amount: load.connections }),
        requests: [{
          onResponse: (status, body) => {
            lastBodyRight = status >= 200 && status < 300 && check(body)
          }
        }]
      },
      (error) => {
        clearTimeout(cap)
        if (error) return reject(error)
        latencies.sort((a, b) => a - b)
        const answered = ok + wrong + errors.non2xx + errors.timeouts + errors.socket
        if (load.kind === "burst") errors.unanswered = Math.max(0, load.connections - answered)
        const elapsedS = load.kind === "duration" ? load.seconds : (lastAt - startedAt) / 1000
        resolve({
          reqPerSec: Math.round((ok / Math.max(elapsedS, 1e-3)) * 10) / 10,
          p50Ms: round(percentile(latencies, 50)),
          p99Ms: round(percentile(latencies, 99)),
          maxMs: round(latencies.at(-1)),
          latencySamples: latencies.length,
          ok,
          wrong,
          errors,
          statuses,
          elapsedS: Math.round(elapsedS * 100) / 100
        })
      }
    )
    // onResponse runs just before this event, for the same response
    instance.on("response", (_client, status, _bytes, ms) => {
      if (!counted()) return
      const sentInWindow = lastAt - ms >= windowStart
      if (status < 200 || status >= 300) {
        errors.non2xx++
        statuses[status] = (statuses[status] ?? 0) + 1
      } else if (lastBodyRight) {
        ok++
        if (sentInWindow) latencies.push(ms)
      } else wrong++
    })
    instance.on("reqError", (error) => {
      if (!counted()) return
      if (error instanceof Error && error.message === "request timed out") errors.timeouts++
      else errors.socket++
    })
    const capMs = (load.kind === "duration" ? load.warmupSeconds + load.seconds : timeoutS) * 1000 + 15_000
    const cap = setTimeout(() => instance.stop(), capMs)
  })
