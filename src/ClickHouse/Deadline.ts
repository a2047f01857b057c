import { Clock, Duration, Effect, Fiber, FiberRef } from "effect"

/**
 * Time limits without a fiber per limit.
 *
 * `Effect.timeout` races its effect in a forked fiber against a forked sleep: on this service's request path
 * that cost 70 µs of CPU per use (measured: `scripts/bench`), more than the platform's whole request. Every
 * wait here is instead one `Effect.async` whose own callback and one timer race: the first to fire settles it
 * and cancels the other. Times are the fiber's `Clock` milliseconds, so `TestClock` drives them in tests.
 */

/** When the current request must be answered, in `Clock` milliseconds; set by the HTTP deadline. */
export const requestDeadline: FiberRef.FiberRef<number> = FiberRef.unsafeMake(Number.POSITIVE_INFINITY)

/** The sooner of the request's deadline and `ms` from now. */
export const within = (ms: number): Effect.Effect<number> =>
  Effect.withFiberRuntime((fiber) =>
    Effect.map(Clock.currentTimeMillis, (now) => Math.min(now + ms, fiber.getFiberRef(requestDeadline)))
  )

const liveClock = Effect.runSync(Effect.clock)

/** Runs `task` after `ms` on `clock`: Node's timer for the live clock, a sleep for any other (a test clock). */
export const after = (clock: Clock.Clock, ms: number, task: () => void): (() => void) => {
  if (clock === liveClock) {
    const timer = setTimeout(task, Math.max(0, ms))
    return () => clearTimeout(timer)
  }
  const fiber = Effect.runFork(Effect.zipRight(clock.sleep(Duration.millis(Math.max(0, ms))), Effect.sync(task)))
  return () => Effect.runFork(Fiber.interrupt(fiber))
}

/**
 * Waits for `start` to settle, or until `at` (`Clock` ms), whichever is first. `start` begins the work and
 * returns how to cancel it; it settles by calling `done` with the outcome. Past `at`, the work is cancelled and
 * the wait ends with `expired()`. Interrupted, the work is cancelled.
 */
export const waitUntil = <A, E>(
  at: number,
  start: (done: (outcome: Effect.Effect<A, E>) => void) => () => void,
  expired: () => Effect.Effect<A, E>
): Effect.Effect<A, E> =>
  Effect.clockWith((clock) =>
    Effect.async<A, E>((resume) => {
      let settled = false
      let cancelTimer: (() => void) | undefined
      const cancelWork = start((outcome) => {
        if (settled) return
        settled = true
        cancelTimer?.()
        resume(outcome)
      })
      if (settled) return
      if (Number.isFinite(at)) {
        const left = at - clock.unsafeCurrentTimeMillis()
        if (left <= 0) {
          settled = true
          cancelWork()
          resume(expired())
          return
        }
        cancelTimer = after(clock, left, () => {
          if (settled) return
          settled = true
          cancelWork()
          resume(expired())
        })
      }
      return Effect.sync(() => {
        if (settled) return
        settled = true
        cancelTimer?.()
        cancelWork()
      })
    })
  )

