/**
 * Traces over OTLP/HTTP through @effect/opentelemetry, configured by the standard OTEL_* variables.
 * Without an endpoint the tracer is disabled: every span is a no-op, so tracing costs the request path nothing.
 */
import * as OtlpSerialization from "@effect/opentelemetry/OtlpSerialization"
import * as OtlpTracer from "@effect/opentelemetry/OtlpTracer"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Tracer from "effect/Tracer"
import type { Sampler, TracingConfig } from "../Config.js"
import { serviceVersion } from "./Instruments.js"

/** A span of a trace that is not kept: it records nothing, and its children are not kept either. */
const dropped = (
  name: string,
  parent: Option.Option<Tracer.AnySpan>,
  context: Tracer.Span["context"],
  links: ReadonlyArray<Tracer.SpanLink>,
  startTime: bigint,
  kind: Tracer.SpanKind
): Tracer.Span => {
  const span: { -readonly [K in keyof Tracer.Span]: Tracer.Span[K] } = {
    _tag: "Span",
    name,
    spanId: Option.match(parent, { onNone: () => "0".repeat(16), onSome: (p) => p.spanId }),
    traceId: Option.match(parent, { onNone: () => "0".repeat(32), onSome: (p) => p.traceId }),
    parent,
    context,
    status: { _tag: "Started", startTime },
    attributes: new Map(),
    links,
    sampled: false,
    kind,
    end: (endTime, exit) => {
      span.status = { _tag: "Ended", startTime, endTime, exit }
    },
    attribute: () => undefined,
    event: () => undefined,
    addLinks: () => undefined
  }
  return span
}

/**
 * The OTel samplers: a trace is kept or dropped at its root, by ratio; a span inside this process follows its
 * parent; a parent that came with the request (`traceparent`) decides when the sampler is parent-based.
 */
export const sampled = (tracer: Tracer.Tracer, sampler: Sampler): Tracer.Tracer =>
  Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const keep = parent._tag === "Some" && (parent.value._tag === "Span" || sampler.parentBased)
        ? parent.value.sampled
        : sampler.ratio >= 1 || (sampler.ratio > 0 && Math.random() < sampler.ratio)
      return keep
        ? tracer.span(name, parent, context, links, startTime, kind, options)
        : dropped(name, parent, context, links, startTime, kind)
    },
    context: (f, fiber) => tracer.context(f, fiber)
  })

/**
 * The tracer the configuration asks for: OTLP/HTTP export with sampling, or tracing off. Off is Effect's built-in
 * tracer, which keeps nothing: the service's own spans skip it (`isTracing`) and the platform's request span is
 * turned off (App.ts). Not `setTracerEnabled(false)`: that is a fiber ref more on every request's fiber, and the
 * platform copies a request fiber's refs eight times per request; past four refs each copy grows its map (about
 * 3% of the instructions of a `/healthz` request, with the log floor's ref: Logging.ts).
 */
export const layer = (config: TracingConfig): Layer.Layer<never> =>
  Option.match(config.url, {
    onNone: () => Layer.empty,
    onSome: (url) =>
      Layer.unwrapScoped(
        OtlpTracer.make({
          url,
          headers: Redacted.value(config.headers),
          exportInterval: config.exportInterval,
          resource: { serviceName: config.serviceName, serviceVersion }
        }).pipe(Effect.map((tracer) => Layer.setTracer(sampled(tracer, config.sampler))))
      ).pipe(
        Layer.provide(config.protocol === "http/json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf),
        Layer.provide(FetchHttpClient.layer)
      )
  })
