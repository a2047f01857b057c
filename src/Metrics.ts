import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { ClickHouse } from "./ClickHouse/ClickHouse.js"
import * as Sql from "./ClickHouse/Sql.js"
import { defaultQueryLimits, qualifiedName, type QueryLimits, queryLimits, type TableConfig, tableConfig } from "./Config.js"
import type { ClickHouseError } from "./Domain/ClickHouseError.js"
import { ClickHouseNumber } from "./Domain/Metrics.js"
import { withSpan } from "./Observability/Span.js"
import {
  type Aggregate,
  type Filter,
  formatInterval,
  formatTimestamp,
  type NamesResponse,
  type SeriesResponse,
  type SummaryResponse
} from "./Domain/Query.js"

/** A query the service will not run as asked (too many points or series): the caller's to change. */
export class InvalidQuery extends Data.TaggedError("InvalidQuery")<{ readonly message: string }> {}

export interface SeriesQuery {
  readonly filter: Filter
  /** Bucket width in seconds. */
  readonly interval: number
  readonly agg: Aggregate
  /** Empty buckets of a full window (`from` and `to` both given) appear: 0 for sum and count, null otherwise. */
  readonly fill: boolean
}

const TotalRow = Schema.Struct({ total: ClickHouseNumber })
const NameRow = Schema.Struct({ name: Schema.String, n: ClickHouseNumber, first: ClickHouseNumber, last: ClickHouseNumber })
const SummaryRow = Schema.Struct({
  name: Schema.String,
  n: ClickHouseNumber,
  s: ClickHouseNumber,
  a: ClickHouseNumber,
  lo: ClickHouseNumber,
  hi: ClickHouseNumber,
  p50: ClickHouseNumber,
  p90: ClickHouseNumber,
  p99: ClickHouseNumber
})
const PointRow = Schema.Struct({ name: Schema.String, bucket: ClickHouseNumber, value: Schema.NullOr(ClickHouseNumber) })
const ShapeRow = Schema.Struct({ series: ClickHouseNumber, points: ClickHouseNumber })

/** Nearest rank of the p-th percentile among `n` sorted values, 1-based: ceil(p × n / 100) in integers. */
const text = (raw: string): Sql.Statement => ({ parts: [raw] })

const rank = (p: number) => text(`intDiv(n * ${p} + 99, 100)`)

/** The aggregate of a bucket, from an allow-list: never from the caller's text. */
const aggregateSql: Record<Exclude<Aggregate, "p50" | "p90" | "p99">, string> = {
  sum: "sum(value)",
  count: "count()",
  avg: "avg(value)",
  min: "min(value)",
  max: "max(value)"
}

const percentile = (agg: Aggregate): number | undefined =>
  agg === "p50" ? 50 : agg === "p90" ? 90 : agg === "p99" ? 99 : undefined

/** The window's buckets, when both ends are given: the aligned start of the first, and how many. */
const windowBuckets = (filter: Filter, interval: number) =>
  Option.all([filter.from, filter.to]).pipe(
    Option.map(([from, to]) => {
      const first = Math.floor(from / interval) * interval
      return { first, count: Math.max(0, Math.ceil((to - first) / interval)) }
    })
  )

