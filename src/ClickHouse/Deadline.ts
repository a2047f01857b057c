import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import { holderOf } from "../Http/RequestId.js"

/**
 * Time limits without a fiber per limit.
 *
 * `Effect.timeout` races its effect in a forked fiber against a forked sleep: on this service's request path
 * that cost about 70 µs of CPU per use, as much as the platform's whole request (measured with a pool-of-100
 * loop of `Effect.forEach`). The waits of the request path (a permit, a try, a coalesced run) are instead one
 * `Effect.async` each, whose callback and one timer race: the first to fire settles it and cancels the other.
 * Times are the fiber's `Clock` milliseconds, so `TestClock` drives them in tests.
 */

/** A deadline for the work under it (`Effect.locally`), in `Clock` milliseconds; see `deadlineOf`. */
export const requestDeadline: FiberRef.FiberRef<number> = FiberRef.unsafeMake(Number.POSITIVE_INFINITY)

const deadlineKey = Symbol.for("analytics-api/RequestDeadline")

/**
 * Sets the deadline of `request` (`Clock` ms): the HTTP edge does, once per request, where it keeps the request's id
 * (`holderOf`), rather than in a fiber ref: a ref write copies every ref the request's fiber carries, about a
 * twentieth of the instructions of a whole `/healthz` request.
 */
export const setRequestDeadline = (request: HttpServerRequest.HttpServerRequest, at: number): void => {
  holderOf(request)[deadlineKey] = at
}

/** When the fiber's work must end: the sooner of `requestDeadline` and the deadline of the request it serves. */
export const deadlineOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>): number => {
  const own = fiber.getFiberRef(requestDeadline)
  const request = Context.getOption(fiber.currentContext, HttpServerRequest.HttpServerRequest)
  const set = request._tag === "Some" ? holderOf(request.value)[deadlineKey] as number | undefined : undefined
  return set === undefined ? own : Math.min(own, set)
}

/** The sooner of the fiber's deadline and `ms` from now. */
export const within = (ms: number): Effect.Effect<number> =>
  Effect.withFiberRuntime((fiber) => Effect.map(Clock.currentTimeMillis, (now) => Math.min(now + ms, deadlineOf(fiber))))

const liveClock = Effect.runSync(Effect.clock)

/** One timer for many waits, armed for the earliest of their ends (`Clock` ms). */
export interface Alarm {
  /** Arms it for `at`, when that is sooner than the time it is armed for. */
  readonly arm: (clock: Clock.Clock, at: number) => void
  readonly cancel: () => void
}

/**
 * An alarm that, when it fires, calls `due` with the time (never before the time it was armed for) and its clock:
 * `due` ends the waits whose time has come and returns the earliest end left (infinite: none), for which it is
 * armed again.
 */
export const makeAlarm = (due: (now: number, clock: Clock.Clock) => number): Alarm => {
  let armedAt = Number.POSITIVE_INFINITY
  let cancelTimer = (): void => {}
  const cancel = () => {
    cancelTimer()
    cancelTimer = () => {}
    armedAt = Number.POSITIVE_INFINITY
  }
  const arm = (clock: Clock.Clock, at: number) => {
    if (at >= armedAt) return
    cancelTimer()
    armedAt = at
    cancelTimer = after(clock, at - clock.unsafeCurrentTimeMillis(), () => {
      const now = Math.max(clock.unsafeCurrentTimeMillis(), armedAt)
      cancelTimer = () => {}
      armedAt = Number.POSITIVE_INFINITY
      const next = due(now, clock)
      if (Number.isFinite(next)) arm(clock, next)
    })
  }
  return { arm, cancel }
}

/** Runs `task` after `ms` on `clock`: Node's timer for the live clock, a sleep for any other (a test clock). */
export const after = (clock: Clock.Clock, ms: number, task: () => void): (() => void) => {
  if (clock === liveClock) {
    const timer = setTimeout(task, Math.max(0, ms))
    return () => clearTimeout(timer)
  }
  const fiber = Effect.runFork(Effect.zipRight(clock.sleep(Duration.millis(Math.max(0, ms))), Effect.sync(task)))
  return () => Effect.runFork(Fiber.interrupt(fiber))
}
