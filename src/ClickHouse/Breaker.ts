import * as Effect from "effect/Effect"

/**
 * A replica's circuit breaker: `threshold` failures in a row open it (tries go to the other replicas); while open,
 * a probe (a ping) runs after a jittered back-off that doubles up to `maxBackoffMs`, half-opening it for the
 * probe's length; a probe or a try that succeeds closes it. So a replica back up is back in rotation within
 * about `maxBackoffMs` plus one ping of answering again, and a dead one costs the healthy ones nothing.
 * What counts as a failure is the caller's call (a broken connection, a try that lost to its hedge), not an
 * error the server itself answered with: that replica is up.
 */
export type BreakerState = "closed" | "open" | "half-open"

export interface Breaker {
  readonly state: () => BreakerState
  readonly succeeded: () => void
  readonly failed: () => void
  /** Opens it now (a replica found down at startup). */
  readonly trip: () => void
}

export interface BreakerOptions {
  readonly threshold: number
  readonly baseBackoffMs: number
  readonly maxBackoffMs: number
  /** Whether the replica answers now. */
  readonly probe: Effect.Effect<boolean>
  /** Runs the probe loop in the background, owned by whoever owns the breaker. */
  readonly fork: (loop: Effect.Effect<void>) => void
  readonly onChange?: (state: BreakerState) => void
}

const jittered = (ms: number) => ms * (0.8 + 0.4 * Math.random())

export const makeBreaker = (options: BreakerOptions): Breaker => {
  let state: BreakerState = "closed"
  let failures = 0
  let probing = false

  const set = (next: BreakerState) => {
    if (next === state) return
    state = next
    options.onChange?.(next)
  }

  const probeLoop = (attempt: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (state === "closed") return Effect.void
      const backoff = jittered(Math.min(options.baseBackoffMs * 2 ** attempt, options.maxBackoffMs))
      return Effect.sleep(backoff).pipe(
        Effect.zipRight(Effect.suspend(() => {
          if (state === "closed") return Effect.succeed(true)
          set("half-open")
          return options.probe
        })),
        Effect.flatMap((up) => {
          if (up) {
            succeeded()
            return Effect.void
          }
          if (state === "half-open") set("open")
          return probeLoop(attempt + 1)
        })
      )
    })

  const succeeded = () => {
    failures = 0
    set("closed")
  }

  const trip = () => {
    set("open")
    if (probing) return
    probing = true
    options.fork(Effect.ensuring(probeLoop(0), Effect.sync(() => (probing = false))))
  }

  const failed = () => {
    failures++
    if (state === "closed" && failures >= options.threshold) trip()
  }

  return { state: () => state, succeeded, failed, trip }
}
