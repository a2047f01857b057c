/**
 * The series scenario: GET /api/metrics/series?interval=1h (sum per metric per hour over the whole table)
 * from the API with coalescing off and on, next to raw ClickHouse running the same SQL. Every body is checked
 * against the answer computed from raw ClickHouse's rows.
 */
import { query } from "./clickhouse.ts"
import { checker as totalChecker, errorCount, type Load, run, type RunResult } from "./load.ts"
import { start, type System, type Target } from "./systems.ts"

/** What the API runs for this request (after the small query that counts series and points). */
export const seriesSql = (table: string) =>
  `SELECT metric_name AS name, intDiv(toUInt32(ts), 3600) * 3600 AS bucket, sum(value) AS value ` +
  `FROM analytics.${table} GROUP BY metric_name, bucket ORDER BY metric_name, bucket FORMAT JSONEachRow`

interface Row {
  readonly name: string
  readonly bucket: number
  readonly value: number
}

const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b))

const parseRows = (text: string): Array<Row> =>
  text.trim() === "" ? [] : text.trim().split("\n").map((line) => {
    const row = JSON.parse(line) as { name: string; bucket: number | string; value: number | string }
    return { name: row.name, bucket: Number(row.bucket), value: Number(row.value) }
  })

const sameRows = (a: ReadonlyArray<Row>, b: ReadonlyArray<Row>) =>
  a.length === b.length && a.every((row, i) => row.name === b[i]!.name && row.bucket === b[i]!.bucket && close(row.value, b[i]!.value))

/** The API's answer, back in rows. */
const apiRows = (body: string): Array<Row> => {
  const answer = JSON.parse(body) as { series: Array<{ name: string; points: Array<{ ts: string; value: number }> }> }
  return answer.series.flatMap((s) => s.points.map((p) => ({ name: s.name, bucket: Date.parse(p.ts) / 1000, value: p.value })))
}

export interface SeriesOutcome {
  readonly system: string
  readonly result?: RunResult
  readonly failure?: string
}

export const benchSeries = async (options: {
  readonly target: Target
  readonly total: number
  readonly api: ReadonlyArray<System>
  readonly load: Load
  readonly timeoutS: number
  readonly log: (line: string) => void
}): Promise<ReadonlyArray<SeriesOutcome>> => {
  const { load, log, target, timeoutS } = options
  const rawUrl = `${target.clickhouse}/?query=${encodeURIComponent(seriesSql(target.table))}`
  const reference = parseRows(await query(target.clickhouse, seriesSql(target.table)))
  log(`series on analytics.${target.table}: ${reference.length} points; raw ClickHouse`)
  const outcomes: Array<SeriesOutcome> = []
  const measure = async (system: string, url: string, check: (body: string) => boolean) => {
    try {
      const result = await run(url, load, check, timeoutS)
      log(`  (${system}) ${result.reqPerSec} req/s, p99 ${result.p99Ms} ms, errors ${errorCount(result)}, wrong ${result.wrong}`)
      outcomes.push({ system, result })
    } catch (error) {
      outcomes.push({ system, failure: error instanceof Error ? error.message : String(error) })
    }
  }
  await measure("a", rawUrl, (body) => {
    try {
      return sameRows(parseRows(body), reference)
    } catch {
      return false
    }
  })
  for (const system of options.api) {
    const running = await start(system, target, totalChecker(options.total))
    try {
      log(`  (${system.id}) ${system.name}`)
      await measure(system.id, `${running.url}/series?interval=1h`, (body) => {
        try {
          return sameRows(apiRows(body), reference)
        } catch {
          return false
        }
      })
    } finally {
      await running.stop()
    }
  }
  return outcomes
}

export const seriesMarkdown = (table: string, load: Load, outcomes: ReadonlyArray<SeriesOutcome>) => {
  const raw = outcomes.find((o) => o.system === "a")?.result
  const lines = [
    `## Series: GET /api/metrics/series?interval=1h on analytics.${table}, c=${load.connections}`,
    "",
    "| system | req/s | p50 ms | p99 ms | errors | wrong | vs raw ClickHouse |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  ]
  const names: Record<string, string> = { a: "(a) raw ClickHouse, same SQL", e: "(e) API, COALESCE_READS=false", f: "(f) API, COALESCE_READS=true" }
  for (const o of outcomes) {
    const r = o.result
    lines.push(
      r === undefined
        ? `| ${names[o.system] ?? o.system} | ${o.failure ?? "failed"} | | | | | |`
        : `| ${names[o.system] ?? o.system} | ${r.reqPerSec} | ${r.p50Ms ?? "—"} | ${r.p99Ms ?? "—"} | ${errorCount(r)} | ${r.wrong} | ${
          raw && raw.reqPerSec > 0 ? `${(r.reqPerSec / raw.reqPerSec).toFixed(2)}×` : "—"
        } |`
    )
  }
  return lines.join("\n")
}
