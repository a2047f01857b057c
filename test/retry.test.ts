import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Either, Fiber, Ref, TestClock } from "effect"
import type { ClickHouseClient } from "@clickhouse/client"
import { type Gate, makeGate } from "../src/ClickHouse/Gate.ts"
import { hedgeRead, makeRetryBudget, retryRead, type Tried } from "../src/ClickHouse/Retry.ts"
import { attempt, type Params, type TryOptions } from "../src/ClickHouse/Try.ts"
import {
  type ClickHouseError,
  ClickHouseOverloaded,
  ClickHouseQueryError,
  ClickHouseTimeout,
  ClickHouseUnavailable
} from "../src/Domain/ClickHouseError.ts"

const settle = Effect.repeatN(Effect.yieldNow(), 50)

const noWait = { attempts: 3, base: Duration.zero }

const roomy = () => makeRetryBudget({ ratio: 0.1, perSecond: 0, max: 100 })

/** A read that fails with the given errors, one per try, then answers with the number of tries. */
const flaky = (errors: ReadonlyArray<ClickHouseError>) =>
  Effect.map(Ref.make(0), (tries) => ({
    tries,
    read: Effect.flatMap(Ref.updateAndGet(tries, (n) => n + 1), (n) =>
      n <= errors.length ? Effect.fail(errors[n - 1]!) : Effect.succeed(n))
  }))

/** Runs `effect` with the clock moving until it is done. */
const withTime = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    for (let i = 0; i < 100; i++) {
      yield* TestClock.adjust("10 millis")
      const done = yield* Fiber.poll(fiber)
      if (done._tag === "Some") break
    }
    return yield* Fiber.join(fiber)
  })

describe("retries", () => {
  it.effect("connection failures and server refusals (202) are retried, with backoff, up to the attempt cap", () =>
    Effect.gen(function*() {
      const { read, tries } = yield* flaky([
        new ClickHouseUnavailable({ cause: "reset" }),
        new ClickHouseOverloaded({ reason: "server" })
      ])
      expect(yield* withTime(retryRead(roomy())(read))).toBe(3)
      expect(yield* Ref.get(tries)).toBe(3)

      const always = yield* flaky(Array.from({ length: 10 }, () => new ClickHouseUnavailable({ cause: "down" })))
      const result = yield* withTime(Effect.either(retryRead(roomy())(always.read)))
      expect(Either.isLeft(result) && result.left._tag).toBe("ClickHouseUnavailable")
      expect(yield* Ref.get(always.tries)).toBe(3)
    }))

  it.effect("deadlines, query errors and our own pool's overload are not retried", () =>
    Effect.gen(function*() {
      for (
        const error of [
          new ClickHouseTimeout({}),
          new ClickHouseQueryError({ code: 60, cause: "no table" }),
          new ClickHouseOverloaded({ reason: "pool" })
        ]
      ) {
        const { read, tries } = yield* flaky([error])
        expect(yield* Effect.flip(retryRead(roomy())(read))).toBe(error)
        expect(yield* Ref.get(tries)).toBe(1)
      }
    }))

  it.effect("the budget stops retries from multiplying load during an outage, and refills with time", () =>
    Effect.gen(function*() {
      const budget = makeRetryBudget({ ratio: 0.1, perSecond: 2, max: 5 })
      const down = yield* flaky(Array.from({ length: 1_000 }, () => new ClickHouseUnavailable({ cause: "down" })))
      // 100 reads during an outage: 5 saved-up retries plus 0.1 earned per read, never one retry per read.
      yield* Effect.forEach(Array.from({ length: 100 }), () => Effect.either(retryRead(budget, noWait)(down.read)), {
        discard: true
      })
      const tries = yield* Ref.get(down.tries)
      expect(tries).toBeGreaterThanOrEqual(100 + 5)
      expect(tries).toBeLessThanOrEqual(100 + 5 + 10)
      // Time earns retries back: 2 per second.
      yield* TestClock.adjust("1 second")
      expect(yield* budget.withdraw).toBe(true)
      expect(yield* budget.withdraw).toBe(true)
      expect(yield* budget.withdraw).toBe(false)
    }))
})

/** A try that answers at once with `read`'s value, or fails with its error. */
const answered = <A, E>(read: Effect.Effect<A, E>) => Effect.map(read, (value): Tried<A> => ({ _tag: "Answered", value }))

/** A try that has not answered by its hedge time: it comes back stalled then, its answer still to come from `rest`. */
const stalling = <A>(rest: Effect.Effect<A, ClickHouseError>, cancelled: Ref.Ref<number>) => (hedgeAfterMs: number | undefined) =>
  Effect.as(
    Effect.sleep(Duration.millis(hedgeAfterMs ?? 0)),
    { _tag: "Stalled", rest, cancel: Ref.update(cancelled, (c) => c + 1), lost: Effect.void } satisfies Tried<A> as Tried<A>
  )

