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
