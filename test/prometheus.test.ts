/**
 * The metrics as an operator gets them: the built service, a real 18.16 server, and Debian's Prometheus
 * scraping `/metrics` (with the API key) while the test drives load, ClickHouse is stopped for a moment, and a
 * pool of one is flooded. Prometheus' own query API must then give the counts the test itself saw.
 */
import { execFile } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { removeServer, startServer, stopServer } from "./support/clickhouse-server.ts"
import { describeReal, hasRealServer } from "./support/layers.ts"
import { freePort, type Running, run, startService, until } from "./support/process.ts"

const prometheusBin = "/usr/bin/prometheus"
const promtoolBin = "/usr/bin/promtool"
const hasPrometheus = existsSync(prometheusBin) && existsSync(promtoolBin)
if (!hasPrometheus && process.env.CI) throw new Error("Debian's prometheus package is not installed and CI=true")
if (!hasPrometheus) process.stderr.write("\n!! PROMETHEUS TIER NOT RUN: apt-get install -y prometheus\n\n")
const describePrometheus = hasPrometheus ? describeReal : describe.skip

const key = "observability-test-key-0123456789"
const dir = Path.resolve(import.meta.dirname, `../.clickhouse/test-prometheus-${process.pid}`)
const work = mkdtempSync(Path.join(tmpdir(), "analytics-api-prometheus-"))

let clickhouse = ""
let service: Running
let servicePort = 0
let prometheus: Running
let prometheusUrl = ""

const sql = (text: string) =>
  fetch(`${clickhouse}/?query=${encodeURIComponent(text)}`, { method: "POST" }).then(async (r) => {
    if (!r.ok) throw new Error(await r.text())
  })

beforeAll(async () => {
  if (!hasPrometheus || !hasRealServer) return
  clickhouse = await startServer({ dir, fresh: true })
  await sql("CREATE DATABASE IF NOT EXISTS analytics")
  await sql("CREATE TABLE analytics.metrics (ts DateTime, metric_name String, value Float64) ENGINE = MergeTree ORDER BY (ts, metric_name)")
  await sql("INSERT INTO analytics.metrics VALUES ('2024-01-01 00:00:00','page_views',100),('2024-01-01 01:00:00','page_views',150)," +
    "('2024-01-01 02:00:00','page_views',200),('2024-01-01 00:00:00','errors',2),('2024-01-01 01:00:00','errors',1),('2024-01-01 02:00:00','errors',5)")
  servicePort = await freePort()
  service = startService({
    PORT: String(servicePort),
    CLICKHOUSE_URL: clickhouse,
    CLICKHOUSE_POOL_SIZE: "1",
    CLICKHOUSE_POOL_MAX_WAITING: "2",
    API_KEYS: key,
    LOG_LEVEL: "warning"
  })
  await until("the service to answer", async () => (await fetch(`http://127.0.0.1:${servicePort}/healthz`)).ok)

  const prometheusPort = await freePort()
  prometheusUrl = `http://127.0.0.1:${prometheusPort}`
  const config = Path.join(work, "prometheus.yml")
  writeFileSync(
    config,
    [
      "global: { scrape_interval: 1s, scrape_timeout: 1s }",
      "scrape_configs:",
      "  - job_name: analytics",
      "    authorization: { credentials: " + JSON.stringify(key) + " }",
      `    static_configs: [{ targets: ["127.0.0.1:${servicePort}"] }]`
    ].join("\n")
  )
  prometheus = run(prometheusBin, [
    `--config.file=${config}`,
    `--storage.tsdb.path=${Path.join(work, "data")}`,
    `--web.listen-address=127.0.0.1:${prometheusPort}`
  ], {})
  await until("Prometheus to be ready", async () => (await fetch(`${prometheusUrl}/-/ready`)).ok)
}, 120_000)

afterAll(async () => {
  service?.child.kill("SIGTERM")
  prometheus?.child.kill("SIGTERM")
  await Promise.all([service?.exited, prometheus?.exited])
  if (clickhouse !== "") await removeServer(dir)
  rmSync(work, { recursive: true, force: true })
})

/** What the test saw: /api/metrics answers by status, and the overloaded ones. */
const seen = { byStatus: new Map<number, number>(), overloaded: 0, wrong: 0 }

const get = async (query = "") => {
  const response = await fetch(`http://127.0.0.1:${servicePort}/api/metrics${query}`, { headers: { authorization: `Bearer ${key}` } })
  const body = await response.json() as { total?: number; error?: { code: string } }
  seen.byStatus.set(response.status, (seen.byStatus.get(response.status) ?? 0) + 1)
  if (body.error?.code === "overloaded") seen.overloaded++
  if (response.status === 200 && query === "" && body.total !== 458) seen.wrong++
  return response.status
}

