/** The bench's own ClickHouse server: start, seed, query over plain HTTP, settle between runs, stop. */
import { execFileSync, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { demoValues } from "../support/proc.ts"

const root = Path.resolve(import.meta.dirname, "../..")
const script = Path.join(root, "scripts/clickhouse")
export const dataDir = ".clickhouse/bench"

export const start = (): string => {
  const out = execFileSync(
    "bash",
    [script, "start", "--dir", dataDir, "--max-concurrent-queries", "1000", "--queue-max-wait-ms", "5000"],
    { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }
  )
  const url = out.trim().split("\n").at(-1)
  if (!url?.startsWith("http")) throw new Error(`scripts/clickhouse start printed no URL: ${out}`)
  return url
}

export const stop = () => {
  spawnSync("bash", [script, "stop", "--dir", dataDir], { cwd: root, stdio: "ignore" })
}

export const serverPid = (): number => Number(Fs.readFileSync(Path.join(root, dataDir, "server.pid"), "utf8"))

export const query = async (url: string, sql: string): Promise<string> => {
  const response = await fetch(`${url}/`, { method: "POST", body: sql })
  const text = await response.text()
  if (!response.ok) throw new Error(`ClickHouse ${response.status} for ${sql.slice(0, 80)}: ${text.trim()}`)
  return text
}

export const totalSql = (table: string) => `SELECT sum(value) AS total FROM analytics.${table} FORMAT JSONEachRow`

export const total = async (url: string, table: string): Promise<number> =>
  Number(JSON.parse(await query(url, totalSql(table))).total)


/** Recreates `analytics.<table>`: the six demo rows when rows is undefined, else that many synthetic rows. */
export const seed = async (url: string, table: string, rows?: number) => {
  const name = `analytics.${table}`
  await query(url, "CREATE DATABASE IF NOT EXISTS analytics")
  await query(url, `DROP TABLE IF EXISTS ${name}`)
  await query(
    url,
    `CREATE TABLE ${name} (ts DateTime, metric_name String, value Float64) ENGINE = MergeTree ORDER BY (ts, metric_name)`
  )
  if (rows === undefined) {
        await query(url, `INSERT INTO ${name} VALUES ${demoValues}`)
    return
  }
  for (let offset = 0; offset < rows; offset += 1_000_000) {
    await query(
      url,
      `INSERT INTO ${name} SELECT toDateTime(1704067200 + intDiv(number, 100)), ` +
        "['page_views', 'errors', 'latency_ms'][number % 3 + 1], (number % 1000) / 4 - 100 " +
        `FROM numbers(${offset}, ${Math.min(1_000_000, rows - offset)})`
    )
  }
}

const othersRunning = "FROM system.processes WHERE query NOT LIKE '%system.processes%'"

/**
 * Waits until no query from an earlier run is still running; after `graceMs` the leftovers (queries of
 * clients that went away) are killed. Returns how many were still running when the grace ran out.
 */
export const settle = async (url: string, graceMs: number): Promise<number> => {
  const started = Date.now()
  let killed = 0
  for (let idleChecks = 0; idleChecks < 2;) {
    // NaN: an overloaded server dropped this connection too, so it is still busy.
    const running = await query(url, `SELECT count() ${othersRunning}`).then(Number, () => NaN)
    idleChecks = running === 0 ? idleChecks + 1 : 0
    if (running !== 0 && Date.now() - started > graceMs) {
      if (running > 0) killed = Math.max(killed, running)
      await query(url, `KILL QUERY WHERE query NOT LIKE '%system.processes%' ASYNC`).catch(() => "")
    }
    if (Date.now() - started > 120_000) throw new Error("ClickHouse still busy 2 minutes after a run")
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return killed
}
