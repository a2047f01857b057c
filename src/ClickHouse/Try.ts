import type { ClickHouseClient, ClickHouseSettings } from "@clickhouse/client"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Tracer from "effect/Tracer"
import { type ClickHouseError, ClickHouseUnavailable } from "../Domain/ClickHouseError.js"
import { newId } from "../Http/RequestId.js"
import { isTracing } from "../Observability/Span.js"
import { classify, clickHouseCode } from "./Classify.js"
import { after } from "./Deadline.js"
import { type Gate, urgent } from "./Gate.js"
import type { Tried } from "./Retry.js"

export interface Params {
  readonly abort_signal: AbortSignal
  readonly query_id: string
  readonly clickhouse_settings: ClickHouseSettings
}

export interface TryOptions {
  readonly gate: Gate<ClickHouseError>
  /** The replica's pooled client: one of its sockets per permit. */
  readonly client: ClickHouseClient
  readonly settings: ClickHouseSettings
  /** How each try ended, for the metrics and the try's span: "cancelled" when it was stopped unanswered. */
  readonly ended: (since: number, outcome: ClickHouseError | "ok" | "cancelled", span: Tracer.Span | undefined) => void
  /** A try stopped unanswered: make sure the server stops it too. */
  readonly cancelOnServer: (queryId: string) => void
  /** The deadline passed. */
  readonly timedOut: () => ClickHouseError
  /** Whether the replica answered (an error of the server's own counts) or failed to (see `replicaFailed`). */
  readonly health: (answered: boolean) => void
  /** Checked once a permit is held: true sends the try elsewhere (its replica left rotation while it queued). */
  readonly elsewhere?: () => boolean
}

/** The cause of a try given back unsent, to go to another replica: it costs no retry. */
export const rerouted = "rerouted: the replica left rotation while the try waited for it"

export const isRerouted = (error: ClickHouseError) => error._tag === "ClickHouseUnavailable" && error.cause === rerouted

/**
 * A failure of the replica rather than of the query: no answer from a server (a refused or broken connection, a
 * cut answer, a socket timeout). An error the server sent, with its code (a query error, its own timeout, a
 * Distributed table's shard unreachable), means this replica is up; a refusal for load (code 202) counts neither way.
 */
export const replicaFailed = (error: ClickHouseError): boolean | undefined => {
  if (error._tag === "ClickHouseOverloaded") return undefined
  if (error._tag === "ClickHouseQueryError") return false
  return clickHouseCode(error.cause) === undefined
}

const none = () => {}

/**
 * One try of a query, as one wait: a permit (FIFO, see Gate.ts), the query on one of the pool's sockets, and its
 * answer, all within `deadline` (`Clock` ms). With `hedgeAfterMs`, a try still unanswered that long after its query
 * started comes back `Stalled`, still running, for `hedgeRead`. Interrupted, or past its deadline, the query is
 * aborted (Node drops its socket) and stopped on the server. Callbacks and one `Effect.async` instead of an effect
 * per step: this is on the path of every read that is not coalesced. With a sampled span, it gets the query_id,
 * the try's number, and whether it is the first, a retry or a hedge.
 */
