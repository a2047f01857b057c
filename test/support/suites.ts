import { expect } from "@effect/vitest"
import type { Vitest } from "@effect/vitest"
import { Effect, Either, FastCheck, Schema } from "effect"
import { insertDemoRows } from "../../src/Bootstrap.ts"
import { ClickHouse } from "../../src/ClickHouse/ClickHouse.ts"
import { qualifiedName, type TableConfig } from "../../src/Config.ts"
import { TotalRow } from "../../src/Domain/Metrics.ts"
import { getTotal } from "./layers.ts"

/**
 * Float tolerance of the property test: ClickHouse adds in its own order, so the two sums may differ
 * by rounding, bounded relative to the sum of magnitudes.
 */
export const tolerance = (values: ReadonlyArray<number>) => 1e-9 * values.reduce((a, v) => a + Math.abs(v), 0) + 1e-9

export const resetTo = (table: TableConfig, rows: ReadonlyArray<object>) =>
  Effect.gen(function*() {
    const ch = yield* ClickHouse
    yield* ch.command(`TRUNCATE TABLE ${qualifiedName(table)}`)
    if (rows.length > 0) yield* ch.insert(qualifiedName(table), rows as ReadonlyArray<Record<string, unknown>>)
  })

export const totalFromClickHouse = (table: TableConfig) =>
  Effect.flatMap(ClickHouse, (ch) => ch.query(`SELECT sum(value) AS total FROM ${qualifiedName(table)}`, TotalRow)).pipe(
    Effect.map((rows) => rows[0]!.total)
  )

/** Fires `n` requests at once and returns every answer that is not a 200 with `expected`. */
export const wrongAnswers = (n: number, expected: number) =>
  Effect.all(Array.from({ length: n }, () => Effect.either(getTotal())), { concurrency: "unbounded" }).pipe(
    Effect.map((results) => {
      expect(results.length).toBe(n)
      return results.filter((r) => !(Either.isRight(r) && r.right === expected))
    })
  )

const Row = Schema.Struct({
  ts: Schema.Literal("2024-01-01 00:00:00", "2024-06-30 12:34:56", "2030-12-31 23:59:59"),
  metric_name: Schema.Literal("page_views", "errors", "latency_ms", ""),
  value: Schema.Number
})

const valueArb = FastCheck.oneof(
  FastCheck.constant(0),
  FastCheck.integer({ min: -1_000_000, max: 1_000_000 }),
  FastCheck.double({ min: -1e12, max: 1e12, noNaN: true, noDefaultInfinity: true }),
  FastCheck.double({ min: -1, max: 1, noNaN: true }),
  FastCheck.constantFrom(1e15, -1e15, 0.1, 0.2, 0.3, Number.MIN_VALUE)
)

const rowsArb = FastCheck.array(
  FastCheck.record({
    ts: FastCheck.constantFrom(...Row.fields.ts.literals),
    metric_name: FastCheck.constantFrom(...Row.fields.metric_name.literals),
    value: valueArb
  }),
  { maxLength: 60 }
)

/** The behaviour every backend must show; each test file runs it against its own ClickHouse. */
export const metricsSuite = (
  it: Vitest.MethodsNonLive<ClickHouse | import("@effect/platform").HttpClient.HttpClient, true>,
  table: TableConfig,
  options: { readonly concurrent: number; readonly propRuns: number }
) => {
  it.effect("GET /api/metrics returns the demo total, equal to sum(value) computed by ClickHouse", () =>
    Effect.gen(function*() {
      yield* resetTo(table, [])
      expect(yield* getTotal()).toBe(0)
      yield* insertDemoRows(table)
      const total = yield* getTotal()
      expect(total).toBe(458)
      expect(total).toBe(yield* totalFromClickHouse(table))
    }))

  it.effect(`${options.concurrent} concurrent requests all get 200 with the exact total`, () =>
    Effect.gen(function*() {
      yield* resetTo(table, [])
      yield* insertDemoRows(table)
      expect(yield* wrongAnswers(options.concurrent, 458)).toEqual([])
    }))

  it.effect("freshness: after an insert, 500 concurrent requests all see the new total", () =>
    Effect.gen(function*() {
      yield* resetTo(table, [])
      yield* insertDemoRows(table)
      expect(yield* getTotal()).toBe(458)
      const ch = yield* ClickHouse
      yield* ch.insert(qualifiedName(table), [{ ts: "2024-01-02 00:00:00", metric_name: "errors", value: 42.5 }])
      expect(yield* wrongAnswers(500, 500.5)).toEqual([])
    }))

  it.effect.prop("property: the API total equals the sum computed in the test", [rowsArb], ([rows]) =>
    Effect.gen(function*() {
      yield* resetTo(table, rows)
      const expected = rows.reduce((sum, row) => sum + row.value, 0)
      const total = yield* getTotal()
      expect(Math.abs(total - expected)).toBeLessThanOrEqual(tolerance(rows.map((row) => row.value)))
    }), { fastCheck: { numRuns: options.propRuns } })
}
