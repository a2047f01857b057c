import { Effect } from "effect"
import { ClickHouse } from "./ClickHouse/ClickHouse.ts"
import { qualifiedName, tableConfig } from "./Config.ts"
import { TotalRow } from "./Domain/Metrics.ts"

export class Metrics extends Effect.Service<Metrics>()("analytics-api/Metrics", {
  effect: Effect.gen(function*() {
    const ch = yield* ClickHouse
    const table = yield* tableConfig
    const totalSql = `SELECT sum(value) AS total FROM ${qualifiedName(table)}`

    const total = ch.query(totalSql, TotalRow).pipe(
      Effect.map((rows) => rows[0]?.total ?? 0),
      Effect.withSpan("Metrics.total")
    )

    return { total } as const
  })
}) {}
