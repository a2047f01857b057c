import { Clock, Deferred, Duration, Effect, Fiber, Schedule } from "effect"
import type { ClickHouseError } from "../Domain/ClickHouseError.js"
import * as Instruments from "../Observability/Instruments.js"
import { urgent } from "./Gate.js"

/**
 * Failures worth another try of a read: the connection broke or the answer came back cut, or the server
 * refused the query for now (code 202). Deadlines, query errors and our own pool's overload are final.
 */
export const retryable = (error: ClickHouseError): boolean =>
  error._tag === "ClickHouseUnavailable" ||
  error._tag === "ClickHouseBadResponse" ||
  (error._tag === "ClickHouseOverloaded" && error.reason === "server")

export interface RetryBudget {
  /** Called once per read: earns `ratio` of a retry. */
  readonly deposit: Effect.Effect<void>
  /** Takes one retry if the budget has one. */
  readonly withdraw: Effect.Effect<boolean>
}

export interface RetryBudgetOptions {
  /** Retries earned per read: 0.1 lets retries add at most 10% to the load. */
  readonly ratio: number
  /** Retries always allowed per second, so a quiet service can still retry. */
  readonly perSecond: number
  /** Most retries saved up. */
  readonly max: number
}

/**
 * A token bucket of retries, so that during an outage retries cannot multiply the load on ClickHouse:
 * each read earns a fraction of a retry, time earns a few more, each retry spends one.
 */
export const makeRetryBudget = (options: RetryBudgetOptions): RetryBudget => {
  let tokens = options.max
  let last: number | undefined
  const refill = (now: number) => {
    if (last !== undefined) tokens = Math.min(options.max, tokens + ((now - last) / 1000) * options.perSecond)
    last = now
  }
  return {
    deposit: Effect.sync(() => {
      tokens = Math.min(options.max, tokens + options.ratio)
    }),
    withdraw: Effect.map(Clock.currentTimeMillis, (now) => {
      refill(now)
      if (tokens < 1) return false
      tokens -= 1
      return true
    })
  }
}

export interface RetryPolicy {
  /** Tries in all, the first included. */
  readonly attempts: number
  /** First backoff; doubled after each retry, each jittered between 80% and 120%. */
  readonly base: Duration.DurationInput
}

export const defaultRetryPolicy: RetryPolicy = { attempts: 3, base: Duration.millis(25) }

/** Retries an idempotent read on retryable failures, within the attempt cap and the budget. */
export const retryRead = (budget: RetryBudget, policy: RetryPolicy = defaultRetryPolicy) =>
<A, R>(read: Effect.Effect<A, ClickHouseError, R>): Effect.Effect<A, ClickHouseError, R> =>
  Effect.zipRight(
    budget.deposit,
    Effect.retry(read, {
      schedule: Schedule.jittered(Schedule.exponential(policy.base)),
      times: policy.attempts - 1,
      while: (error) =>
        retryable(error)
          ? Effect.tap(budget.withdraw, (allowed) =>
            allowed
              ? Instruments.clickHouseRetries(Instruments.errorClass(error._tag)).update(1)
              : Instruments.budgetExhausted("retry").update(1))
          : Effect.succeed(false)
    })
  )

/**
 * A hedged read: if the first try has not answered `after` its query started (time spent waiting for a
 * connection does not count), a second one starts on another connection, ahead of the queue, when the budget
 * allows; the first answer wins and the other try is cancelled. A stalled connection then costs `after`, not
 * the whole deadline. A try that fails before the hedge starts fails at once (for `retryRead` to handle).
 * `read` is given an effect to run once its query is under way.
 */
export const hedgeRead = (budget: RetryBudget, after: Duration.Duration) =>
<A, R>(
  read: (started: Effect.Effect<void>) => Effect.Effect<A, ClickHouseError, R>
): Effect.Effect<A, ClickHouseError, R> =>
  Duration.toMillis(after) <= 0 ? read(Effect.void) : Effect.flatMap(Deferred.make<void>(), (started) =>
    Effect.raceWith(read(Deferred.succeed(started, undefined)), Effect.zipRight(Deferred.await(started), Effect.sleep(after)), {
      onSelfDone: (exit, timer) => Effect.zipRight(Fiber.interrupt(timer), exit),
      onOtherDone: (_, first) =>
        Effect.flatMap(budget.withdraw, (allowed) => {
          if (!allowed) {
            Instruments.budgetExhausted("hedge").update(1)
            return Fiber.join(first)
          }
          Instruments.hedgesFired.update(1)
          const hedge = Effect.locally(read(Effect.void), urgent, true).pipe(
            Effect.tap(() => Instruments.hedgesWon.update(1))
          )
          return Effect.race(Fiber.join(first), hedge)
        }).pipe(
          // Whoever wins, and if the caller goes away, the first try stops too.
          Effect.ensuring(Fiber.interrupt(first))
        )
    }))
