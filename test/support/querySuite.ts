import type { HttpClient } from "@effect/platform"
import { expect } from "@effect/vitest"
import type { Vitest } from "@effect/vitest"
import { Effect, FastCheck } from "effect"
import type { ClickHouse } from "../../src/ClickHouse/ClickHouse.ts"
import type { TableConfig } from "../../src/Config.ts"
import { getJson } from "./layers.ts"
import * as Model from "./model.ts"
import { resetTo } from "./suites.ts"

/** Names a caller may send: any text, hostile ones included. */
export const hostileNames = [
  "page_views",
  "errors",
  "it's",
  "back\\slash",
  "a,b",
  "quote\"d",
  "new\nline",
  "nul\u0000byte",
  "ünïcødé ✓",
  "emoji 😀",
  "' OR 1=1 --",
  "%27",
  "tab\tx",
  "x".repeat(256)
]

const day = 86_400
const start = 1_704_067_200 // 2024-01-01T00:00:00Z

const rowArb = FastCheck.record({
  ts: FastCheck.integer({ min: start - day, max: start + 4 * day }),
  metric_name: FastCheck.constantFrom(...hostileNames),
  // Up to 12 significant digits: 18.16's float parser rounds some 17-digit values and flushes denormals to 0,
  // so the rows it stores would not be the rows the model holds.
  value: FastCheck.oneof(
    FastCheck.integer({ min: -1000, max: 1000 }),
    FastCheck.constantFrom(0, 0.5, -0.25, 1e9, -1e9, 100, 100),
    FastCheck.integer({ min: -1e9, max: 1e9 }).map((n) => n / 1000)
  )
})

export const rowsArb = FastCheck.array(rowArb, { minLength: 0, maxLength: 80 })

/** A timestamp in one of the spellings the API accepts, for the same instant. */
const spell = (seconds: number, how: number) => {
  const iso = new Date(seconds * 1000).toISOString()
  if (how === 0) return String(seconds)
  if (how === 1) return iso.replace(".000Z", "Z")
  // The same instant at +05:30.
  const local = new Date((seconds + 5.5 * 3600) * 1000).toISOString().replace(".000Z", "")
  return `${local}+05:30`
}

const intervals = [["30s", 30], ["5m", 300], ["1h", 3600], ["90m", 5400], ["1d", day]] as const
const aggs = ["sum", "count", "avg", "min", "max", "p50", "p90", "p99"] as const

interface Generated {
  readonly path: string
  readonly expected: unknown
  readonly approximate: (path: string) => boolean
}

/** A random request, and the model's answer to it. */
export const queryArb = FastCheck.record({
  endpoint: FastCheck.constantFrom("total", "names", "summary", "series"),
  metrics: FastCheck.subarray([...hostileNames, "not-in-the-data"], { maxLength: 4 }),
  duplicate: FastCheck.boolean(),
  from: FastCheck.option(FastCheck.integer({ min: start - 2 * day, max: start + 3 * day }), { nil: undefined }),
  span: FastCheck.option(FastCheck.integer({ min: 1, max: 3 * day }), { nil: undefined }),
  spelling: FastCheck.integer({ min: 0, max: 2 }),
  interval: FastCheck.constantFrom(...intervals),
  agg: FastCheck.option(FastCheck.constantFrom(...aggs), { nil: undefined }),
  noFill: FastCheck.boolean()
})

export const toRequest = (rows: ReadonlyArray<Model.Row>, q: typeof queryArb extends FastCheck.Arbitrary<infer T> ? T : never): Generated => {
  const to = q.span === undefined ? undefined : (q.from ?? start) + q.span
  const params = new URLSearchParams()
  const metrics = q.duplicate && q.metrics.length > 0 ? [...q.metrics, q.metrics[0]!] : q.metrics
  for (const name of metrics) params.append("metric", name)
  if (q.from !== undefined) params.append("from", spell(q.from, q.spelling))
  if (to !== undefined) params.append("to", spell(to, (q.spelling + 1) % 3))
  const filter = { metrics: q.metrics, from: q.from, to }
  const base = "/api/metrics"
  switch (q.endpoint) {
    case "total":
      return { path: `${base}?${params}`, expected: Model.total(rows, filter), approximate: Model.sumsAndAverages }
    case "names":
      return { path: `${base}/names?${params}`, expected: Model.names(rows, filter), approximate: Model.sumsAndAverages }
    case "summary":
      return { path: `${base}/summary?${params}`, expected: Model.summary(rows, filter), approximate: Model.sumsAndAverages }
    case "series": {
      params.append("interval", q.interval[0])
      if (q.agg !== undefined) params.append("agg", q.agg)
      if (q.noFill) params.append("fill", "none")
      const agg = q.agg ?? "sum"
      return {
        path: `${base}/series?${params}`,
        expected: Model.series(rows, { ...filter, interval: q.interval[1], agg, fill: !q.noFill }),
        approximate: (path) => (agg === "sum" || agg === "avg") && path.endsWith(".value")
      }
    }
  }
  throw new Error(`no such endpoint: ${q.endpoint}`)
}

