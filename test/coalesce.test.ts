import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, FiberId, Ref, TestClock } from "effect"
import { type CoalesceOptions, makeCoalescer } from "../src/ClickHouse/Coalesce.ts"
import { requestDeadline } from "../src/ClickHouse/Deadline.ts"

/** Lets every forked fiber run until it blocks. */
const settle = Effect.repeatN(Effect.yieldNow(), 50)

const fresh: CoalesceOptions = { coalesce: true, ttl: Duration.zero }

/** The default time a run whose callers all left may go on. */
const grace = Duration.millis(100)

/**
 * A read whose runs we count and hold: run n answers n once its gate opens.
 * `started` and `ended` count runs; `interrupted` counts runs cancelled midway.
 */
const gatedRead = Effect.gen(function*() {
  const started = yield* Ref.make(0)
  const ended = yield* Ref.make(0)
  const interrupted = yield* Ref.make(0)
  const gates: Array<Deferred.Deferred<void>> = []
  const gate = (n: number) =>
    Effect.suspend(() => {
      while (gates.length <= n) gates.push(Deferred.unsafeMake(FiberId.none))
      return Effect.succeed(gates[n]!)
    })
  const read = Effect.gen(function*() {
    const n = yield* Ref.updateAndGet(started, (x) => x + 1)
    yield* Effect.flatMap(gate(n), Deferred.await)
    yield* Ref.update(ended, (x) => x + 1)
    return n
  }).pipe(Effect.onInterrupt(() => Ref.update(interrupted, (x) => x + 1)))
  const open = (n: number) => Effect.flatMap(gate(n), (d) => Deferred.succeed(d, undefined))
  return { read, open, started, ended, interrupted }
})

/** A coalescer with one gated run of key "k" in flight, started by `first`. */
const runInFlight = Effect.gen(function*() {
  const c = yield* makeCoalescer(fresh)
  const r = yield* gatedRead
  const first = yield* Effect.fork(c.run("k", r.read))
  yield* settle
  return { c, r, first }
})

