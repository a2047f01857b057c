import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Fiber, TestClock } from "effect"
import { makeGate, urgent } from "../src/ClickHouse/Gate.ts"

class Overloaded {
  readonly _tag = "Overloaded"
}

/** Lets every forked fiber run until it blocks. */
const settle = Effect.repeatN(Effect.yieldNow(), 50)

const gate = (permits: number, maxWaiting = 100) =>
  makeGate({ permits, maxWaiting, maxWait: "1 second", overloaded: () => new Overloaded() })

describe("Gate", () => {
  it.effect("admits at most `permits` at once and serves waiters in arrival order", () =>
    Effect.gen(function*() {
      const g = gate(2)
      const order: Array<number> = []
      const release = yield* Deferred.make<void>()
      const fibers = yield* Effect.forEach(
        Array.from({ length: 6 }, (_, i) => i),
        (i) =>
          Effect.fork(g.withPermit(Effect.zipRight(Effect.sync(() => order.push(i)), Deferred.await(release)))).pipe(
            Effect.tap(() => settle)
          ),
        { concurrency: 1 }
      )
      yield* settle
      expect(order).toEqual([0, 1])
      expect(g.inUse()).toBe(2)
      expect(g.waiting()).toBe(4)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.joinAll(fibers)
      expect(order).toEqual([0, 1, 2, 3, 4, 5])
      expect(g.inUse()).toBe(0)
    }))

  it.effect("a waiter past maxWait gets the overloaded error, and leaves the queue", () =>
    Effect.gen(function*() {
      const g = gate(1)
      const hold = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(g.withPermit(Deferred.await(hold)))
      const waiter = yield* Effect.fork(Effect.either(g.withPermit(Effect.succeed("served"))))
      yield* settle
      expect(g.waiting()).toBe(1)
      yield* TestClock.adjust("1 second")
      const result = yield* Fiber.join(waiter)
      expect(Either.isLeft(result) && result.left).toBeInstanceOf(Overloaded)
      expect(g.waiting()).toBe(0)
      yield* Deferred.succeed(hold, undefined)
      yield* Fiber.join(holder)
      expect(yield* g.withPermit(Effect.succeed("next"))).toBe("next")
    }))

  it.effect("each waiter's wait ends at its own time, whatever the order they came in and however the others left", () =>
    Effect.gen(function*() {
      const g = makeGate<Overloaded | "timed out">({
        permits: 1,
        maxWaiting: 100,
        maxWait: "1 second",
        overloaded: () => new Overloaded(),
        timedOut: () => "timed out" as const
      })
      const ended: Array<string> = []
      const wait = (name: string, deadline?: number) =>
        Effect.fork(
          g.withPermit(Effect.sync(() => ended.push(`${name} served`)), deadline).pipe(
            Effect.catchAll((error) => Effect.sync(() => ended.push(`${name} ${error === "timed out" ? error : "overloaded"}`)))
          )
        ).pipe(Effect.tap(() => settle))
      const hold = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(g.withPermit(Deferred.await(hold)))
      yield* settle
      const late = yield* wait("late", 600) // a deadline after an earlier waiter's
      const early = yield* wait("early", 200) // came later, ends first
      const gone = yield* wait("gone", 100) // leaves before its end: its end must not touch the others
      const patient = yield* wait("patient") // maxWait only
      yield* Fiber.interrupt(gone)
      yield* TestClock.adjust("200 millis")
      yield* settle
      expect(ended).toEqual(["early timed out"])
      yield* TestClock.adjust("400 millis")
      yield* settle
      expect(ended).toEqual(["early timed out", "late timed out"])
      expect(g.waiting()).toBe(1)
      yield* TestClock.adjust("400 millis")
      yield* Fiber.joinAll([late, early, patient])
      expect(ended).toEqual(["early timed out", "late timed out", "patient overloaded"])
      expect(g.waiting()).toBe(0)
      yield* Deferred.succeed(hold, undefined)
      yield* Fiber.join(holder)
      // A waiter admitted before its end is served, and a later one still gets its own end.
      const hold2 = yield* Deferred.make<void>()
      const holder2 = yield* Effect.fork(g.withPermit(Deferred.await(hold2)))
      yield* settle
      const first = yield* wait("first", 1_300)
      const second = yield* wait("second", 1_500)
      yield* Deferred.succeed(hold2, undefined)
      yield* Fiber.join(holder2)
      yield* Fiber.join(first)
      yield* Fiber.join(second)
      expect(ended.slice(3)).toEqual(["first served", "second served"])
      expect(g.inUse()).toBe(0)
    }))

  it.effect("the queue is bounded: past maxWaiting a caller is refused at once", () =>
    Effect.gen(function*() {
      const g = gate(1, 2)
      const hold = yield* Deferred.make<void>()
      yield* Effect.fork(g.withPermit(Deferred.await(hold)))
      yield* Effect.fork(g.withPermit(Effect.void))
      yield* Effect.fork(g.withPermit(Effect.void))
      yield* settle
      const refused = yield* Effect.either(g.withPermit(Effect.succeed("x")))
      expect(Either.isLeft(refused) && refused.left).toBeInstanceOf(Overloaded)
      yield* Deferred.succeed(hold, undefined)
    }))

  it.effect("interrupting a holder or a waiter never loses a permit", () =>
    Effect.gen(function*() {
      const g = gate(1)
      const holder = yield* Effect.fork(g.withPermit(Effect.never))
      const waiters = yield* Effect.forEach(Array.from({ length: 5 }), () => Effect.fork(g.withPermit(Effect.never)))
      yield* settle
      yield* Fiber.interruptAll([...waiters.slice(0, 3)])
      yield* Fiber.interrupt(holder)
      yield* Fiber.interruptAll(waiters.slice(3))
      expect(g.inUse()).toBe(0)
      expect(g.waiting()).toBe(0)
      expect(yield* g.withPermit(Effect.succeed("ok"))).toBe("ok")
    }))

  it.effect("urgent work (a hedged try) waits ahead of newcomers", () =>
    Effect.gen(function*() {
      const g = gate(1)
      const order: Array<string> = []
      const hold = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(g.withPermit(Deferred.await(hold)))
      yield* settle
      const run = (name: string) => g.withPermit(Effect.sync(() => order.push(name)))
      const fibers = [
        yield* Effect.fork(run("first newcomer")),
        yield* Effect.fork(run("second newcomer")),
        yield* Effect.fork(Effect.locally(run("hedge"), urgent, true))
      ]
      yield* settle
      expect(g.waiting()).toBe(3)
      yield* Deferred.succeed(hold, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.joinAll(fibers)
      expect(order).toEqual(["hedge", "first newcomer", "second newcomer"])
    }))
})
