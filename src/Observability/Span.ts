import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import type * as Tracer from "effect/Tracer"

const noStack = { captureStackTrace: false } as const

const builtInTracer = Effect.runSync(Effect.tracer)

/**
 * Whether a span made here goes anywhere: the tracer is on and is not Effect's built-in one, which exports nothing.
 * The standalone service untraced keeps the built-in tracer rather than turning the tracer off (Tracing.ts).
 */
export const isTracing = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean =>
  fiber.currentTracer !== builtInTracer && fiber.getFiberRef(FiberRef.currentTracerEnabled)

/**
 * `Effect.withSpan` without the call site's stack (capturing it per request costs about a tenth of the
 * throughput), and skipped outright when no span would be kept (`isTracing`): even a no-op span costs a context
 * per call.
 */
export const withSpan = (name: string, options: Tracer.SpanOptions = {}) => {
  const withStack = { ...noStack, ...options }
  return <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withFiberRuntime((fiber) =>
      isTracing(fiber) ? Effect.withSpan(self, name, withStack) : self
    )
}
