import { type Duration, Effect } from "effect"

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
  readonly overloaded: () => E
}

export const makeGate = <E>(options: GateOptions<E>): Gate<E> => {
  const { maxWaiting, overloaded, permits } = options

  let free = permits
  const waiters = new Set<() => void>()

  const release = () => {
    const next = waiters.values().next()
    if (next.done) {
      free++
    } else {
      waiters.delete(next.value)
      next.value()
    }
  }

  const take = Effect.async<void, E>((resume) => {
      if (free > 0) {
        free--
        resume(Effect.void)
        return
      }
      if (waiters.size >= maxWaiting) {
        resume(Effect.fail(overloaded()))
        return
      }
      let handedOver = false
      const wake = () => {
        handedOver = true
        resume(Effect.void)
      }
      waiters.add(wake)
      // Interrupted while waiting: leave the queue, or pass on a permit that was already handed over.
      return Effect.sync(() => {
        if (handedOver) release()
        else waiters.delete(wake)
      })
    })

  const takeWithin = take.pipe(Effect.timeoutFail({ duration: options.maxWait, onTimeout: overloaded }))

  return {
    withPermit: (self) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(takeWithin), () => Effect.ensuring(restore(self), Effect.sync(release)))
      ),
    waiting: () => waiters.size,
    inUse: () => permits - free
  }
}
