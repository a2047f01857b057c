import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { qualifiedName, type TableConfig } from "./Config.js"
import { demoRows } from "./Domain/Metrics.js"
import { ClickHouse } from "./ClickHouse/ClickHouse.js"

const ExistsRow = Schema.Struct({ result: Schema.Union(Schema.Number, Schema.NumberFromString) })

export const tableExists = (table: TableConfig) =>
  Effect.gen(function*() {
    const ch = yield* ClickHouse
    const rows = yield* ch.query(`EXISTS TABLE ${qualifiedName(table)}`, ExistsRow)
    return rows[0]?.result === 1
  })

export const createSchema = (table: TableConfig) =>
  Effect.gen(function*() {
    const ch = yield* ClickHouse
    yield* ch.command(`CREATE DATABASE IF NOT EXISTS ${table.database}`)
    yield* ch.command(
      `CREATE TABLE IF NOT EXISTS ${qualifiedName(table)} (ts DateTime, metric_name String, value Float64) ` +
        "ENGINE = MergeTree ORDER BY (ts, metric_name)"
    )
  })

export const insertDemoRows = (table: TableConfig) =>
  Effect.flatMap(ClickHouse, (ch) => ch.insert(qualifiedName(table), demoRows))

/** First start on an empty database: create the table and load the six demo rows (total 458). */
export const bootstrapIfEmpty = (table: TableConfig) =>
  Effect.gen(function*() {
    if (yield* tableExists(table)) return false
    yield* createSchema(table)
    yield* insertDemoRows(table)
    yield* Effect.logInfo(`Created ${qualifiedName(table)} with the demo rows (total 458)`)
    return true
  }).pipe(Effect.withSpan("Bootstrap.bootstrapIfEmpty"))
