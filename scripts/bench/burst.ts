/**
 * A burst: N connections opened at once, each sending one `GET ... Connection: close` as soon as it connects,
 * over raw node:net (no http.Agent, no pooling). Each answer is read to its end (Content-Length, chunked, or
 * until close) and its body checked. Latency: connect start → last byte of the body.
 */
import * as Net from "node:net"
import { type Check, matches, percentile, type RunResult } from "./load.ts"

export type Answer =
  | { readonly kind: "answer"; readonly status: number; readonly body: string; readonly ms: number }
  | { readonly kind: "timeout" | "socket" | "closed"; readonly detail: string; readonly ms: number }

const headerEnd = Buffer.from("\r\n\r\n")

/** The decoded body once the last chunk is in, else undefined. */
const dechunk = (data: Buffer): Buffer | undefined => {
  const parts: Array<Buffer> = []
  let at = 0
  for (;;) {
    const lineEnd = data.indexOf("\r\n", at)
    if (lineEnd < 0) return undefined
    const size = parseInt(data.subarray(at, lineEnd).toString("latin1"), 16)
    if (Number.isNaN(size)) return Buffer.alloc(0)
    if (size === 0) return Buffer.concat(parts)
    const start = lineEnd + 2
    if (data.length < start + size + 2) return undefined
    parts.push(data.subarray(start, start + size))
    at = start + size + 2
  }
}

/** One request on a fresh connection; never rejects. */
export const request = (url: URL, timeoutMs: number): Promise<Answer> =>
  new Promise((resolve) => {
    const started = performance.now()
    let data: Buffer = Buffer.alloc(0)
    let head: { status: number; length?: number; chunked: boolean; bodyAt: number } | undefined
    let settled = false
    const finish = (answer: Answer) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve(answer)
    }
    const answered = (body: Buffer) =>
      finish({ kind: "answer", status: head?.status ?? 0, body: body.toString("utf8"), ms: performance.now() - started })
    const socket = Net.connect({ host: url.hostname, port: Number(url.port || 80) })
    const timer = setTimeout(
      () => finish({ kind: "timeout", detail: `no answer in ${timeoutMs} ms`, ms: performance.now() - started }),
      timeoutMs
    )
    socket.on("connect", () => {
      socket.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
    })
    socket.on("data", (chunk: Buffer) => {
      data = data.length === 0 ? chunk : Buffer.concat([data, chunk])
      if (head === undefined) {
        const end = data.indexOf(headerEnd)
        if (end < 0) return
        const lines = data.subarray(0, end).toString("latin1").split("\r\n")
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "")?.[1] ?? 0)
        const header = (name: string) =>
          lines.find((l) => l.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim().toLowerCase()
        const length = header("content-length")
        head = {
          status,
          chunked: header("transfer-encoding")?.includes("chunked") ?? false,
          bodyAt: end + headerEnd.length,
          ...(length === undefined ? {} : { length: Number(length) })
        }
      }
      const body = data.subarray(head.bodyAt)
      if (head.chunked) {
        const decoded = dechunk(body)
        if (decoded !== undefined) answered(decoded)
      } else if (head.length !== undefined && body.length >= head.length) answered(body.subarray(0, head.length))
    })
    socket.on("error", (error) => finish({ kind: "socket", detail: error.message, ms: performance.now() - started }))
    socket.on("close", () => {
      // Read until close: an answer with neither a length nor chunks ends here.
      if (head !== undefined && !head.chunked && head.length === undefined) {
        return answered(data.subarray(head.bodyAt))
      }
      finish({ kind: "closed", detail: "closed before a full answer", ms: performance.now() - started })
    })
  })

const round = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : Math.round(ms * 10) / 10)

/** Fires `connections` requests at once and waits for every one to be answered or to fail. */
export const burst = async (url: string, connections: number, check: Check, timeoutS: number): Promise<RunResult> => {
  const target = new URL(url)
  const started = performance.now()
  let lastAt = started
  const answers = await Promise.all(Array.from({ length: connections }, () =>
    request(target, timeoutS * 1000).then((answer) => {
      lastAt = performance.now()
      return answer
    })))
  const errors = { non2xx: 0, timeouts: 0, socket: 0, unanswered: 0 }
  const statuses: Record<string, number> = {}
  const latencies: Array<number> = []
  let ok = 0
  let wrong = 0
  for (const a of answers) {
    if (a.kind !== "answer") {
      errors[a.kind === "timeout" ? "timeouts" : a.kind === "socket" ? "socket" : "unanswered"]++
      continue
    }
    latencies.push(a.ms)
    if (a.status < 200 || a.status >= 300) {
      errors.non2xx++
      statuses[a.status] = (statuses[a.status] ?? 0) + 1
    } else if (matches(check, a.body)) ok++
    else wrong++
  }
  latencies.sort((a, b) => a - b)
  const elapsedS = (lastAt - started) / 1000
  return {
    reqPerSec: Math.round((ok / Math.max(elapsedS, 1e-3)) * 10) / 10,
    p50Ms: round(percentile(latencies, 50)),
    p99Ms: round(percentile(latencies, 99)),
    maxMs: round(latencies.at(-1)),
    latencySamples: latencies.length,
    ok,
    wrong,
    errors,
    statuses,
    elapsedS: Math.round(elapsedS * 1000) / 1000
  }
}
