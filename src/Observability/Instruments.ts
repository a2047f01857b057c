/**
 * Every metric the service records, as Effect `Metric`s in the global registry (so a host app's exporter sees
 * them too), named as Prometheus expects: `analytics_` prefix, base units in the name, `_total` on counters,
 * label values from small fixed sets.
 *
 * Updates go through `series`: a label set is resolved to its registry entry once, because `Metric.tagged`
 * looks the labels up again on every update, which is too slow for the request path.
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"
import { createRequire } from "node:module"

/** The package's version (from src/ and from dist/ alike, package.json is two folders up). */
export const serviceVersion: string = (createRequire(import.meta.url)("../../package.json") as { version: string }).version

export interface Series<In> {
  readonly update: (input: In) => void
  readonly modify: (input: In) => void
}

/** The metric with its labels given in order, one resolved series per distinct set of values. */
const series = <T, In, Out>(metric: Metric.Metric<T, In, Out>, keys: ReadonlyArray<string>) => {
  // One level per label, keyed by the value itself: the values come from small fixed sets of strings whose hashes
  // V8 keeps, where a joined key would be a new string to hash on every update.
  interface Level {
    readonly next: Map<string, Level>
    found?: Series<In>
  }
  const root: Level = { next: new Map() }
  return (...values: ReadonlyArray<string>): Series<In> => {
    let level = root
    for (const value of values) {
      let next = level.next.get(value)
      if (next === undefined) level.next.set(value, next = { next: new Map() })
      level = next
    }
    if (level.found === undefined) {
      const tags = keys.map((key, i) => MetricLabel.make(key, values[i] ?? ""))
      level.found = {
        update: (input) => metric.unsafeUpdate(input, tags),
        modify: (input) => metric.unsafeModify(input, tags)
      }
      // Registered at once, so a counter shows 0 before its first event and rate() sees the first one.
      metric.unsafeValue(tags)
    }
    return level.found
  }
}

const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })

const seconds = MetricBoundaries.fromIterable([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30])

// HTTP
export const httpRequests = series(
  counter("analytics_http_requests_total", "HTTP requests answered, by route template, method and status (499: the client left)"),
  ["route", "method", "status"]
)
export const httpDuration = series(
  Metric.histogram("analytics_http_request_duration_seconds", seconds, "Time from the request reaching the API to its answer"),
  ["route", "method"]
)
export const httpInFlight = series(Metric.gauge("analytics_http_requests_in_flight", { description: "Requests being answered" }), [])()
export const httpErrors = series(
  counter("analytics_http_errors_total", "Error answers by their stable error code (the code in the JSON body)"),
  ["code"]
)

// Pool and gate
export const poolSize = series(Metric.gauge("analytics_pool_size", { description: "Pooled ClickHouse connections (CLICKHOUSE_POOL_SIZE)" }), [])()
export const poolInUse = series(Metric.gauge("analytics_pool_in_use", { description: "Pooled connections running a query" }), [])()
export const poolWaiting = series(Metric.gauge("analytics_pool_waiting", { description: "Callers queued for a pooled connection" }), [])()
export const poolWait = series(
  Metric.histogram("analytics_pool_wait_seconds", seconds, "Time a ClickHouse try waited for a pooled connection (admitted ones)"),
  []
)()
export type Rejection = "queue_full" | "wait_exceeded"
export const poolRejections = series(
  counter("analytics_pool_rejections_total", "Callers refused a pooled connection (503 overloaded): the queue was full, or the wait too long"),
  ["reason"]
)

// Coalescer and cache
export const coalesceRuns = series(counter("analytics_coalesce_runs_total", "Reads run on ClickHouse on behalf of one or more callers"), [])()
export const coalesceJoined = series(
  counter("analytics_coalesce_joined_total", "Callers served by a run another caller started (queries saved)"),
  []
)()
export const cacheHits = series(counter("analytics_cache_hits_total", "Reads answered from the TTL cache (CACHE_TTL_MS)"), [])()

