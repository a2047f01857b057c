/**
 * Fires N simultaneous GET requests and checks every answer against the total ClickHouse computes itself.
 *   npm run burst -- --url http://127.0.0.1:3000/api/metrics --clickhouse http://127.0.0.1:8123 [--n 2000]
 * Prints one JSON line: time, status counts, wrong answers, latency percentiles (nearest rank).
 */
import * as Http from "node:http"
import { parseArgs } from "node:util"

const { values } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:3000/api/metrics" },
    clickhouse: { type: "string" },
    table: { type: "string", default: "analytics.metrics" },
    n: { type: "string", default: "2000" },
    timeout: { type: "string", default: "120000" }
  }
})
const n = Number(values.n)
const timeoutMs = Number(values.timeout)

const expectedTotal = async (): Promise<number | undefined> => {
  if (!values.clickhouse) return undefined
  const sql = `SELECT sum(value) FROM ${values.table} FORMAT TabSeparated`
  const response = await fetch(`${values.clickhouse}/?query=${encodeURIComponent(sql)}`)
  return Number((await response.text()).trim())
}

const agent = new Http.Agent({ keepAlive: false, maxSockets: Infinity })

const one = (url: URL) =>
  new Promise<{ status: number; body: string; ms: number }>((resolve) => {
    const started = performance.now()
    const request = Http.get(url, { agent, timeout: timeoutMs }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk) => (body += chunk))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body, ms: performance.now() - started }))
      response.on("error", () => resolve({ status: -1, body, ms: performance.now() - started }))
    })
    request.on("timeout", () => request.destroy(new Error("timeout")))
    request.on("error", () => resolve({ status: -1, body: "", ms: performance.now() - started }))
  })

const percentile = (sorted: Array<number>, p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0

const main = async () => {
  const expected = await expectedTotal()
  const url = new URL(values.url)
  const started = performance.now()
  const results = await Promise.all(Array.from({ length: n }, () => one(url)))
  const elapsedMs = performance.now() - started
  const statuses: Record<string, number> = {}
  let wrong = 0
  for (const r of results) {
    statuses[r.status] = (statuses[r.status] ?? 0) + 1
    if (r.status === 200 && expected !== undefined) {
      let total: unknown
      try {
        total = JSON.parse(r.body).total
      } catch {
        total = undefined
      }
      if (total !== expected) wrong++
    }
  }
  const latencies = results.map((r) => r.ms).sort((a, b) => a - b)
  const report = {
    requests: n,
    expected,
    elapsedMs: Math.round(elapsedMs),
    statuses,
    wrongAnswers: expected === undefined ? "unchecked" : wrong,
    p50: Math.round(percentile(latencies, 50)),
    p99: Math.round(percentile(latencies, 99)),
    max: Math.round(latencies.at(-1) ?? 0)
  }
  process.stdout.write(`${JSON.stringify(report)}\n`)
  if (wrong > 0 || (statuses["200"] ?? 0) !== n) process.exitCode = 1
}

void main()
