import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import { after } from "./Deadline.js"

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
 * Here a release wakes exactly one waiter, and the queue has a hard bound. Waiting costs no fiber: the wait and its
 * time limit are one callback each (Deadline.ts).
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

export const makeGate = <E>(options: GateOptions<E>): Gate<E> => {
  const { maxWaiting, onAdmit, overloaded, permits } = options
  const maxWaitMs = Duration.toMillis(options.maxWait)
  const timedOut = options.timedOut ?? (() => overloaded("wait_exceeded"))

  let free = permits
  const waiters = new Set<() => void>()
  const urgentWaiters = new Set<() => void>()

  const release = () => {
    const queue = urgentWaiters.size > 0 ? urgentWaiters : waiters
    const next = queue.values().next()
    if (next.done) {
      free++
    } else {
      queue.delete(next.value)
      next.value()
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
    const wake = () => {
      cancelTimer()
      onAdmit?.((clock.unsafeCurrentTimeMillis() - since) / 1000)
      admitted()
    }
    queue.add(wake)
    const cancelTimer = after(clock, Math.min(limit, deadline) - since, () => {
      queue.delete(wake)
      refused(deadline < limit ? timedOut() : overloaded("wait_exceeded"))
    })
    return () => {
      if (queue.delete(wake)) cancelTimer()
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
