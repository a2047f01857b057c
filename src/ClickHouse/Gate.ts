import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import { makeAlarm } from "./Deadline.js"

/**
 * Set for work that belongs to a caller already admitted once (a hedged second try): it waits ahead of
 * newcomers, so a stalled try is relieved in milliseconds, not after the whole queue.
 */
export const urgent: FiberRef.FiberRef<boolean> = FiberRef.unsafeMake(false)

/**
 * A FIFO semaphore that hands a released permit straight to the oldest waiter.
 *
 * Why not `Effect.makeSemaphore` (which `Pool` uses inside): in effect 3.x a release wakes every waiter,
 * each re-checks and all but one go back to sleep, so N waiters cost O(N) per release and O(N²) per burst.
 * With 2000 callers queued behind a pool of 8 that pinned a core and grew the heap past 3 GB.
 * Here a release wakes exactly one waiter, and the queue has a hard bound. Waiting costs no fiber and no timer: a
 * wait is two callbacks, and the queue has one timer for the earliest end of a wait (Deadline.ts).
 */
export interface Gate<E> {
  /**
   * Runs `self` holding a permit. Waits FIFO for at most `maxWait`; fails with `overloaded` after that,
   * or at once when `maxWaiting` callers already wait. A `deadline` (`Clock` ms) that comes first ends the
   * wait with `timedOut`.
   */
  readonly withPermit: <A, E1, R>(self: Effect.Effect<A, E1, R>, deadline?: number) => Effect.Effect<A, E | E1, R>
  /**
   * `withPermit` for callbacks: `admitted` once a permit is held (give it back with `release`), or `refused` with
   * the reason. Returns how to leave the queue before either (a no-op after).
   */
  readonly admit: (
    clock: Clock.Clock,
    urgent: boolean,
    deadline: number,
    admitted: () => void,
    refused: (error: E) => void
  ) => () => void
  readonly release: () => void
  readonly waiting: () => number
  readonly inUse: () => number
}

export interface GateOptions<E> {
  readonly permits: number
  readonly maxWaiting: number
  readonly maxWait: Duration.DurationInput
  readonly overloaded: (reason: "queue_full" | "wait_exceeded") => E
  /** The caller's deadline passed while it waited. */
  readonly timedOut?: () => E
  /** Called with the seconds each admitted caller waited. */
  readonly onAdmit?: (waited: number) => void
}

const none = () => {}

/** A caller in the queue: what to do when a permit is its own, and when its wait is over first. */
interface Waiter {
  readonly until: number
  readonly admit: () => void
  readonly expire: () => void
}

export const makeGate = <E>(options: GateOptions<E>): Gate<E> => {
  const { maxWaiting, onAdmit, overloaded, permits } = options
  const maxWaitMs = Duration.toMillis(options.maxWait)
  const timedOut = options.timedOut ?? (() => overloaded("wait_exceeded"))

  let free = permits
  const waiters = new Set<Waiter>()
  const urgentWaiters = new Set<Waiter>()
  // One timer for the whole queue, armed for its earliest end: a caller that gets its permit leaves it be. When it
  // fires, the callers whose wait is over leave with their error.
  const alarm = makeAlarm((now) => {
    let next = Number.POSITIVE_INFINITY
    for (const queue of [urgentWaiters, waiters]) {
      for (const waiter of queue) {
        if (waiter.until > now) {
          next = Math.min(next, waiter.until)
        } else {
          queue.delete(waiter)
          waiter.expire()
        }
      }
    }
    return next
  })

  /** An empty queue keeps no timer (nor the process alive). */
  const settled = () => {
    if (waiters.size + urgentWaiters.size === 0) alarm.cancel()
  }

  const release = () => {
    const queue = urgentWaiters.size > 0 ? urgentWaiters : waiters
    const next = queue.values().next()
    if (next.done) {
      free++
    } else {
      queue.delete(next.value)
      settled()
      next.value.admit()
    }
  }

  const admit: Gate<E>["admit"] = (clock, isUrgent, deadline, admitted, refused) => {
    if (free > 0) {
      free--
      onAdmit?.(0)
      admitted()
      return none
    }
    if (waiters.size + urgentWaiters.size >= maxWaiting) {
      refused(overloaded("queue_full"))
      return none
    }
    const since = clock.unsafeCurrentTimeMillis()
    const limit = since + maxWaitMs
    const queue = isUrgent ? urgentWaiters : waiters
    const waiter: Waiter = {
      until: Math.min(limit, deadline),
      admit: () => {
        onAdmit?.((clock.unsafeCurrentTimeMillis() - since) / 1000)
        admitted()
      },
      expire: () => refused(deadline < limit ? timedOut() : overloaded("wait_exceeded"))
    }
    queue.add(waiter)
    alarm.arm(clock, waiter.until)
    return () => {
      if (queue.delete(waiter)) settled()
    }
  }

  /** `ticket.held` turns true the moment a permit is ours, even if this fiber never gets to see it. */
  const take = (ticket: { held: boolean }, deadline: number) =>
    Effect.clockWith((clock) =>
      Effect.flatMap(FiberRef.get(urgent), (isUrgent) =>
        Effect.async<void, E>((resume) => {
          const leave = admit(clock, isUrgent, deadline, () => {
            ticket.held = true
            resume(Effect.void)
          }, (error) => resume(Effect.fail(error)))
          return Effect.sync(leave)
        }))
    )

  return {
    withPermit: (self, deadline = Number.POSITIVE_INFINITY) =>
      Effect.uninterruptibleMask((restore) => {
        const ticket = { held: false }
        return restore(take(ticket, deadline)).pipe(
          // Interrupted or timed out just as a permit was handed over: pass it on.
          Effect.onExit((exit) => Exit.isFailure(exit) && ticket.held ? Effect.sync(release) : Effect.void),
          Effect.flatMap(() => Effect.ensuring(restore(self), Effect.sync(release)))
        )
      }),
    admit,
    release,
    waiting: () => waiters.size + urgentWaiters.size,
    inUse: () => permits - free
  }
}