describe("hedged reads", () => {
  it.effect("a try that has not answered in time gets a second one; the first answer wins, the other is cancelled", () =>
    Effect.gen(function*() {
      const stalled = yield* Deferred.make<number>()
      const cancelled = yield* Ref.make(0)
      const tries = yield* Ref.make(0)
      const start = (hedgeAfterMs: number | undefined) =>
        Effect.flatMap(Ref.updateAndGet(tries, (n) => n + 1), (n) =>
          n === 1 ? stalling(Deferred.await(stalled), cancelled)(hedgeAfterMs) : answered(Effect.succeed(n)))
      const fiber = yield* Effect.fork(hedgeRead(roomy(), Duration.seconds(1))(start))
      yield* settle
      expect(yield* Ref.get(tries)).toBe(1)
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(fiber)).toBe(2)
      expect(yield* Ref.get(cancelled)).toBe(1)
    }))

  it.effect("an early failure is returned at once, and a fast answer starts no hedge", () =>
    Effect.gen(function*() {
      const { read, tries } = yield* flaky([new ClickHouseUnavailable({ cause: "refused" })])
      const hedged = hedgeRead(roomy(), Duration.seconds(1))
      expect((yield* Effect.flip(hedged(() => answered(read))))._tag).toBe("ClickHouseUnavailable")
      expect(yield* hedged(() => answered(read))).toBe(2)
      yield* TestClock.adjust("5 seconds")
      expect(yield* Ref.get(tries)).toBe(2)
    }))

  it.effect("with no budget left the first try is simply awaited", () =>
    Effect.gen(function*() {
      const budget = makeRetryBudget({ ratio: 0, perSecond: 0, max: 0 })
      const slow = yield* Deferred.make<number>()
      const tries = yield* Ref.make(0)
      const cancelled = yield* Ref.make(0)
      const start = (hedgeAfterMs: number | undefined) =>
        Effect.zipRight(Ref.update(tries, (n) => n + 1), stalling(Deferred.await(slow), cancelled)(hedgeAfterMs))
      const fiber = yield* Effect.fork(hedgeRead(budget, Duration.seconds(1))(start))
      yield* TestClock.adjust("2 seconds")
      yield* Deferred.succeed(slow, 7)
      expect(yield* Fiber.join(fiber)).toBe(7)
      expect(yield* Ref.get(tries)).toBe(1)
    }))
})

describe("one try", () => {
  const options = (gate: Gate<ClickHouseError>): TryOptions => ({
    gate,
    client: {} as ClickHouseClient,
    settings: {},
    ended: () => {},
    health: () => {},
    cancelOnServer: () => {},
    timedOut: () => new ClickHouseTimeout({})
  })
  const gateOfOne = () =>
    makeGate<ClickHouseError>({
      permits: 1,
      maxWaiting: 10,
      maxWait: "1 minute",
      overloaded: () => new ClickHouseOverloaded({ reason: "pool" })
    })

  it.effect("time spent waiting for a connection does not count towards the hedge", () =>
    Effect.gen(function*() {
      const gate = gateOfOne()
      const hold = yield* Deferred.make<void>()
      yield* Effect.fork(gate.withPermit(Deferred.await(hold)))
      let answer: (value: number) => void = () => {}
      const query = () => new Promise<number>((resolve) => (answer = resolve))
      const fiber = yield* Effect.fork(attempt(options(gate), 1, query, Number.POSITIVE_INFINITY, 1000))
      // Two seconds in the queue, then a query that answers in 500 ms: no reason to hedge.
      yield* TestClock.adjust("2 seconds")
      yield* Deferred.succeed(hold, undefined)
      yield* settle
      yield* TestClock.adjust("500 millis")
      answer(3)
      expect(yield* Fiber.join(fiber)).toEqual({ _tag: "Answered", value: 3 })
      expect(gate.inUse()).toBe(0)
    }))

  it.effect("past its deadline the query is aborted and its permit given back", () =>
    Effect.gen(function*() {
      const gate = gateOfOne()
      let signal: AbortSignal | undefined
      const query = (_client: ClickHouseClient, params: Params) => {
        signal = params.abort_signal
        return new Promise<number>(() => {})
      }
      const fiber = yield* Effect.fork(Effect.flip(attempt(options(gate), 1, query, 3000, undefined)))
      yield* settle
      expect(gate.inUse()).toBe(1)
      yield* TestClock.adjust("3 seconds")
      expect((yield* Fiber.join(fiber))._tag).toBe("ClickHouseTimeout")
      expect(signal?.aborted).toBe(true)
      expect(gate.inUse()).toBe(0)
    }))
})
