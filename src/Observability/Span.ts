import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type * as Tracer from "effect/Tracer"

const noStack = { captureStackTrace: false } as const

/**
 * `Effect.withSpan` without the call site's stack (capturing it per request costs about a tenth of the
 * throughput), and skipped outright when the tracer is disabled: even a no-op span costs a context per call.
 */
export const withSpan = (name: string, options: Tracer.SpanOptions = {}) => {
  const withStack = { ...noStack, ...options }
  return <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withFiberRuntime((fiber) =>
      fiber.getFiberRef(FiberRef.currentTracerEnabled) ? Effect.withSpan(self, name, withStack) : self
    )
}