describe("fresh-read coalescing", () => {
  it.scoped("identical reads that arrive together share one run", () =>
    Effect.gen(function*() {
      const c = yield* makeCoalescer(fresh)
      const r = yield* gatedRead
      const callers = yield* Effect.forEach(Array.from({ length: 50 }), () => Effect.fork(c.run("k", r.read)))
      yield* settle
      // The first caller started run 1; the other 49 arrived while it ran, so they wait for run 2.
      expect(yield* Ref.get(r.started)).toBe(1)
      yield* r.open(1)
      yield* settle
      expect(yield* Ref.get(r.started)).toBe(2)
      yield* r.open(2)
      const answers = yield* Fiber.joinAll(callers)
      expect(answers).toEqual([1, ...Array.from({ length: 49 }, () => 2)])
      expect(yield* Ref.get(r.started)).toBe(2)
      expect(c.active()).toBe(0)
    }))

  it.scoped("a caller arriving mid-run gets the next run, which starts only after the current one ends", () =>
    Effect.gen(function*() {
      const { c, r, first } = yield* runInFlight
      const second = yield* Effect.fork(c.run("k", r.read))
      const third = yield* Effect.fork(c.run("k", r.read))
      yield* settle
      expect(yield* Ref.get(r.started)).toBe(1)
      yield* r.open(1)
      expect(yield* Fiber.join(first)).toBe(1)
      yield* settle
      // At most one run per key in flight: run 2 started after run 1 ended.
      expect(yield* Ref.get(r.ended)).toBe(1)
      expect(yield* Ref.get(r.started)).toBe(2)
      yield* r.open(2)
      expect(yield* Fiber.join(second)).toBe(2)
      expect(yield* Fiber.join(third)).toBe(2)
    }))

  it.scoped("different keys never share a run", () =>
    Effect.gen(function*() {
      const c = yield* makeCoalescer(fresh)
      const answers = yield* Effect.all(
        Array.from({ length: 20 }, (_, i) => c.run(`key-${i % 4}`, Effect.succeed(i % 4))),
        { concurrency: "unbounded" }
      )
      expect(answers).toEqual(Array.from({ length: 20 }, (_, i) => i % 4))
    }))

  it.scoped("a failure is shared by the callers of that run, and the next run starts afresh", () =>
    Effect.gen(function*() {
      const c = yield* makeCoalescer(fresh)
      const gate = yield* Deferred.make<void>()
      const runs = yield* Ref.make(0)
      const read = Effect.gen(function*() {
        const n = yield* Ref.updateAndGet(runs, (x) => x + 1)
        if (n <= 2) {
          yield* Deferred.await(gate)
          return yield* Effect.fail(`boom ${n}`)
        }
        return n
      })
      const first = yield* Effect.fork(Effect.either(c.run("k", read)))
      yield* settle
      const waiting = yield* Effect.forEach(Array.from({ length: 5 }), () => Effect.fork(Effect.either(c.run("k", read))))
      yield* settle
      yield* Deferred.succeed(gate, undefined)
      const results = yield* Fiber.joinAll([first, ...waiting])
      expect(results.map((r) => r._tag === "Left" ? r.left : r.right)).toEqual([
        "boom 1",
        "boom 2",
        "boom 2",
        "boom 2",
        "boom 2",
        "boom 2"
      ])
      expect(yield* c.run("k", read)).toBe(3)
    }))

  it.scoped("interrupting one caller leaves the run going for the others", () =>
    Effect.gen(function*() {
      const { c, r, first } = yield* runInFlight
      const a = yield* Effect.fork(c.run("k", r.read))
      const b = yield* Effect.fork(c.run("k", r.read))
      yield* settle
      yield* Fiber.interrupt(first)
      yield* settle
      // Run 1 lost its only caller: it goes on for the grace, then it is stopped and run 2 (for a and b) starts.
      expect(yield* Ref.get(r.interrupted)).toBe(0)
      expect(yield* Ref.get(r.started)).toBe(1)
      yield* TestClock.adjust(grace)
      expect(yield* Ref.get(r.interrupted)).toBe(1)
      expect(yield* Ref.get(r.started)).toBe(2)
      yield* Fiber.interrupt(a)
      yield* r.open(2)
      expect(yield* Fiber.join(b)).toBe(2)
      expect(yield* Ref.get(r.interrupted)).toBe(1)
    }))

  it.scoped("the run is cancelled when every caller is gone, and a queued run with no callers never starts", () =>
    Effect.gen(function*() {
      const { c, r, first } = yield* runInFlight
      const queued = yield* Effect.forEach(Array.from({ length: 3 }), () => Effect.fork(c.run("k", r.read)))
      yield* settle
      yield* Fiber.interruptAll(queued)
      yield* Fiber.interrupt(first)
      yield* TestClock.adjust(grace)
      expect(yield* Ref.get(r.started)).toBe(1)
      expect(yield* Ref.get(r.interrupted)).toBe(1)
      expect(c.active()).toBe(0)
    }))

  it.scoped("a run whose callers all left may end by itself within the grace; callers that come meanwhile wait for the next run", () =>
    Effect.gen(function*() {
      const { c, r, first } = yield* runInFlight
      yield* Fiber.interrupt(first)
      yield* TestClock.adjust(Duration.subtract(grace, Duration.millis(1)))
      const late = yield* Effect.fork(c.run("k", r.read))
      yield* settle
      // The orphaned run 1 still holds the key: the late caller may not share it (it started before the caller came).
      expect(yield* Ref.get(r.started)).toBe(1)
      yield* r.open(1)
      yield* settle
      expect(yield* Ref.get(r.interrupted)).toBe(0)
      expect(yield* Ref.get(r.ended)).toBe(1)
      expect(yield* Ref.get(r.started)).toBe(2)
      yield* r.open(2)
      expect(yield* Fiber.join(late)).toBe(2)
      // Its timer went with it: nothing is stopped later.
      yield* TestClock.adjust(grace)
      expect(yield* Ref.get(r.interrupted)).toBe(0)
      expect(c.active()).toBe(0)
    }))

  it.scoped("a caller that gives up through Effect.timeout leaves though its own fiber goes on; the orphaned run stops after the grace", () =>
    Effect.gen(function*() {
      const c = yield* makeCoalescer(fresh)
      const r = yield* gatedRead
      const caller = yield* Effect.fork(
        c.run("k", r.read).pipe(Effect.timeout(Duration.seconds(1)), Effect.either, Effect.zipLeft(Effect.sleep(Duration.seconds(60))))
      )
      yield* settle
      yield* TestClock.adjust(Duration.seconds(1))
      yield* settle
      // The caller's fiber is still running (waiting a minute), yet the read it gave up on lost its only caller.
      expect(caller.unsafePoll()).toBeNull()
      expect(c.active()).toBe(1)
      yield* TestClock.adjust(grace)
      yield* settle
      expect(yield* Ref.get(r.interrupted)).toBe(1)
      expect(c.active()).toBe(0)
      yield* TestClock.adjust(Duration.seconds(60))
      expect((yield* Fiber.join(caller))._tag).toBe("Left")
    }))

  it.scoped("with no grace, a run is stopped as its last caller leaves", () =>
    Effect.gen(function*() {
      const c = yield* makeCoalescer({ ...fresh, orphanGrace: Duration.zero })
      const r = yield* gatedRead
      const first = yield* Effect.fork(c.run("k", r.read))
      yield* settle
      yield* Fiber.interrupt(first)
      // The caller leaves as its fiber ends; the owner stops the run, which the caller's interrupter does not wait for.
      yield* settle
      expect(yield* Ref.get(r.interrupted)).toBe(1)
      expect(c.active()).toBe(0)
    }))

  it.scoped("each caller leaves at its own request deadline, in any order of arrival; a queued run whose callers all left never starts", () =>
    Effect.gen(function*() {
      const { c, r, first } = yield* runInFlight
      const join = (deadline: number) =>
        Effect.fork(Effect.locally(c.run("k", r.read, () => -1), requestDeadline, deadline))
      // Later deadline first: the batch's one timer is moved sooner for the second caller, then on to the later one.
      const late = yield* join(300)
      const soon = yield* join(100)
      yield* settle
      yield* TestClock.adjust(Duration.millis(100))
      expect(yield* Fiber.await(soon)).toStrictEqual(Exit.fail(-1))
      expect(late.unsafePoll()).toBeNull()
      yield* TestClock.adjust(Duration.millis(200))
      expect(yield* Fiber.await(late)).toStrictEqual(Exit.fail(-1))
      yield* r.open(1)
      expect(yield* Fiber.join(first)).toBe(1)
      yield* settle
      // Run 2 had only the two callers that left: it never started.
      expect(yield* Ref.get(r.started)).toBe(1)
      expect(c.active()).toBe(0)
    }))

  it.scoped("a caller with no deadline is not touched by the others' deadlines", () =>
    Effect.gen(function*() {
      const { c, r, first } = yield* runInFlight
      const bounded = yield* Effect.fork(Effect.locally(c.run("k", r.read, () => -1), requestDeadline, 50))
      const unbounded = yield* Effect.fork(c.run("k", r.read, () => -1))
      yield* settle
      yield* TestClock.adjust(Duration.seconds(10))
      expect(yield* Fiber.await(bounded)).toStrictEqual(Exit.fail(-1))
      expect(unbounded.unsafePoll()).toBeNull()
      yield* r.open(1)
      yield* Fiber.join(first)
      yield* settle
      yield* r.open(2)
      expect(yield* Fiber.join(unbounded)).toBe(2)
    }))

  it.effect("closing the owner's scope stops runs in flight", () =>
    Effect.gen(function*() {
      const r = yield* gatedRead
      const caller = yield* Effect.scoped(
        Effect.gen(function*() {
          const c = yield* makeCoalescer(fresh)
          const caller = yield* Effect.fork(c.run("k", r.read))
          yield* settle
          return caller
        })
      )
      expect(yield* Ref.get(r.interrupted)).toBe(1)
      expect(Exit.isInterrupted(yield* Fiber.await(caller))).toBe(true)
    }))

  it.scoped("off: every caller runs its own read", () =>
    Effect.gen(function*() {
      const c = yield* makeCoalescer({ coalesce: false, ttl: Duration.zero })
      const r = yield* gatedRead
      const callers = yield* Effect.forEach(Array.from({ length: 5 }), () => Effect.fork(c.run("k", r.read)))
      yield* settle
      expect(yield* Ref.get(r.started)).toBe(5)
      yield* Effect.forEach([1, 2, 3, 4, 5], r.open)
      expect((yield* Fiber.joinAll(callers)).sort()).toEqual([1, 2, 3, 4, 5])
    }))
})

