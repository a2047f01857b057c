// The ceiling for any Node API here: node:http answering a constant {"total":458}, no ClickHouse.
import { createServer } from "node:http"

const body = JSON.stringify({ total: 458 })

createServer((_req, res) => {
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body)
}).listen(Number(process.env.PORT), process.env.HOST ?? "127.0.0.1")
