import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import type * as Tracer from "effect/Tracer"
import * as Instruments from "../Observability/Instruments.js"
import { isTracing } from "../Observability/Span.js"
import { after, type Alarm, deadlineOf, makeAlarm } from "./Deadline.js"

const none = () => {}

/**
 * Fresh-read coalescing of identical reads (same key: SQL and parameters).
 *
 * At most one run per key is in flight. A caller that arrives while a run is in flight waits for the
 * next run, which starts as soon as the current one ends and serves every caller that arrived meanwhile.
 * So every answer comes from a run that started after its caller arrived: a caller that wrote and then
 * reads sees its write. Failures are shared like values. A caller whose fiber is interrupted leaves when that
 * fiber ends; one whose request passes its deadline gets `expired` and leaves. A run whose last caller left is
 * given `orphanGrace` to end by itself and is interrupted after that: stopping a ClickHouse read (the request
 * aborted, KILL QUERY sent, a new connection for the next one) costs more than a short read that ends. When many
 * clients leave at once, every request they left behind would otherwise start a run and stop it at once, one
 * after the other.
 * Waiting costs no fiber: a run's callers are callbacks it calls when it ends.
 *
 * With a TTL, a successful answer is also reused while its run started less than `ttl` ago: answers may
 * then be up to `ttl` old. Only the same key ever shares an answer.
 *
 * Traced as one `ClickHouse.coalesce` span per caller (`coalesce.joined`: whether another caller's run served
 * it); a run is traced under the span of the caller that started it.
 */
export interface Coalescer {
  readonly run: <A, E>(key: string, effect: Effect.Effect<A, E>, expired?: () => E) => Effect.Effect<A, E>
  /** Keys with a run in flight or queued. */
  readonly active: () => number
}

export interface CoalesceOptions {
  /** Off: every caller runs its own effect (the TTL cache, if any, still applies). */
  readonly coalesce: boolean
  /** Zero: no cache. */
  readonly ttl: Duration.Duration
  /** Most cached answers kept; the oldest entry goes first. */
  readonly maxCached?: number
  /** How long a run may go on once its last caller left (default 100 ms). Zero: it is stopped at once. */
  readonly orphanGrace?: Duration.Duration
}

/** A caller waiting for a run: when its request must be answered, and how to answer it. */
interface Caller {
  readonly deadline: number
  readonly resume: (effect: Effect.Effect<unknown, unknown>) => void
  readonly expired: (() => unknown) | undefined
}

interface Batch {
  readonly effect: Effect.Effect<unknown, unknown>
  readonly callers: Set<Caller>
  exit: Exit.Exit<unknown, unknown> | undefined
  waiters: number
  startedAt: number
  fiber: Fiber.RuntimeFiber<unknown, unknown> | undefined
  /** For its callers' earliest deadline. */
  alarm: Alarm
  /** Once they all left: the timer that stops it. */
  cancelStop: () => void
}

interface Slot {
  running: Batch
  next: Batch | undefined
}

interface Cached {
  readonly value: unknown
  readonly startedAt: number
}

const coalesceSpan = { captureStackTrace: false, attributes: { "coalesce.joined": false } } as const