export const attempt = <A>(
  options: TryOptions,
  number: number,
  f: (client: ClickHouseClient, params: Params) => Promise<A>,
  deadline: number,
  hedgeAfterMs: number | undefined
): Effect.Effect<Tried<A>, ClickHouseError> =>
  Effect.clockWith((clock) => Effect.withFiberRuntime<Tried<A>, ClickHouseError>((fiber) => {
    const { client, gate } = options
    const isUrgent = fiber.getFiberRef(urgent)
    const current = fiber.currentSpan
    const span = isTracing(fiber) && current?._tag === "Span" && current.sampled
      ? current
      : undefined

    let outcome: Exit.Exit<A, ClickHouseError> | undefined
    let stopped = false
    let started = false
    let cancelQuery = none
    /** Who waits for the answer, each with its timer. */
    const waiting = new Map<(exit: Exit.Exit<A, ClickHouseError> | undefined) => void, () => void>()

    /** Calls back with the answer, or with nothing if `at` comes first (the query runs on); returns how to stop waiting. */
    const await_ = (at: number, done: (exit: Exit.Exit<A, ClickHouseError> | undefined) => void) => {
      if (outcome !== undefined) {
        done(outcome)
        return none
      }
      const left = at - clock.unsafeCurrentTimeMillis()
      if (left <= 0) {
        done(undefined)
        return none
      }
      waiting.set(done, Number.isFinite(at) ? after(clock, left, () => waiting.delete(done) && done(undefined)) : none)
      return () => {
        waiting.get(done)?.()
        waiting.delete(done)
      }
    }

    /** Stops the query if it has not answered, and gives back its connection (closed) and permit. */
    const stop = () => {
      if (stopped || !started || outcome !== undefined) return
      stopped = true
      cancelQuery()
    }

    const run = () => {
      started = true
      const queryId = newId()
      span?.attribute("clickhouse.query_id", queryId)
      span?.attribute("clickhouse.attempt", number)
      span?.attribute("clickhouse.try", number === 1 ? "first" : isUrgent ? "hedge" : "retry")
      const controller = new AbortController()
      const since = performance.now()
      const settle = (exit: Exit.Exit<A, ClickHouseError>) => {
        if (stopped) return
        outcome = exit
        const error = Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined
        gate.release()
        options.ended(since, error ?? "ok", span)
        const failed = error === undefined ? false : replicaFailed(error)
        if (failed !== undefined) options.health(!failed)
        for (const [done, cancelTimer] of waiting) {
          cancelTimer()
          done(exit)
        }
        waiting.clear()
      }
      cancelQuery = () => {
        controller.abort()
        gate.release()
        options.ended(since, "cancelled", span)
        options.cancelOnServer(queryId)
        for (const cancelTimer of waiting.values()) cancelTimer()
        waiting.clear()
      }
      f(client, { abort_signal: controller.signal, query_id: queryId, clickhouse_settings: options.settings }).then(
        (value) => settle(Exit.succeed(value)),
        (cause) => settle(Exit.fail(classify(cause)))
      )
    }

    /** The answer within the deadline; past it, the query is stopped. */
    const rest = Effect.async<A, ClickHouseError>((resume) => {
      const leave = await_(deadline, (exit) => {
        if (exit !== undefined) return resume(exit)
        stop()
        resume(Effect.fail(options.timedOut()))
      })
      return Effect.sync(leave)
    })

    const lost = Effect.sync(() => {
      if (outcome === undefined) options.health(false)
    })

    // Traced, the wait for a permit is a span of its own.
    const waitSpan = span === undefined ? Effect.succeed(undefined) : Effect.makeSpan("ClickHouse.poolWait")
    return Effect.flatMap(waitSpan, (wait) => Effect.async<Tried<A>, ClickHouseError>((resume) => {
      let leave = none
      const leaveQueue = gate.admit(clock, isUrgent, deadline, () => {
        wait?.end(clock.unsafeCurrentTimeNanos(), Exit.void)
        if (options.elsewhere?.() === true) {
          gate.release()
          return resume(Effect.fail(new ClickHouseUnavailable({ cause: rerouted })))
        }
        run()
        const hedgeAt = hedgeAfterMs === undefined ? Number.POSITIVE_INFINITY : clock.unsafeCurrentTimeMillis() + hedgeAfterMs
        leave = await_(Math.min(hedgeAt, deadline), (exit) => {
          if (exit !== undefined) return resume(Exit.map(exit, (value) => ({ _tag: "Answered", value })))
          if (hedgeAt < deadline) return resume(Exit.succeed({ _tag: "Stalled", rest, cancel: Effect.sync(stop), lost }))
          stop()
          resume(Effect.fail(options.timedOut()))
        })
      }, (error) => {
        wait?.end(clock.unsafeCurrentTimeNanos(), Exit.fail(error))
        resume(Effect.fail(error))
      })
      return Effect.sync(() => {
        if (!started) wait?.end(clock.unsafeCurrentTimeNanos(), Exit.interrupt(fiber.id()))
        leaveQueue()
        leave()
        stop()
      })
    }))
  }))
