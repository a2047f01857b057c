/**
 * The series scenario: GET /api/metrics/series?interval=1h (sum per metric per hour over the whole table)
 * from the API with coalescing off and on, next to raw ClickHouse running the same SQL. Every body is checked:
 * the first against raw ClickHouse's rows, the others against the first.
 */
import { request } from "./burst.ts"
import { query } from "./clickhouse.ts"
import { errorCount, type Load, run, type RunResult } from "./load.ts"
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

/**
 * Each system's first answer is checked against the reference here; wrk then checks every answer of the run
 * against that exact body.
 */
export const benchSeries = async (options: {
  readonly target: Target
  readonly api: ReadonlyArray<System>
  readonly load: Load
  readonly timeoutS: number
  readonly settle: () => Promise<unknown>
  readonly log: (line: string) => void
}): Promise<ReadonlyArray<SeriesOutcome>> => {
  const { load, log, target, timeoutS } = options
  const reference = parseRows(await query(target.clickhouse, seriesSql(target.table)))
  log(`series on analytics.${target.table}: ${reference.length} points; raw ClickHouse`)
  const outcomes: Array<SeriesOutcome> = []
  /** `exited` says how the system's process ended, if it has. */
  const measure = async (
    system: string,
    url: string,
    rows: (body: string) => Array<Row>,
    exited: () => string | undefined = () => undefined
  ) => {
    try {
      const first = await request(new URL(url), timeoutS * 1000)
      if (first.kind !== "answer" || first.status !== 200) {
        throw new Error(`first answer: ${first.kind === "answer" ? first.status : first.detail}`)
      }
      if (!sameRows(rows(first.body), reference)) throw new Error("first answer differs from raw ClickHouse's rows")
      const result = await run(url, load, { kind: "body", body: first.body }, timeoutS, options.settle)
      log(`  (${system}) ${result.reqPerSec} req/s, p99 ${result.p99Ms} ms, errors ${errorCount(result)}, wrong ${result.wrong}`)
      outcomes.push({ system, result })
    } catch (error) {
      const died = exited()?.split("\n")[0]
      const failure = `${error instanceof Error ? error.message : String(error)}${died === undefined ? "" : ` (the process ${died})`}`
      log(`  (${system}) failed: ${failure}`)
      outcomes.push({ system, failure })
    }
  }
  await measure("a", `${target.clickhouse}/?query=${encodeURIComponent(seriesSql(target.table))}`, parseRows)
  for (const system of options.api) {
    const running = await start(system, target).catch((error: unknown) =>
      error instanceof Error ? error : new Error(String(error))
    )
    if (running instanceof Error) {
      log(`  (${system.id}) did not start: ${running.message}`)
      outcomes.push({ system: system.id, failure: "did not start" })
      continue
    }
    try {
      log(`  (${system.id}) ${system.name}`)
      await measure(system.id, `${running.origin}/api/metrics/series?interval=1h`, apiRows, running.exited)
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