export const makeCoalescer = (options: CoalesceOptions): Effect.Effect<Coalescer, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Runs belong to the owner, not to whichever caller started them: closing its scope stops them.
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const runs = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
    yield* Effect.addFinalizer(() => Effect.suspend(() => Fiber.interruptAll([...runs])))
    const ttl = Duration.toMillis(options.ttl)
    const maxCached = options.maxCached ?? 10_000
    const orphanGraceMs = Duration.toMillis(options.orphanGrace ?? Duration.millis(100))
    const slots = new Map<string, Slot>()
    const cache = new Map<string, Cached>()

    const fromCache = (key: string, now: number): Cached | undefined => {
      const hit = cache.get(key)
      if (hit === undefined) return undefined
      if (now - hit.startedAt < ttl) {
        Instruments.cacheHits.update(1)
        return hit
      }
      cache.delete(key)
      return undefined
    }

    const remember = (key: string, value: unknown, startedAt: number) => {
      if (ttl <= 0) return
      cache.delete(key)
      cache.set(key, { value, startedAt })
      if (cache.size > maxCached) cache.delete(cache.keys().next().value!)
    }

    // A run is traced like the caller that started it: under its span, and not at all when its tracer is off
    // (the run's fiber is the owner's, whose tracer is on by default).
    const newBatch = (
      key: string,
      effect: Effect.Effect<unknown, unknown>,
      leader: Tracer.AnySpan | undefined,
      traced: boolean
    ): Batch => {
      const batch: Batch = {
        effect: !traced ? Effect.withTracerEnabled(effect, false) : leader === undefined ? effect : Effect.withParentSpan(effect, leader),
        callers: new Set(),
        exit: undefined,
        waiters: 1,
        startedAt: 0,
        fiber: undefined,
        alarm: makeAlarm((now, clock) => expire(key, batch, clock, now)),
        cancelStop: none
      }
      return batch
    }

    /** Runs the batch's effect in a fiber of the owner's: callers join it, none of them owns it. */
    const start = (key: string, batch: Batch): void => {
      const fiber = runFork(
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          batch.startedAt = now
          Instruments.coalesceRuns.update(1)
          return batch.effect
        }).pipe(Effect.onExit((exit) => Effect.sync(() => finish(key, batch, exit))))
      )
      if (batch.exit !== undefined) return
      batch.fiber = fiber
      runs.add(fiber)
      fiber.addObserver(() => runs.delete(fiber))
    }

    const finish = (key: string, batch: Batch, exit: Exit.Exit<unknown, unknown>): void => {
      if (Exit.isSuccess(exit)) remember(key, exit.value, batch.startedAt)
      const slot = slots.get(key)
      let following: Batch | undefined
      if (slot !== undefined && slot.running === batch) {
        following = slot.next
        if (following === undefined) slots.delete(key)
        else slot.running = following
        slot.next = undefined
      }
      batch.exit = exit
      batch.alarm.cancel()
      batch.cancelStop()
      for (const caller of batch.callers) caller.resume(exit)
      batch.callers.clear()
      if (following !== undefined) start(key, following)
    }

    const leave = (key: string, batch: Batch, clock: Clock.Clock): void => {
      batch.waiters--
      if (batch.waiters > 0) return
      batch.alarm.cancel()
      const slot = slots.get(key)
      if (slot?.next === batch) {
        slot.next = undefined
        return
      }
      const fiber = batch.fiber
      if (slot?.running !== batch || fiber === undefined) return
      if (orphanGraceMs <= 0) {
        runFork(Fiber.interrupt(fiber))
        return
      }
      // No caller can join a run in flight, so nothing but its end (`finish`) cancels this timer.
      batch.cancelStop = after(clock, orphanGraceMs, () => {
        batch.cancelStop = none
        runFork(Fiber.interrupt(fiber))
      })
    }

    /** Joins the next run for `key`, starting it now if none is in flight. */
    const enlist = (
      key: string,
      effect: Effect.Effect<unknown, unknown>,
      span: Tracer.AnySpan | undefined,
      traced: boolean
    ): Batch => {
      const slot = slots.get(key)
      if (slot === undefined) {
        const batch = newBatch(key, effect, span, traced)
        slots.set(key, { running: batch, next: undefined })
        start(key, batch)
        return batch
      }
      if (slot.next === undefined) {
        slot.next = newBatch(key, effect, span, traced)
      } else {
        slot.next.waiters++
        Instruments.coalesceJoined.update(1)
        if (span?._tag === "Span") span.attribute("coalesce.joined", true)
      }
      return slot.next
    }

    /** The callers whose deadline has come get `expired` and leave; returns the earliest deadline left. */
    const expire = (key: string, batch: Batch, clock: Clock.Clock, now: number): number => {
      let next = Number.POSITIVE_INFINITY
      for (const caller of batch.callers) {
        if (caller.deadline <= now) {
          batch.callers.delete(caller)
          leave(key, batch, clock)
          caller.resume(Effect.fail(caller.expired!()))
        } else {
          next = Math.min(next, caller.deadline)
        }
      }
      return next
    }

    /**
     * Joins a run and waits for its answer (or the request's deadline): one callback, no fiber or timer of its own.
     * A caller that is interrupted leaves when its fiber ends (an observer of the fiber, not a canceller: Effect wraps
     * an `async` with a canceller in an interrupt handler, about ten steps and four stack frames more per caller).
     */
    const join = <A, E>(
      fiber: Fiber.RuntimeFiber<A, E>,
      key: string,
      effect: Effect.Effect<A, E>,
      expired: (() => E) | undefined
    ): Effect.Effect<A, E> =>
      Effect.async<A, E>((resume) => {
        const batch = enlist(key, effect, fiber.currentSpan, isTracing(fiber))
        if (batch.exit !== undefined) return resume(batch.exit as Exit.Exit<A, E>)
        const deadline = expired === undefined ? Number.POSITIVE_INFINITY : deadlineOf(fiber)
        const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
        const gone = () => {
          if (batch.callers.delete(caller)) leave(key, batch, clock)
        }
        const caller: Caller = {
          deadline,
          resume: (answer) => {
            fiber.removeObserver(gone)
            resume(answer as Effect.Effect<A, E>)
          },
          expired
        }
        fiber.addObserver(gone)
        batch.callers.add(caller)
        if (Number.isFinite(deadline)) batch.alarm.arm(clock, deadline)
      })

    // Two steps per caller when untraced: one to read its fiber, one to wait.
    const shared = <A, E>(key: string, effect: Effect.Effect<A, E>, expired: (() => E) | undefined): Effect.Effect<A, E> => {
      const traced = Effect.withSpan(
        Effect.withFiberRuntime<A, E>((fiber) => join(fiber, key, effect, expired)),
        "ClickHouse.coalesce",
        coalesceSpan
      )
      return Effect.withFiberRuntime<A, E>((fiber) =>
        isTracing(fiber) ? traced : join(fiber, key, effect, expired)
      )
    }

    const cached = <A, E>(key: string, effect: Effect.Effect<A, E>, expired: (() => E) | undefined): Effect.Effect<A, E> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const hit = fromCache(key, now)
        if (hit !== undefined) return Effect.succeed(hit.value as A)
        // A shared run remembers its own answer when it ends; an unshared one is remembered here.
        return options.coalesce
          ? shared(key, effect, expired)
          : Effect.tap(effect, (value) => Effect.sync(() => remember(key, value, now)))
      })

    const run = <A, E>(key: string, effect: Effect.Effect<A, E>, expired?: () => E): Effect.Effect<A, E> =>
      ttl > 0 ? cached(key, effect, expired) : options.coalesce ? shared(key, effect, expired) : effect

    return { run, active: () => slots.size }
  })
