import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"

/**
 * Time limits without a fiber per limit.
 *
 * `Effect.timeout` races its effect in a forked fiber against a forked sleep: on this service's request path
 * that cost about 70 µs of CPU per use, as much as the platform's whole request (measured with a pool-of-100
 * loop of `Effect.forEach`). The waits of the request path (a permit, a try, a coalesced run) are instead one
 * `Effect.async` each, whose callback and one timer race: the first to fire settles it and cancels the other.
 * Times are the fiber's `Clock` milliseconds, so `TestClock` drives them in tests.
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
