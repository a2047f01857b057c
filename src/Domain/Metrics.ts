import * as Schema from "effect/Schema"

/** ClickHouse may send a number as a JSON number or, for 64-bit types, as a string. */
export const ClickHouseNumber = Schema.Union(Schema.Number, Schema.NumberFromString)

export const TotalRow = Schema.Struct({ total: ClickHouseNumber })

export const MetricRow = Schema.Struct({
  ts: Schema.String,
  metric_name: Schema.String,
  value: Schema.Number
})
export type MetricRow = typeof MetricRow.Type

export const demoRows: ReadonlyArray<MetricRow> = [
  { ts: "2024-01-01 00:00:00", metric_name: "page_views", value: 100 },
  { ts: "2024-01-01 01:00:00", metric_name: "page_views", value: 150 },
  { ts: "2024-01-01 02:00:00", metric_name: "page_views", value: 200 },
  { ts: "2024-01-01 00:00:00", metric_name: "errors", value: 2 },
  { ts: "2024-01-01 01:00:00", metric_name: "errors", value: 1 },
  { ts: "2024-01-01 02:00:00", metric_name: "errors", value: 5 }
]