/** Every 400 the parameters can give, with a word of the message that names the problem. */
export const badRequests: ReadonlyArray<readonly [string, RegExp]> = [
  ["/api/metrics?foo=1", /unknown parameter "foo"/],
  ["/api/metrics?interval=1h", /unknown parameter "interval"/],
  ["/api/metrics?metric=", /metric: each must be 1 to 256 characters/],
  [`/api/metrics?metric=${"x".repeat(257)}`, /metric: each must be 1 to 256/],
  ["/api/metrics?from=yesterday", /from: must be an RFC 3339 timestamp/],
  ["/api/metrics?from=2024-13-01T00:00:00Z", /from: must be an RFC 3339/],
  ["/api/metrics?from=2024-01-01T00:00:00", /from: must be an RFC 3339/],
  ["/api/metrics?from=2023-02-29T00:00:00Z", /from: must be an RFC 3339/],
  ["/api/metrics?to=2024-04-31T00:00:00%2B02:00", /to: must be an RFC 3339/],
  ["/api/metrics?to=-5", /to: must be an RFC 3339/],
  ["/api/metrics?to=99999999999", /to: must be an RFC 3339/],
  ["/api/metrics?from=1&from=2", /from: give it at most once/],
  ["/api/metrics?to=1&to=2", /to: give it at most once/],
  ["/api/metrics?from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", /from: must be before to/],
  ["/api/metrics?from=100&to=100", /from: must be before to/],
  ["/api/metrics/names?bar=", /unknown parameter "bar"/],
  ["/api/metrics/summary?from=x", /from: must be/],
  ["/api/metrics/series", /interval: required/],
  ["/api/metrics/series?interval=0h", /interval: must be a positive whole number/],
  ["/api/metrics/series?interval=1w", /interval: must be/],
  ["/api/metrics/series?interval=1.5h", /interval: must be/],
  ["/api/metrics/series?interval=h", /interval: must be/],
  ["/api/metrics/series?interval=1h&interval=2h", /interval: give it at most once/],
  ["/api/metrics/series?interval=1h&agg=median", /agg: must be one of sum, count/],
  ["/api/metrics/series?interval=1h&agg=sum&agg=max", /agg: give it at most once/],
  ["/api/metrics/series?interval=1h&fill=zero", /fill: must be auto or none/],
  ["/api/metrics/series?interval=1s&from=0&to=20000", /at most 10000 are allowed/]
]

/** Each query's answer over HTTP is a 200 that equals the model's over `rows`. */
export const expectModelAnswers = (
  rows: ReadonlyArray<Model.Row>,
  queries: ReadonlyArray<typeof queryArb extends FastCheck.Arbitrary<infer T> ? T : never>
) =>
  Effect.gen(function*() {
    const tol = Model.tolerance(rows.map((row) => row.value))
    for (const query of queries) {
      const request = toRequest(rows, query)
      const answer = yield* getJson(request.path)
      expect(answer.status, request.path).toBe(200)
      expect(Model.agree(answer.json, request.expected, tol, request.approximate), request.path).toBeUndefined()
    }
  })

/** The README's answers on the demo rows (total 458) for the total, a filtered total and the names. */
export const expectDemoAnswers = Effect.gen(function*() {
  expect((yield* getJson("/api/metrics")).json).toEqual({ total: 458 })
  expect((yield* getJson("/api/metrics?metric=errors&from=2024-01-01T01:00:00Z")).json).toEqual({ total: 6 })
  expect((yield* getJson("/api/metrics/names")).json).toEqual({
    metrics: [
      { name: "errors", count: 3, first: "2024-01-01T00:00:00Z", last: "2024-01-01T02:00:00Z" },
      { name: "page_views", count: 3, first: "2024-01-01T00:00:00Z", last: "2024-01-01T02:00:00Z" }
    ]
  })
})

