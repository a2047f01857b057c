import { type Duration, Effect, Exit, FiberRef } from "effect"
import { withSpan } from "../Observability/Span.js"

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
 * Here a release wakes exactly one waiter, and the queue has a hard bound.
 */
export interface Gate<E> {
  /**
   * Runs `self` holding a permit. Waits FIFO for at most `maxWait`; fails with `overloaded` after that,
   * or at once when `maxWaiting` callers already wait.
   */
  readonly withPermit: <A, E1, R>(self: Effect.Effect<A, E1, R>) => Effect.Effect<A, E | E1, R>
  readonly waiting: () => number
  readonly inUse: () => number
}

export interface GateOptions<E> {
  readonly permits: number
  readonly maxWaiting: number
  readonly maxWait: Duration.DurationInput
  readonly overloaded: (reason: "queue_full" | "wait_exceeded") => E
  /** Called with the seconds each admitted caller waited. */
  readonly onAdmit?: (waited: number) => void
  /** The waiting is traced as a span of this name. */
  readonly waitSpan?: string
}

export const makeGate = <E>(options: GateOptions<E>): Gate<E> => {
  const { maxWaiting, onAdmit, overloaded, permits, waitSpan } = options
  const traced = waitSpan === undefined ? undefined : withSpan(waitSpan)
  const waitExceeded = () => overloaded("wait_exceeded")

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

  /** `ticket.held` turns true the moment a permit is ours, even if this fiber never gets to see it. */
  const take = (ticket: { held: boolean }, queue: Set<() => void>) => {
    const since = onAdmit === undefined ? 0 : performance.now()
    const admitted = onAdmit === undefined ? Effect.void : Effect.sync(() => onAdmit((performance.now() - since) / 1000))
    const waited = Effect.async<void, E>((resume) => {
      if (free > 0) {
        free--
        ticket.held = true
        resume(Effect.void)
        return
      }
      if (waiters.size + urgentWaiters.size >= maxWaiting) {
        resume(Effect.fail(overloaded("queue_full")))
        return
      }
      const wake = () => {
        ticket.held = true
        resume(Effect.void)
      }
      queue.add(wake)
      return Effect.sync(() => {
        if (!ticket.held) queue.delete(wake)
      })
    }).pipe(Effect.timeoutFail({ duration: options.maxWait, onTimeout: waitExceeded }), Effect.zipRight(admitted))
    return traced === undefined ? waited : traced(waited)
  }

  return {
    withPermit: (self) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(FiberRef.get(urgent), (isUrgent) => {
          const ticket = { held: false }
          return restore(take(ticket, isUrgent ? urgentWaiters : waiters)).pipe(
            // Interrupted or timed out just as a permit was handed over: pass it on.
            Effect.onExit((exit) => Exit.isFailure(exit) && ticket.held ? Effect.sync(release) : Effect.void),
            Effect.flatMap(() => Effect.ensuring(restore(self), Effect.sync(release)))
          )
        })
      ),
    waiting: () => waiters.size + urgentWaiters.size,
    inUse: () => permits - free
  }
}
