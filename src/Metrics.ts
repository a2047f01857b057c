import { Effect, Layer } from "effect"
import { ClickHouse } from "./ClickHouse/ClickHouse.js"
import { qualifiedName, type TableConfig, tableConfig } from "./Config.js"
import { TotalRow } from "./Domain/Metrics.js"

const make = (table: TableConfig) =>
  Effect.gen(function*() {
    const ch = yield* ClickHouse
    const totalSql = `SELECT sum(value) AS total FROM ${qualifiedName(table)}`

    const total = ch.query(totalSql, TotalRow).pipe(
      Effect.map((rows) => rows[0]?.total ?? 0),
      Effect.withSpan("Metrics.total")
    )

    return { total } as const
  })

export class Metrics extends Effect.Service<Metrics>()("analytics-api/Metrics", {
  effect: Effect.flatMap(tableConfig, make)
}) {
  /** The metrics service over a given table instead of the one named by the environment. */
  static readonly layer = (table: TableConfig) => Layer.effect(Metrics, Effect.map(make(table), Metrics.make))
}
