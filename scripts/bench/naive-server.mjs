// The naive way to serve GET /api/metrics: @clickhouse/client with default settings, no pool bound, no
// deadline. NAIVE_CLIENT=per-request creates (and closes) a client per request; =shared uses one client.
import { createClient } from "@clickhouse/client"
import { createServer } from "node:http"

const url = process.env.CLICKHOUSE_URL
const sql = `SELECT sum(value) AS total FROM ${process.env.CLICKHOUSE_DATABASE ?? "analytics"}.${process.env.CLICKHOUSE_TABLE ?? "metrics"}`
const shared = process.env.NAIVE_CLIENT === "shared" ? createClient({ url }) : undefined

const total = async () => {
  const client = shared ?? createClient({ url })
  try {
    const rows = await (await client.query({ query: sql, format: "JSONEachRow" })).json()
    return Number(rows[0]?.total ?? 0)
  } finally {
    if (shared === undefined) await client.close()
  }
}

const send = (res, status, value) => {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(value))
}

createServer((req, res) => {
  if (req.url !== "/api/metrics") return send(res, 404, { error: "not found" })
  total().then(
    (value) => send(res, 200, { total: value }),
    (error) => send(res, 500, { error: String(error?.message ?? error) })
  )
}).listen(Number(process.env.PORT), process.env.HOST ?? "127.0.0.1")
