/**
 * The analytics queries' parameters and answers, as Schemas: the same Schemas validate requests (every 400),
 * describe the API (OpenAPI) and type the client.
 */
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

/** The last second a ClickHouse `DateTime` holds. */
export const maxSeconds = 0xffffffff

const rfc3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/

/** Milliseconds since the epoch, from RFC 3339 (any offset) or Unix seconds; undefined if neither. */
export const parseTimestamp = (text: string): number | undefined => {
  if (/^\d{1,10}$/.test(text)) return Number(text) * 1000
  const match = rfc3339.exec(text)
  if (match === null) return undefined
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number) as [number, number, number, number, number, number]
  // A day the month does not have (Date.parse would roll 2024-02-30 over into March).
  if (new Date(Date.UTC(year, month - 1, day)).getUTCDate() !== day || month < 1 || month > 12) return undefined
  if (hour > 23 || minute > 59 || second > 60) return undefined
  const ms = Date.parse(text.replace(" ", "T"))
  return Number.isNaN(ms) ? undefined : ms
}

/** Whole seconds, rounded up: with integer `ts`, `ts >= from` is `ts >= ceil(from)` and `ts < to` is `ts < ceil(to)`. */
export const toSeconds = (ms: number) => Math.ceil(ms / 1000)

const timestampMessage = "must be an RFC 3339 timestamp (2024-01-01T00:00:00Z, any offset) or Unix seconds, " +
  "between 1970-01-01T00:00:00Z and 2106-02-07T06:28:15Z"

/** A point in time in a query string, decoded to whole Unix seconds. */
export const Timestamp = Schema.transformOrFail(Schema.String, Schema.Int, {
  strict: true,
  decode: (text, _, ast) => {
    const ms = parseTimestamp(text)
    return ms === undefined || ms < 0 || toSeconds(ms) > maxSeconds
      ? ParseResult.fail(new ParseResult.Type(ast, text, timestampMessage))
      : ParseResult.succeed(toSeconds(ms))
  },
  encode: (seconds) => ParseResult.succeed(String(seconds))
}).annotations({ description: "RFC 3339 timestamp (any offset) or Unix seconds", message: () => ({ message: timestampMessage, override: true })
})

/** Any text of 1 to 256 characters (commas, quotes, backslashes and all). */
export const MetricName = Schema.String.pipe(
  Schema.filter((name) => {
    const length = [...name].length
    return length >= 1 && length <= 256
  })
).annotations({ description: "a metric name, 1 to 256 characters", message: () => ({ message: "must be 1 to 256 characters", override: true })
})

const Metric = Schema.Union(MetricName, Schema.Array(MetricName)).annotations({
  description: "one metric name; repeat the parameter for several",
  message: () => ({ message: "each must be 1 to 256 characters", override: true })
})

/** The filter every endpoint takes: which metrics (repeat `metric`; none: all), and the window `[from, to)`. */
export const FilterParams = Schema.Struct({
  metric: Schema.optional(Metric),
  from: Schema.optional(Timestamp),
  to: Schema.optional(Timestamp)
})

export const units = { s: 1, m: 60, h: 3600, d: 86400 } as const

/** An interval in its shortest spelling: 3600 → `1h`, 90 → `90s`. */
export const formatInterval = (seconds: number) =>
  seconds % units.d === 0
    ? `${seconds / units.d}d`
    : seconds % units.h === 0
    ? `${seconds / units.h}h`
    : seconds % units.m === 0
    ? `${seconds / units.m}m`
    : `${seconds}s`

const intervalMessage = "must be a positive whole number and a unit s, m, h or d (30s, 5m, 1h, 1d)"

/** A bucket width such as `30s`, `5m`, `1h`, `1d`, decoded to seconds. */
export const Interval = Schema.transformOrFail(Schema.String, Schema.Int, {
  strict: true,
  decode: (text, _, ast) => {
    const match = /^([1-9]\d{0,9})([smhd])$/.exec(text)
    const seconds = match === null ? NaN : Number(match[1]) * units[match[2] as keyof typeof units]
    return Number.isSafeInteger(seconds) && seconds <= maxSeconds
      ? ParseResult.succeed(seconds)
      : ParseResult.fail(new ParseResult.Type(ast, text, intervalMessage))
  },
  encode: (seconds) => ParseResult.succeed(formatInterval(seconds))
}).annotations({ description: "bucket width: 30s, 5m, 1h, 1d, ...", message: () => ({ message: intervalMessage, override: true })
})

export const aggregates = ["sum", "count", "avg", "min", "max", "p50", "p90", "p99"] as const
export const Aggregate = Schema.Literal(...aggregates).annotations({
  message: () => ({ message: `must be one of ${aggregates.join(", ")}`, override: true })
})
export type Aggregate = typeof Aggregate.Type

export const Fill = Schema.Literal("auto", "none").annotations({
  description: "auto: with both from and to, empty buckets appear (0 for sum and count, null otherwise); none: never",
  message: () => ({ message: "must be auto or none", override: true })
})

export const SeriesParams = Schema.Struct({
  ...FilterParams.fields,
  interval: Interval,
  agg: Schema.optional(Aggregate),
  fill: Schema.optional(Fill)
})

/** A filter in one canonical form: equal filters are equal values (and share coalesced runs). */
export interface Filter {
  /** Sorted, without duplicates; empty: every metric. */
  readonly metrics: ReadonlyArray<string>
  readonly from: Option.Option<number>
  readonly to: Option.Option<number>
}

const everything: Filter = { metrics: [], from: Option.none(), to: Option.none() }

export const normalizeFilter = (params: typeof FilterParams.Type): Filter =>
  params.metric === undefined && params.from === undefined && params.to === undefined ? everything : ({
  metrics: params.metric === undefined
    ? []
    : [...new Set(typeof params.metric === "string" ? [params.metric] : params.metric)].sort(compareNames),
  from: Option.fromNullable(params.from),
  to: Option.fromNullable(params.to)
  })

/** Names in ClickHouse's order: by their UTF-8 bytes. */
export const compareNames = (a: string, b: string) => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"))

/** Answers carry times as RFC 3339 in UTC, whole seconds. */
export const formatTimestamp = (seconds: number) => new Date(seconds * 1000).toISOString().replace(".000Z", "Z")

export const TotalResponse = Schema.Struct({ total: Schema.Number })
export type TotalResponse = typeof TotalResponse.Type

export const NameStats = Schema.Struct({ name: Schema.String, count: Schema.Int, first: Schema.String, last: Schema.String })
export const NamesResponse = Schema.Struct({ metrics: Schema.Array(NameStats) })
export type NamesResponse = typeof NamesResponse.Type

export const Summary = Schema.Struct({
  name: Schema.String,
  count: Schema.Int,
  sum: Schema.Number,
  avg: Schema.Number,
  min: Schema.Number,
  max: Schema.Number,
  p50: Schema.Number,
  p90: Schema.Number,
  p99: Schema.Number
})
export const SummaryResponse = Schema.Struct({ metrics: Schema.Array(Summary) })
export type SummaryResponse = typeof SummaryResponse.Type

export const Point = Schema.Struct({ ts: Schema.String, value: Schema.NullOr(Schema.Number) })
export const Series = Schema.Struct({ name: Schema.String, points: Schema.Array(Point) })
export const SeriesResponse = Schema.Struct({ interval: Schema.String, agg: Aggregate, series: Schema.Array(Series) })
export type SeriesResponse = typeof SeriesResponse.Type
