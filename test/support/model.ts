/**
 * A plain TypeScript model of the analytics queries over rows held in memory: what every endpoint must
 * answer, computed without ClickHouse. Timestamps are whole Unix seconds.
 */
import { compareNames, formatInterval, formatTimestamp } from "../../src/Domain/Query.ts"

export interface Row {
  readonly ts: number
  readonly metric_name: string
  readonly value: number
}

const start = 1_704_067_200 // 2024-01-01T00:00:00Z

/** The six demo rows (total 458), with their times as Unix seconds. */
export const demo: ReadonlyArray<Row> = [
  { ts: start, metric_name: "page_views", value: 100 },
  { ts: start + 3600, metric_name: "page_views", value: 150 },
  { ts: start + 7200, metric_name: "page_views", value: 200 },
  { ts: start, metric_name: "errors", value: 2 },
  { ts: start + 3600, metric_name: "errors", value: 1 },
  { ts: start + 7200, metric_name: "errors", value: 5 }
]

export interface ModelQuery {
  readonly metrics: ReadonlyArray<string>
  readonly from?: number | undefined
  readonly to?: number | undefined
}

export type Agg = "sum" | "count" | "avg" | "min" | "max" | "p50" | "p90" | "p99"

const matches = (row: Row, q: ModelQuery) =>
  (q.metrics.length === 0 || q.metrics.includes(row.metric_name)) &&
  (q.from === undefined || row.ts >= q.from) &&
  (q.to === undefined || row.ts < q.to)

const groups = <K>(rows: ReadonlyArray<Row>, key: (row: Row) => K) => {
  const map = new Map<K, Array<Row>>()
  for (const row of rows) {
    const k = key(row)
    const list = map.get(k)
    if (list === undefined) map.set(k, [row])
    else list.push(row)
  }
  return map
}

const byName = (rows: ReadonlyArray<Row>) => [...groups(rows, (row) => row.metric_name)].sort(([a], [b]) => compareNames(a, b))

/** Nearest rank: the smallest value with at least p% of the values at or below it. */
export const nearestRank = (values: ReadonlyArray<number>, p: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor((p * sorted.length + 99) / 100) - 1]!
}

const aggregate = (values: ReadonlyArray<number>, agg: Agg): number => {
  switch (agg) {
    case "sum":
      return values.reduce((a, v) => a + v, 0)
    case "count":
      return values.length
    case "avg":
      return values.reduce((a, v) => a + v, 0) / values.length
    case "min":
      return Math.min(...values)
    case "max":
      return Math.max(...values)
    case "p50":
      return nearestRank(values, 50)
    case "p90":
      return nearestRank(values, 90)
    case "p99":
      return nearestRank(values, 99)
  }
}

export const total = (rows: ReadonlyArray<Row>, q: ModelQuery) => ({
  total: rows.filter((row) => matches(row, q)).reduce((a, row) => a + row.value, 0)
})

export const names = (rows: ReadonlyArray<Row>, q: ModelQuery) => ({
  metrics: byName(rows.filter((row) => matches(row, q))).map(([name, list]) => ({
    name,
    count: list.length,
    first: formatTimestamp(Math.min(...list.map((row) => row.ts))),
    last: formatTimestamp(Math.max(...list.map((row) => row.ts)))
  }))
})

export const summary = (rows: ReadonlyArray<Row>, q: ModelQuery) => ({
  metrics: byName(rows.filter((row) => matches(row, q))).map(([name, list]) => {
    const values = list.map((row) => row.value)
    return {
      name,
      count: values.length,
      sum: aggregate(values, "sum"),
      avg: aggregate(values, "avg"),
      min: aggregate(values, "min"),
      max: aggregate(values, "max"),
      p50: aggregate(values, "p50"),
      p90: aggregate(values, "p90"),
      p99: aggregate(values, "p99")
    }
  })
})

export const series = (rows: ReadonlyArray<Row>, q: ModelQuery & { interval: number; agg: Agg; fill: boolean }) => {
  const filled = q.fill && q.from !== undefined && q.to !== undefined
  const first = filled ? Math.floor(q.from! / q.interval) * q.interval : 0
  const count = filled ? Math.max(0, Math.ceil((q.to! - first) / q.interval)) : 0
  return {
    interval: formatInterval(q.interval),
    agg: q.agg,
    series: byName(rows.filter((row) => matches(row, q))).map(([name, list]) => {
      const buckets = [...groups(list, (row) => Math.floor(row.ts / q.interval) * q.interval)]
        .sort(([a], [b]) => a - b)
        .map(([bucket, inBucket]) => ({ bucket, value: aggregate(inBucket.map((row) => row.value), q.agg) }))
      const points = filled
        ? Array.from({ length: count }, (_, i) => {
          const bucket = first + i * q.interval
          const found = buckets.find((b) => b.bucket === bucket)
          return { ts: formatTimestamp(bucket), value: found?.value ?? (q.agg === "sum" || q.agg === "count" ? 0 : null) }
        })
        : buckets.map((b) => ({ ts: formatTimestamp(b.bucket), value: b.value as number | null }))
      return { name, points }
    })
  }
}

/**
 * Float tolerance: ClickHouse adds in its own order, so sums and averages may differ from the model's by
 * rounding, bounded relative to the sum of magnitudes. Everything else must be equal.
 */
export const tolerance = (values: ReadonlyArray<number>) => 1e-9 * values.reduce((a, v) => a + Math.abs(v), 0) + 1e-9

/** Sums and averages are compared within the tolerance; every other number exactly. */
export const sumsAndAverages = (path: string) => /\.(total|sum|avg)$/.test(path)

/** Compares an answer with the model's: numbers within `tol` where `approximate(path)`, exact elsewhere. */
export const agree = (
  actual: unknown,
  expected: unknown,
  tol: number,
  approximateAt: (path: string) => boolean = sumsAndAverages,
  path = ""
): string | undefined => {
  if (typeof expected === "number" && typeof actual === "number") {
    const approximate = approximateAt(path)
    const ok = approximate ? Math.abs(actual - expected) <= tol : Object.is(actual, expected) || actual === expected
    return ok ? undefined : `${path}: ${actual} ≠ ${expected}`
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual) || actual.length !== expected.length) {
      return `${path}: length ${Array.isArray(actual) ? actual.length : "?"} ≠ ${expected.length}`
    }
    for (let i = 0; i < expected.length; i++) {
      const problem = agree(actual[i], expected[i], tol, approximateAt, `${path}[${i}]`)
      if (problem !== undefined) return problem
    }
    return undefined
  }
  if (typeof expected === "object" && expected !== null) {
    if (typeof actual !== "object" || actual === null) return `${path}: not an object`
    const keys = Object.keys(expected)
    if (JSON.stringify(Object.keys(actual).sort()) !== JSON.stringify([...keys].sort())) return `${path}: keys differ`
    for (const key of keys) {
      const problem = agree(
        (actual as Record<string, unknown>)[key],
        (expected as Record<string, unknown>)[key],
        tol,
        approximateAt,
        `${path}.${key}`
      )
      if (problem !== undefined) return problem
    }
    return undefined
  }
  return actual === expected ? undefined : `${path}: ${JSON.stringify(actual)} ≠ ${JSON.stringify(expected)}`
}