describe("TTL cache", () => {
  for (const coalesce of [true, false]) {
    it.scoped(`answers are reused only while their run started less than the TTL ago (coalesce ${coalesce})`, () =>
      Effect.gen(function*() {
        const c = yield* makeCoalescer({ coalesce, ttl: Duration.millis(500) })
        const runs = yield* Ref.make(0)
        const read = Ref.updateAndGet(runs, (x) => x + 1)
        expect(yield* c.run("k", read)).toBe(1)
        yield* TestClock.adjust("499 millis")
        expect(yield* c.run("k", read)).toBe(1)
        // Another key never sees this answer.
        expect(yield* c.run("other", read)).toBe(2)
        yield* TestClock.adjust("1 millis")
        expect(yield* c.run("k", read)).toBe(3)
      }))
  }

  it.scoped("failures are not cached", () =>
    Effect.gen(function*() {
      const c = yield* makeCoalescer({ coalesce: true, ttl: Duration.seconds(10) })
      const runs = yield* Ref.make(0)
      const read = Effect.flatMap(Ref.updateAndGet(runs, (x) => x + 1), (n) => n === 1 ? Effect.fail("boom") : Effect.succeed(n))
      expect(yield* Effect.flip(c.run("k", read))).toBe("boom")
      expect(yield* c.run("k", read)).toBe(2)
      expect(yield* c.run("k", read)).toBe(2)
    }))

  it.scoped("the cache holds at most maxCached answers", () =>
    Effect.gen(function*() {
      const c = yield* makeCoalescer({ coalesce: true, ttl: Duration.seconds(10), maxCached: 2 })
      const runs = yield* Ref.make(0)
      const read = Ref.updateAndGet(runs, (x) => x + 1)
      yield* c.run("a", read)
      yield* c.run("b", read)
      yield* c.run("c", read)
      expect(yield* c.run("b", read)).toBe(2)
      expect(yield* c.run("a", read)).toBe(4)
    }))
})