/** One instant query; the result as `labels → value`, labels written `name=value,...` in name order. */
const promQuery = async (query: string): Promise<Map<string, number>> => {
  const response = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(query)}`)
  const body = await response.json() as {
    status: string
    data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> }
  }
  expect(body.status).toBe("success")
  return new Map(body.data.result.map((r) => [
    Object.entries(r.metric).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(","),
    Number(r.value[1])
  ]))
}

const single = async (query: string) => {
  const result = [...(await promQuery(query)).values()]
  expect(result, query).toHaveLength(1)
  return result[0]!
}

describePrometheus("a real Prometheus scraping the service", () => {
  it("the exposition passes promtool check metrics, and needs the API key like every endpoint", async () => {
    const refused = await fetch(`http://127.0.0.1:${servicePort}/metrics`)
    expect(refused.status).toBe(401)
    const response = await fetch(`http://127.0.0.1:${servicePort}/metrics`, { headers: { "x-api-key": key } })
    expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8")
    const text = await response.text()
    const checked = promisify(execFile)(promtoolBin, ["check", "metrics"], { encoding: "utf8" })
    checked.child.stdin!.end(text)
    const { stdout, stderr } = await checked
    expect(stdout + stderr).toBe("")
    for (const name of ["analytics_http_requests_total", "analytics_pool_rejections_total", "analytics_build_info", "process_resident_memory_bytes"]) {
      expect(text).toContain(`# TYPE ${name}`)
    }
    expect(text).toMatch(/analytics_build_info\{version="[^"]+",backend="remote",clickhouse_version="18\.16[^"]*"\} 1/)
  })

  it("METRICS_PORT serves /metrics alone on its own port, and METRICS_PUBLIC opens it", async () => {
    const [apiPort, metricsPort] = [await freePort(), await freePort()]
    const other = startService({
      PORT: String(apiPort),
      METRICS_PORT: String(metricsPort),
      METRICS_PUBLIC: "true",
      CLICKHOUSE_URL: clickhouse,
      API_KEYS: key
    })
    try {
      await other.waitFor(/Listening on/)
      await until("the metrics port", async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).ok)
      const open = await fetch(`http://127.0.0.1:${metricsPort}/metrics`)
      expect(await open.text()).toContain("# TYPE analytics_http_requests_total counter")
      // Nothing else there: the key rule answers first, as it does for any unknown path.
      expect((await fetch(`http://127.0.0.1:${metricsPort}/api/metrics`)).status).toBe(401)
      expect((await fetch(`http://127.0.0.1:${metricsPort}/api/metrics`, { headers: { "x-api-key": key } })).status).toBe(404)
      const onApi = await fetch(`http://127.0.0.1:${apiPort}/metrics`, { headers: { "x-api-key": key } })
      expect(onApi.status).toBe(404)
      expect((await fetch(`http://127.0.0.1:${apiPort}/api/metrics`)).status).toBe(401)
    } finally {
      other.child.kill("SIGTERM")
      expect(await other.exited).toBe(0)
    }
  })

  it("counts what the test sent and saw: 200s, 503s, coalesced joins, pool rejections = overloaded answers", async () => {
    await until("a first scrape", async () => (await single('up{job="analytics"}')) === 1)
    // 300 identical reads at once: one pooled connection, the rest coalesced.
    await Promise.all(Array.from({ length: 300 }, () => get()))
    // A pool of one with two places in its queue, 60 different reads at once: most are refused at once.
    await Promise.all(Array.from({ length: 60 }, (_, i) => get(`?from=${1704067200 + i}`)))
    // ClickHouse stopped for a moment: clean 503s, then back.
    await stopServer(dir)
    for (let i = 0; i < 20; i++) await get()
    await startServer({ dir, port: Number(new URL(clickhouse).port) })
    await until("the service to answer 200 again", async () => (await get()) === 200)
    for (let i = 0; i < 20; i++) expect(await get()).toBe(200)
    const doneAt = Date.now() / 1000

    expect(seen.wrong).toBe(0)
    expect(seen.overloaded).toBeGreaterThan(0)
    expect(seen.byStatus.get(503)).toBeGreaterThan(seen.overloaded)
    await until("a scrape after the load", async () => (await single('timestamp(up{job="analytics"})')) > doneAt + 0.5)

    const byStatus = await promQuery('sum by (status) (analytics_http_requests_total{route="/api/metrics"})')
    expect(Object.fromEntries(byStatus)).toEqual(
      Object.fromEntries([...seen.byStatus].map(([status, count]) => [`status=${status}`, count]))
    )
    expect(await single('analytics_http_errors_total{code="overloaded"}')).toBe(seen.overloaded)
    expect(await single("sum(analytics_pool_rejections_total)")).toBe(seen.overloaded)
    expect(await single('analytics_pool_rejections_total{reason="queue_full"}')).toBe(seen.overloaded)
    expect(await single('analytics_http_errors_total{code="unavailable"}')).toBe((seen.byStatus.get(503) ?? 0) - seen.overloaded)
    expect(await single("analytics_coalesce_joined_total")).toBeGreaterThan(0)
    expect(await single('analytics_clickhouse_errors_total{class="unavailable"}')).toBeGreaterThan(0)
    expect(await single("sum(analytics_clickhouse_retries_total)")).toBeGreaterThan(0)
    expect(await single('analytics_http_request_duration_seconds_count{route="/api/metrics",method="GET"}')).toBe(
      [...seen.byStatus.values()].reduce((a, b) => a + b, 0)
    )
    expect(await single("analytics_pool_size")).toBe(1)
    expect(await single('rate(analytics_http_requests_total{route="/api/metrics",status="200"}[1m])')).toBeGreaterThan(0)
    // The README's queries: error ratio, p99, pool saturation.
    const errorRatio = await single(
      'sum(rate(analytics_http_requests_total{route="/api/metrics",status=~"5.."}[5m])) / sum(rate(analytics_http_requests_total{route="/api/metrics"}[5m]))'
    )
    expect(errorRatio).toBeGreaterThan(0)
    expect(errorRatio).toBeLessThan(1)
    const p99 = await single("histogram_quantile(0.99, sum by (le) (rate(analytics_http_request_duration_seconds_bucket[5m])))")
    expect(p99).toBeGreaterThan(0)
    expect(await single("max_over_time(analytics_pool_in_use[5m]) / analytics_pool_size")).toBeLessThanOrEqual(1)
    // The scrapes are requests too, under their own route.
    expect(await single('sum(analytics_http_requests_total{route="/metrics",status="200"})')).toBeGreaterThan(0)
  }, 120_000)
})