/** The analytics queries on one backend, against the model. */
export const querySuite = (
  it: Vitest.MethodsNonLive<ClickHouse | HttpClient.HttpClient, true>,
  table: TableConfig,
  options: { readonly propRuns: number; readonly concurrent: number }
) => {

  it.effect("the README's examples on the demo rows", () =>
    Effect.gen(function*() {
      yield* resetTo(table, Model.demo)
      yield* expectDemoAnswers
      const summary = (yield* getJson("/api/metrics/summary?metric=page_views")).json
      expect(summary).toEqual({
        metrics: [{ name: "page_views", count: 3, sum: 450, avg: 150, min: 100, max: 200, p50: 150, p90: 200, p99: 200 }]
      })
      const series = yield* getJson(
        "/api/metrics/series?metric=errors&interval=1h&from=2024-01-01T00:00:00Z&to=2024-01-01T04:00:00Z"
      )
      expect(series.json).toEqual({
        interval: "1h",
        agg: "sum",
        series: [{
          name: "errors",
          points: [
            { ts: "2024-01-01T00:00:00Z", value: 2 },
            { ts: "2024-01-01T01:00:00Z", value: 1 },
            { ts: "2024-01-01T02:00:00Z", value: 5 },
            { ts: "2024-01-01T03:00:00Z", value: 0 }
          ]
        }]
      })
    }))

  it.effect.prop(
    "model: random rows and random queries, every answer equals the model's",
    [rowsArb, FastCheck.array(queryArb, { minLength: 1, maxLength: 8 })],
    ([rows, queries]) =>
      Effect.gen(function*() {
        yield* resetTo(table, rows)
        yield* expectModelAnswers(rows, queries)
      }),
    { fastCheck: { numRuns: options.propRuns } }
  )

  it.effect(`${options.concurrent} concurrent requests over every endpoint and many parameter sets: each exact for its own`, () =>
    Effect.gen(function*() {
      const rows = FastCheck.sample(FastCheck.array(rowArb, { minLength: 60, maxLength: 80 }), { numRuns: 1, seed: 7 })[0]!
      yield* resetTo(table, rows)
      const requests = FastCheck.sample(queryArb, { numRuns: 40, seed: 11 }).map((q) => toRequest(rows, q))
      const tol = Model.tolerance(rows.map((row) => row.value))
      const answers = yield* Effect.all(
        Array.from({ length: options.concurrent }, (_, i) => {
          const request = requests[i % requests.length]!
          return Effect.map(getJson(request.path), (answer) => ({ request, answer }))
        }),
        { concurrency: "unbounded" }
      )
      const wrong = answers.filter(({ answer, request }) =>
        answer.status !== 200 || Model.agree(answer.json, request.expected, tol, request.approximate) !== undefined
      )
      expect(wrong.map(({ request, answer }) => `${request.path} → ${answer.status}`)).toEqual([])
    }))

  it.effect("every bad parameter is a 400 that names it", () =>
    Effect.gen(function*() {
      for (const [path, message] of badRequests) {
        const answer = yield* getJson(path)
        expect(answer.status, path).toBe(400)
        expect(answer.json, path).toMatchObject({ error: { code: "bad_request", message: expect.stringMatching(message) } })
      }
    }))

  it.effect("a filter with more series than allowed is a 400", () =>
    Effect.gen(function*() {
      const metrics = Array.from({ length: 1001 }, (_, i) => `m${i}`)
      const answer = yield* getJson(`/api/metrics/series?interval=1h&${metrics.map((m) => `metric=${m}`).join("&")}`)
      expect(answer.status).toBe(400)
      expect(answer.json).toMatchObject({ error: { code: "bad_request", message: expect.stringMatching(/at most 1000 series/) } })
    }))

  it.effect.prop(
    "random query strings never give a 5xx and always give JSON",
    [FastCheck.array(
      FastCheck.tuple(
        FastCheck.constantFrom("metric", "from", "to", "interval", "agg", "fill", "x", "", "metric[]"),
        FastCheck.oneof(FastCheck.string(), FastCheck.constantFrom("1h", "0", "2024-01-01T00:00:00Z", "p99", "none", "%", "%00"))
      ),
      { maxLength: 6 }
    ), FastCheck.constantFrom("", "/names", "/summary", "/series")],
    ([pairs, endpoint]) =>
      Effect.gen(function*() {
        const query = pairs.map(([k, v]) => `${encodeURIComponent(k)}=${v.startsWith("%") ? v : encodeURIComponent(v)}`).join("&")
        const answer = yield* getJson(`/api/metrics${endpoint}?${query}`)
        expect(answer.status, query).toBeLessThan(500)
        expect(answer.json, query).toBeDefined()
      }),
    { fastCheck: { numRuns: 150 } }
  )
}
