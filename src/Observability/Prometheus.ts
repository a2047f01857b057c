/**
 * `GET /metrics`: every Effect metric of the process in Prometheus' text format (0.0.4), written straight from
 * Effect's registry. The gauges that are sampled (pool state, process) are read first. OpenTelemetry's metrics SDK and
 * its Prometheus serializer did the same through an object graph per scrape, and their modules cost the idle
 * process 3-5 MB of RSS.
 */
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as MetricKey from "effect/MetricKey"
import * as MetricKeyType from "effect/MetricKeyType"
import type * as MetricLabel from "effect/MetricLabel"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"
import * as Instruments from "./Instruments.js"
import { sampleProcess } from "./Process.js"

export const contentType = "text/plain; version=0.0.4; charset=utf-8"

const escapeHelp = (text: string) => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const escapeLabel = (text: string) => text.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")

const validName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/

const sanitize = (name: string) => validName.test(name) ? name : name.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/^[0-9]/, "_$&")

/** Label names are metric names without colons. */
const labelName = (name: string) => sanitize(name).replace(/:/g, "_")

const number = (value: number | bigint) =>
  typeof value === "bigint"
    ? value.toString()
    : Number.isNaN(value)
    ? "NaN"
    : value === Number.POSITIVE_INFINITY
    ? "+Inf"
    : value === Number.NEGATIVE_INFINITY
    ? "-Inf"
    : String(value)

const labels = (tags: ReadonlyArray<MetricLabel.MetricLabel>, extra?: readonly [string, string]) => {
  const pairs = tags.map((tag) => `${labelName(tag.key)}="${escapeLabel(tag.value)}"`)
  if (extra !== undefined) pairs.push(`${extra[0]}="${escapeLabel(extra[1])}"`)
  return pairs.length === 0 ? "" : `{${pairs.join(",")}}`
}

type Key = MetricKey.MetricKey.Untyped

/** One metric family: its `# TYPE` and the name its samples carry. */
const familyOf = (key: Key): { readonly name: string; readonly type: string } => {
  const name = sanitize(key.name)
  const type = key.keyType
  // A counter that only goes up is named `_total`; one that may go down is a gauge to Prometheus.
  const counter = { name: name.endsWith("_total") ? name : `${name}_total`, type: "counter" }
  if (MetricKeyType.isCounterKey(type)) return type.incremental ? counter : { name, type: "gauge" }
  if (MetricKeyType.isFrequencyKey(type)) return counter
  if (MetricKeyType.isHistogramKey(type)) return { name, type: "histogram" }
  if (MetricKeyType.isSummaryKey(type)) return { name, type: "summary" }
  return { name, type: "gauge" }
}

/** The sample lines of one metric (one set of labels). */
const samples = (name: string, tags: ReadonlyArray<MetricLabel.MetricLabel>, state: MetricState.MetricState.Untyped) => {
  if (MetricState.isCounterState(state)) return [`${name}${labels(tags)} ${number(state.count)}`]
  if (MetricState.isGaugeState(state)) return [`${name}${labels(tags)} ${number(state.value)}`]
  const own = labels(tags)
  const totals = (sum: number, count: number) => [`${name}_sum${own} ${number(sum)}`, `${name}_count${own} ${count}`]
  if (MetricState.isHistogramState(state)) {
    // Effect's buckets are cumulative already, and the last one is +Inf.
    const buckets = state.buckets.map(([boundary, count]) => `${name}_bucket${labels(tags, ["le", number(boundary)])} ${count}`)
    return [...buckets, ...totals(state.sum, state.count)]
  }
  if (MetricState.isSummaryState(state)) {
    const quantiles = state.quantiles.map(([q, value]) =>
      `${name}${labels(tags, ["quantile", String(q)])} ${number(Option.getOrElse(value, () => Number.NaN))}`
    )
    return [...quantiles, ...totals(state.sum, state.count)]
  }
  if (MetricState.isFrequencyState(state)) {
    return Array.from(state.occurrences, ([word, count]) => `${name}${labels(tags, ["key", word])} ${count}`)
  }
  return []
}

/**
 * The registry as exposition text, families in the order first registered. Effect's own runtime metrics
 * (`effect_*`) stay out: a host's exporter still sees them.
 */
export const expose = (target: { readonly serviceName: string; readonly serviceVersion: string }): string => {
  const families = new Map<string, { readonly help: string; readonly type: string; readonly lines: Array<string> }>()
  for (const { metricKey, metricState } of Metric.unsafeSnapshot()) {
    if (metricKey.name.startsWith("effect_")) continue
    const { name, type } = familyOf(metricKey)
    let family = families.get(name)
    if (family === undefined) {
      family = { help: Option.getOrElse(metricKey.description, () => name), type, lines: [] }
      families.set(name, family)
    }
    // Two metrics of one name and two kinds would make an exposition Prometheus refuses: the first kind wins.
    if (family.type === type) family.lines.push(...samples(name, metricKey.tags, metricState))
  }
  const out = [
    "# HELP target_info Target metadata",
    "# TYPE target_info gauge",
    `target_info{service_name="${escapeLabel(target.serviceName)}",service_version="${escapeLabel(target.serviceVersion)}"} 1`
  ]
  for (const [name, family] of families) {
    out.push(`# HELP ${name} ${escapeHelp(family.help)}`, `# TYPE ${name} ${family.type}`, ...family.lines)
  }
  return out.join("\n") + "\n"
}

/** The text of one scrape; the process sampling it needs lives as long as the scope. */
export const makeExposition = (serviceName: string) =>
  Effect.map(sampleProcess, () =>
    Effect.sync(() => {
      Instruments.sampleAll()
      return expose({ serviceName, serviceVersion: Instruments.serviceVersion })
    }))

/** The `/metrics` handler; the process sampling it needs lives as long as the scope. */
export const makeHandler = (serviceName: string) =>
  Effect.map(
    makeExposition(serviceName),
    (exposition) => Effect.map(exposition, (text) => HttpServerResponse.text(text, { contentType }))
  )