const make = (table: TableConfig, limits: QueryLimits) =>
  Effect.gen(function*() {
    const ch = yield* ClickHouse
    const from = text(`FROM ${qualifiedName(table)}`)

    const where = (filter: Filter): Sql.Statement => {
      const conditions: Array<Sql.Statement> = []
      if (filter.metrics.length > 0) conditions.push(Sql.sql`has(${Sql.strings(filter.metrics)}, metric_name)`)
      if (Option.isSome(filter.from)) conditions.push(Sql.sql`ts >= toDateTime(${Sql.uint32(filter.from.value)})`)
      if (Option.isSome(filter.to)) conditions.push(Sql.sql`ts < toDateTime(${Sql.uint32(filter.to.value)})`)
      return conditions.length === 0 ? text("") : Sql.sql` WHERE ${Sql.join(conditions, " AND ")}`
    }

    // The grand total, the most asked question, is one statement built once.
    const grandTotal = Sql.sql`SELECT sum(value) AS total ${from}`
    const unfiltered = (filter: Filter) => filter.metrics.length === 0 && Option.isNone(filter.from) && Option.isNone(filter.to)

    const totalOf = (statement: Sql.Statement): Effect.Effect<number, ClickHouseError> =>
      ch.select(statement, TotalRow).pipe(
        Effect.map((rows) => rows[0]?.total ?? 0),
        withSpan("Metrics.total")
      )
    const grandTotalRead = totalOf(grandTotal)

    const total = (filter: Filter): Effect.Effect<number, ClickHouseError> =>
      unfiltered(filter) ? grandTotalRead : totalOf(Sql.sql`SELECT sum(value) AS total ${from}${where(filter)}`)

    const names = (filter: Filter): Effect.Effect<NamesResponse, ClickHouseError> =>
      ch.select(
        Sql.sql`SELECT metric_name AS name, count() AS n, toUInt32(min(ts)) AS first, toUInt32(max(ts)) AS last ${from}${
          where(filter)
        } GROUP BY metric_name ORDER BY metric_name`,
        NameRow
      ).pipe(
        Effect.map((rows) => ({
          metrics: rows.map((row) => ({
            name: row.name,
            count: row.n,
            first: formatTimestamp(row.first),
            last: formatTimestamp(row.last)
          }))
        })),
        withSpan("Metrics.names")
      )

    const summary = (filter: Filter): Effect.Effect<SummaryResponse, ClickHouseError> =>
      ch.select(
        Sql.sql`SELECT name, n, s, a, lo, hi, sorted[${rank(50)}] AS p50, sorted[${rank(90)}] AS p90,
          sorted[${rank(99)}] AS p99
          FROM (SELECT metric_name AS name, count() AS n, sum(value) AS s, avg(value) AS a, min(value) AS lo,
            max(value) AS hi, arraySort(groupArray(value)) AS sorted ${from}${where(filter)} GROUP BY metric_name)
          ORDER BY name`,
        SummaryRow
      ).pipe(
        Effect.map((rows) => ({
          metrics: rows.map((row) => ({
            name: row.name,
            count: row.n,
            sum: row.s,
            avg: row.a,
            min: row.lo,
            max: row.hi,
            p50: row.p50,
            p90: row.p90,
            p99: row.p99
          }))
        })),
        withSpan("Metrics.summary")
      )

    /** How many series, and the most buckets with rows in any of them: to refuse a too large answer before it is made. */
    const shape = (query: SeriesQuery) =>
      ch.select(
        Sql.sql`SELECT count() AS series, max(b) AS points FROM (SELECT uniqExact(intDiv(toUInt32(ts), ${
          Sql.uint32(query.interval)
        })) AS b ${from}${where(query.filter)} GROUP BY metric_name)`,
        ShapeRow
      ).pipe(Effect.map((rows) => rows[0] ?? { series: 0, points: 0 }))

    const points = (query: SeriesQuery) => {
      const bucket = Sql.sql`intDiv(toUInt32(ts), ${Sql.uint32(query.interval)}) * ${Sql.uint32(query.interval)}`
      const p = percentile(query.agg)
      return ch.select(
        p === undefined
          ? Sql.sql`SELECT metric_name AS name, ${bucket} AS bucket, ${text(aggregateSql[query.agg as keyof typeof aggregateSql])} AS value
              ${from}${where(query.filter)} GROUP BY metric_name, bucket ORDER BY metric_name, bucket`
          : Sql.sql`SELECT name, bucket, sorted[${rank(p)}] AS value
              FROM (SELECT metric_name AS name, ${bucket} AS bucket, count() AS n, arraySort(groupArray(value)) AS sorted
                ${from}${where(query.filter)} GROUP BY metric_name, bucket)
              ORDER BY name, bucket`,
        PointRow
      )
    }

    const series = (query: SeriesQuery): Effect.Effect<SeriesResponse, ClickHouseError | InvalidQuery> =>
      Effect.gen(function*() {
        const window = query.fill ? windowBuckets(query.filter, query.interval) : Option.none()
        const tooMany = (count: number) =>
          new InvalidQuery({
            message: `interval: this window gives ${count} points per series, at most ${limits.maxPoints} are allowed; ` +
              "use a wider interval or a shorter window"
          })
        if (Option.isSome(window) && window.value.count > limits.maxPoints) return yield* tooMany(window.value.count)
        if (query.filter.metrics.length > limits.maxSeries) {
          return yield* new InvalidQuery({ message: `metric: at most ${limits.maxSeries} series per answer` })
        }
        const size = yield* shape(query)
        if (size.series > limits.maxSeries) {
          return yield* new InvalidQuery({
            message: `metric: this filter gives ${size.series} series, at most ${limits.maxSeries} are allowed; name the metrics`
          })
        }
        if (Option.isNone(window) && size.points > limits.maxPoints) return yield* tooMany(size.points)
        const rows = yield* points(query)
        const byName = new Map<string, Array<{ bucket: number; value: number | null }>>()
        for (const row of rows) {
          const list = byName.get(row.name) ?? []
          if (list.length === 0) byName.set(row.name, list)
          list.push({ bucket: row.bucket, value: row.value })
        }
        const empty = query.agg === "sum" || query.agg === "count" ? 0 : null
        return {
          interval: formatInterval(query.interval),
          agg: query.agg,
          series: [...byName].map(([name, found]) => ({
            name,
            points: Option.match(window, {
              onNone: () => found.map((point) => ({ ts: formatTimestamp(point.bucket), value: point.value })),
              onSome: ({ count, first }) => {
                const values = new Map(found.map((point) => [point.bucket, point.value]))
                return Array.from({ length: count }, (_, i) => {
                  const bucket = first + i * query.interval
                  return { ts: formatTimestamp(bucket), value: values.get(bucket) ?? empty }
                })
              }
            })
          }))
        }
      }).pipe(withSpan("Metrics.series"))

    return { total, names, summary, series } as const
  })

export class Metrics extends Effect.Service<Metrics>()("analytics-api/Metrics", {
  effect: Effect.flatMap(Effect.all([tableConfig, queryLimits]), ([table, limits]) => make(table, limits))
}) {
  /** The metrics service over a given table instead of the one named by the environment. */
  static readonly layer = (table: TableConfig, limits: QueryLimits = defaultQueryLimits) =>
    Layer.effect(Metrics, Effect.map(make(table, limits), Metrics.make))
}