// ClickHouse calls
export type Operation = "query" | "command" | "insert"
export type ErrorClass = "unavailable" | "overloaded" | "timeout" | "query" | "bad_response"
export const clickHouseDuration = series(
  Metric.histogram(
    "analytics_clickhouse_try_duration_seconds",
    seconds,
    "One try on ClickHouse, from holding a connection to its end; outcome ok, an error class, or cancelled"
  ),
  ["operation", "outcome"]
)
export const clickHouseErrors = series(
  counter("analytics_clickhouse_errors_total", "Failed ClickHouse tries (and calls past their deadline), by error class"),
  ["class"]
)
export const clickHouseRetries = series(counter("analytics_clickhouse_retries_total", "Reads tried again, by the class of the failure"), [
  "class"
])
export const hedgesFired = series(counter("analytics_clickhouse_hedges_total", "Second tries started for a read with no answer yet"), [])()
export const hedgesWon = series(counter("analytics_clickhouse_hedges_won_total", "Hedged reads whose second try answered first"), [])()
export const budgetExhausted = series(
  counter("analytics_clickhouse_retry_budget_exhausted_total", "Retries or hedges not made because the retry budget was empty"),
  ["kind"]
)
export const cancelled = series(
  counter(
    "analytics_clickhouse_cancelled_total",
    "Tries stopped before their end (deadline, caller gone, hedge lost): the HTTP request aborted, or KILL QUERY sent"
  ),
  ["method"]
)

// Process (sampled at each scrape)
export const residentMemory = series(Metric.gauge("process_resident_memory_bytes", { description: "Resident set size" }), [])()
export const heapUsed = series(Metric.gauge("nodejs_heap_used_bytes", { description: "V8 heap in use" }), [])()
export const heapTotal = series(Metric.gauge("nodejs_heap_total_bytes", { description: "V8 heap allocated" }), [])()
export const uptime = series(Metric.gauge("process_uptime_seconds", { description: "Time since the process started" }), [])()
const delayGauge = (name: string, what: string) =>
  series(Metric.gauge(`nodejs_eventloop_delay_${name}_seconds`, { description: `Event-loop delay since the previous scrape: ${what}` }), [])()
export const eventLoopDelayP50 = delayGauge("p50", "median")
export const eventLoopDelayP99 = delayGauge("p99", "99th percentile")
export const eventLoopDelayMax = delayGauge("max", "longest")
export const buildInfo = series(
  Metric.gauge("analytics_build_info", {
    description: "Always 1: the service's version, its ClickHouse backend and that server's version"
  }),
  ["version", "backend", "clickhouse_version"]
)

export const replicaInRotation = series(
  Metric.gauge("analytics_clickhouse_replica_in_rotation", {
    description: "1 while the replica takes reads (its circuit breaker closed), 0 while it is out of rotation"
  }),
  ["replica"]
)
export const replicaTransitions = series(
  counter("analytics_clickhouse_replica_transitions_total", "Circuit-breaker changes per replica, by the state entered"),
  ["replica", "state"]
)

/** The class of a ClickHouse failure, as a label value. */
export const errorClass = (tag: string): ErrorClass =>
  tag === "ClickHouseUnavailable"
    ? "unavailable"
    : tag === "ClickHouseOverloaded"
    ? "overloaded"
    : tag === "ClickHouseTimeout"
    ? "timeout"
    : tag === "ClickHouseQueryError"
    ? "query"
    : "bad_response"

/** Gauges read at each scrape (pool state, process), registered by whoever owns what they read. */
const samplers = new Set<() => void>()

export const addSampler = (sample: () => void): (() => void) => {
  samplers.add(sample)
  return () => {
    samplers.delete(sample)
  }
}

export const sampleAll = () => {
  for (const sample of samplers) sample()
}

/** Pools of every ClickHouse service in the process (usually one): the pool gauges are their sums. */
const pools = new Set<() => { readonly size: number; readonly inUse: number; readonly waiting: number }>()

addSampler(() => {
  let size = 0
  let inUse = 0
  let waiting = 0
  for (const state of pools) {
    const now = state()
    size += now.size
    inUse += now.inUse
    waiting += now.waiting
  }
  poolSize.update(size)
  poolInUse.update(inUse)
  poolWaiting.update(waiting)
})

export const addPool = (state: () => { readonly size: number; readonly inUse: number; readonly waiting: number }) => {
  pools.add(state)
  return () => {
    pools.delete(state)
  }
}
