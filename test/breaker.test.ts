import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import { type BreakerState, makeBreaker } from "../src/ClickHouse/Breaker.ts"
import { replicaFailed } from "../src/ClickHouse/Try.ts"
import {
  ClickHouseBadResponse,
  ClickHouseOverloaded,
  ClickHouseQueryError,
  ClickHouseTimeout,
  ClickHouseUnavailable
} from "../src/Domain/ClickHouseError.ts"


/** A breaker whose probe answers `up()`, its loop forked in the test's fiber, its changes recorded. */
const breaker = (up: () => boolean) =>
  Effect.gen(function*() {
    const fibers: Array<Fiber.RuntimeFiber<void>> = []
    const changes: Array<BreakerState> = []
    let probes = 0
    const forks: Array<Effect.Effect<void>> = []
    const b = makeBreaker({
      threshold: 3,
      baseBackoffMs: 100,
      maxBackoffMs: 500,
      probe: Effect.sync(() => {
        probes++
        return up()
      }),
      fork: (loop) => forks.push(loop),
      onChange: (state) => changes.push(state)
    })
    /** Starts the loops the breaker asked for. */
    const run = Effect.suspend(() => Effect.forEach(forks.splice(0), (loop) => Effect.map(Effect.fork(loop), (f) => fibers.push(f))))
    return { b, changes, probes: () => probes, run, fibers }
  })

describe("Breaker", () => {
  it.effect("opens after `threshold` failures in a row; a success in between resets the count", () =>
    Effect.gen(function*() {
      const { b, changes } = yield* breaker(() => false)
      b.failed()
      b.failed()
      b.succeeded()
      b.failed()
      b.failed()
      expect(b.state()).toBe("closed")
      b.failed()
      expect(b.state()).toBe("open")
      expect(changes).toEqual(["open"])
    }))

  it.effect("while open, probes after a doubling jittered back-off (80%–120% of 100, 200, 400, 500 ms…); the first that answers closes it", () =>
    Effect.gen(function*() {
      let asked = 0
      // Down for four probes, up at the fifth.
      const { b, changes, probes, run } = yield* breaker(() => ++asked === 5)
      const clock = yield* Effect.clock
      b.trip()
      yield* run
      const at: Array<number> = []
      let seen = 0
      for (let t = 0; t < 4000; t += 5) {
        yield* TestClock.adjust("5 millis")
        if (probes() > seen) {
          seen = probes()
          at.push(clock.unsafeCurrentTimeMillis())
        }
      }
      expect(at.length).toBe(5)
      const gaps = at.map((time, i) => time - (at[i - 1] ?? 0))
      ;[100, 200, 400, 500, 500].forEach((expected, i) => {
        expect(gaps[i]).toBeGreaterThanOrEqual(0.8 * expected)
        expect(gaps[i]).toBeLessThanOrEqual(1.2 * expected + 5)
      })
      expect(b.state()).toBe("closed")
      expect(changes.at(-1)).toBe("closed")
      expect(changes.filter((state) => state === "half-open").length).toBe(5)
    }))

  it.effect("a try that succeeds while it is open closes it and ends the probing", () =>
    Effect.gen(function*() {
      const { b, probes, run } = yield* breaker(() => false)
      b.trip()
      yield* run
      b.succeeded()
      expect(b.state()).toBe("closed")
      yield* TestClock.adjust("10 seconds")
      expect(probes()).toBe(0)
    }))

  it.effect("one probe loop at a time, however often it is tripped", () =>
    Effect.gen(function*() {
      const { b, probes, run } = yield* breaker(() => false)
      b.trip()
      b.trip()
      for (let i = 0; i < 5; i++) b.failed()
      yield* run
      yield* TestClock.adjust("130 millis")
      expect(probes()).toBe(1)
    }))
})

describe("what counts against a replica", () => {
  const fromServer = Object.assign(new Error("Code: 279. DB::Exception: All connection tries failed"), { code: "279" })
  const transport = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" })

  it("no answer from it: a refused or broken connection, a cut answer, a socket timeout", () => {
    expect(replicaFailed(new ClickHouseUnavailable({ cause: transport }))).toBe(true)
    expect(replicaFailed(new ClickHouseBadResponse({ cause: new SyntaxError("Unexpected end of JSON input") }))).toBe(true)
    expect(replicaFailed(new ClickHouseTimeout({ cause: new Error("Timeout error.") }))).toBe(true)
  })

  it("not an error the server answered with (it is up), and not a refusal for load", () => {
    expect(replicaFailed(new ClickHouseUnavailable({ cause: fromServer }))).toBe(false)
    expect(replicaFailed(new ClickHouseQueryError({ code: 60, cause: new Error("Code: 60") }))).toBe(false)
    expect(replicaFailed(new ClickHouseTimeout({ cause: Object.assign(new Error("Code: 159"), { code: "159" }) }))).toBe(false)
    expect(replicaFailed(new ClickHouseOverloaded({ reason: "server" }))).toBeUndefined()
  })
})
