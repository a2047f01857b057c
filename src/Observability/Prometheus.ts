/**
 * `GET /metrics`: every Effect metric of the process in Prometheus' text format. The metrics are read through
 * @effect/opentelemetry's producer and written by OpenTelemetry's Prometheus serializer; the gauges that are
 * sampled (pool state, process) are read first.
 */
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as Resource from "@effect/opentelemetry/Resource"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import type { ResourceMetrics } from "@opentelemetry/sdk-metrics"
import * as Effect from "effect/Effect"
import * as Instruments from "./Instruments.js"
import { sampleProcess } from "./Process.js"

export const contentType = "text/plain; version=0.0.4; charset=utf-8"

// No timestamps (Prometheus stamps the scrape), target_info from the resource, no otel_scope_* label on every series.
const serializer = new PrometheusSerializer(undefined, false, undefined, false, true)

/** Effect's own runtime metrics (`effect_fiber_*`) stay out: a host's exporter still sees them. */
const oursOnly = (metrics: ResourceMetrics): ResourceMetrics => ({
  ...metrics,
  scopeMetrics: metrics.scopeMetrics.map((scope) => ({
    ...scope,
    metrics: scope.metrics.filter((metric) => !metric.descriptor.name.startsWith("effect_"))
  }))
})

/** The text of one scrape. */
export const makeExposition = (serviceName: string) =>
  Effect.gen(function*() {
    yield* sampleProcess
    const producer = yield* OtelMetrics.makeProducer.pipe(
      Effect.provide(Resource.layer({ serviceName, serviceVersion: Instruments.serviceVersion }))
    )
    return Effect.sync(Instruments.sampleAll).pipe(
      Effect.zipRight(Effect.promise(() => producer.collect())),
      Effect.map((collected) => serializer.serialize(oursOnly(collected.resourceMetrics)))
    )
  })

/** The `/metrics` handler; the process sampling it needs lives as long as the scope. */
export const makeHandler = (serviceName: string) =>
  Effect.map(
    makeExposition(serviceName),
    (exposition) =>
      Effect.map(exposition, (text) => HttpServerResponse.text(text, { contentType }))
  )
