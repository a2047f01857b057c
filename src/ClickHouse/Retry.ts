import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
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

const jittered = (ms: number) => ms * (0.8 + 0.4 * Math.random())

/**
 * Retries an idempotent read on retryable failures, within the attempt cap and the budget. No backoff runs past
 * `deadline` (`Clock` ms): the try after it meets the deadline at once.
 */
export const retryRead = (budget: RetryBudget, policy: RetryPolicy = defaultRetryPolicy) => {
  const baseMs = Duration.toMillis(policy.base)
  return <A, R>(read: Effect.Effect<A, ClickHouseError, R>, deadline = Number.POSITIVE_INFINITY): Effect.Effect<A, ClickHouseError, R> => {
    const from = (tries: number): Effect.Effect<A, ClickHouseError, R> =>
      Effect.catchAll(read, (error) => {
        if (tries >= policy.attempts || !retryable(error)) return Effect.fail(error)
        return Effect.flatMap(budget.withdraw, (allowed) => {
          if (!allowed) {
            Instruments.budgetExhausted("retry").update(1)
            return Effect.fail(error)
          }
          Instruments.clickHouseRetries(Instruments.errorClass(error._tag)).update(1)
          return Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const backoff = Math.min(jittered(baseMs * 2 ** (tries - 1)), Math.max(0, deadline - now))
            return Effect.zipRight(Effect.sleep(Duration.millis(backoff)), from(tries + 1))
          })
        })
      })
    return Effect.zipRight(budget.deposit, from(1))
  }
}

/**
 * What a try of a read gives back: its answer, or, when it has not answered by its hedge time, itself still
 * running: `rest` waits on for its answer (within the read's deadline), `cancel` stops it, `lost` says its hedge
 * answered first (its replica was the slow one).
 */
export type Tried<A> =
  | { readonly _tag: "Answered"; readonly value: A }
  | {
    readonly _tag: "Stalled"
    readonly rest: Effect.Effect<A, ClickHouseError>
    readonly cancel: Effect.Effect<void>
    readonly lost: Effect.Effect<void>
  }

/**
 * A hedged read: if the first try has not answered `after` its query started (`start` is given that time and
 * counts it from then: time spent waiting for a connection does not count), a second one starts on another
 * connection, ahead of the queue, when the budget allows; the first answer wins and the other try is cancelled.
 * A stalled connection then costs `after`, not the whole deadline; `start` picks where each try goes (another
 * replica, when there is one). A try that fails before the hedge starts
 * fails at once (for `retryRead` to handle). Until a try stalls, nothing is forked.
 */
export const hedgeRead = (budget: RetryBudget, after: Duration.Duration) => {
  const afterMs = Duration.toMillis(after)
  return <A, R>(start: (hedgeAfterMs: number | undefined) => Effect.Effect<Tried<A>, ClickHouseError, R>) => {
    const hedge = Effect.locally(start(undefined), urgent, true).pipe(
      Effect.flatMap((tried) => tried._tag === "Answered" ? Effect.succeed(tried.value) : Effect.ensuring(tried.rest, tried.cancel)),
      Effect.tap(() => Instruments.hedgesWon.update(1))
    )
    return Effect.flatMap(start(afterMs > 0 ? afterMs : undefined), (first) => {
      if (first._tag === "Answered") return Effect.succeed(first.value)
      return Effect.flatMap(budget.withdraw, (allowed) => {
        if (!allowed) {
          Instruments.budgetExhausted("hedge").update(1)
          return first.rest
        }
        Instruments.hedgesFired.update(1)
        return Effect.race(first.rest, Effect.tap(hedge, () => first.lost))
      }).pipe(Effect.ensuring(first.cancel))
    })
  }
}
