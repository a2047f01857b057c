/** Hostile requests written on plain sockets (so nothing is cleaned up on the way), each answer read and classified. */
import * as Net from "node:net"
import { mulberry32 } from "../support/proxy.ts"
import { generate, type HostileRequest } from "./generate.ts"
import { countBy } from "./report.ts"

export type Result =
  | { readonly type: "response"; readonly status: number; readonly json: boolean; readonly code: string | undefined }
  | { readonly type: "drop"; readonly detail: string }
  | { readonly type: "no-answer" }

const headerEnd = Buffer.from("\r\n\r\n")

interface Parsed {
  readonly status: number
  readonly head: string
  readonly body: Buffer
}

/** One HTTP/1.x response from the start of `buffer` (1xx skipped); undefined while incomplete. */
const parse = (buffer: Buffer, method: string, closed: boolean): Parsed | "garbage" | undefined => {
  let start = 0
  for (;;) {
    const end = buffer.indexOf(headerEnd, start)
    if (end < 0) return closed && buffer.length > start ? "garbage" : undefined
    const head = buffer.subarray(start, end).toString("latin1")
    const status = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(head)?.[1]
    if (status === undefined) return "garbage"
    const bodyStart = end + headerEnd.length
    if (Number(status) < 200) {
      start = bodyStart
      continue
    }
    const rest = buffer.subarray(bodyStart)
    const result = (body: Buffer): Parsed => ({ status: Number(status), head: head.toLowerCase(), body })
    if (method === "HEAD" || status === "204" || status === "304") return result(Buffer.alloc(0))
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1]
    if (length !== undefined) return rest.length >= Number(length) ? result(rest.subarray(0, Number(length))) : undefined
    if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
      if (!rest.includes("0\r\n\r\n")) return undefined
      const chunks: Array<Buffer> = []
      for (let at = 0; ;) {
        const line = rest.indexOf("\r\n", at)
        const size = parseInt(rest.subarray(at, line).toString("latin1"), 16)
        if (!(size > 0)) break
        chunks.push(rest.subarray(line + 2, line + 2 + size))
        at = line + 2 + size + 2
      }
      return result(Buffer.concat(chunks))
    }
    return closed ? result(rest) : undefined
  }
}

const classify = (parsed: Parsed, method: string): Result => {
  const jsonType = /\r\ncontent-type:\s*application\/json/.test(`\r\n${parsed.head}`)
  let code: string | undefined
  let json = jsonType && method === "HEAD"
  if (jsonType && method !== "HEAD") {
    try {
      const value: unknown = JSON.parse(parsed.body.toString("utf8"))
      json = true
      const error = typeof value === "object" && value !== null ? (value as { error?: { code?: unknown } }).error : undefined
      if (typeof error?.code === "string") code = error.code
    } catch {
      json = false
    }
  }
  return { type: "response", status: parsed.status, json, code }
}

/** Sends one request on a new connection and reads one response. */
export const send = (port: number, request: HostileRequest, timeoutMs: number) =>
  new Promise<Result>((resolve) => {
    const socket = Net.connect(port, "127.0.0.1")
    const chunks: Array<Buffer> = []
    let done = false
    let error = ""
    const finish = (result: Result) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve(result)
    }
    const check = (closed: boolean) => {
      const parsed = parse(Buffer.concat(chunks), request.method, closed)
      if (parsed === "garbage") return finish({ type: "response", status: 0, json: false, code: undefined })
      if (parsed !== undefined) return finish(classify(parsed, request.method))
      if (closed) finish({ type: "drop", detail: error || (chunks.length > 0 ? "partial response" : "closed, no response") })
    }
    socket.on("connect", () => socket.write(request.bytes))
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk)
      check(false)
    })
    socket.on("error", (e: Error & { code?: string }) => {
      error = e.code ?? e.message
    })
    socket.on("close", () => check(true))
    const timer = setTimeout(() => finish({ type: "no-answer" }), timeoutMs)
  })

export interface Hostile {
  readonly requests: number
  readonly seconds: number
  /** "400 bad_request", "417 non-JSON", "dropped (EPIPE)", "no answer", … by count. */
  readonly statuses: Record<string, number>
  readonly fiveXx: number
  readonly nonJson: number
  readonly drops: Record<string, number>
  readonly noAnswer: number
  /** A few requests (start of their bytes) for each answer that is a 5xx, not JSON, or none. */
  readonly examples: Record<string, ReadonlyArray<string>>
}

export interface HostileOptions {
  readonly port: number
  readonly count: number
  readonly seed: number
  readonly concurrency: number
  readonly timeoutMs: number
}

/** `count` requests from the PRNG, `concurrency` at a time, each generated in order as a sender frees up. */
export const runHostile = async (options: HostileOptions): Promise<Hostile> => {
  const { port, count, seed, concurrency, timeoutMs } = options
  const random = mulberry32(seed)
  const started = performance.now()
  const keys: Array<string> = []
  const drops: Array<string> = []
  const examples = new Map<string, Array<string>>()
  let fiveXx = 0
  let nonJson = 0
  let noAnswer = 0
  let next = 0
  const example = (key: string, kind: string, bytes: Buffer) => {
    const list = examples.get(key) ?? []
    const text = `[${kind}] ${JSON.stringify(bytes.subarray(0, 100).toString("latin1")).slice(1, -1)}`
    if (list.length < 3 && !list.includes(text)) list.push(text)
    examples.set(key, list)
  }
  const worker = async () => {
    while (next < count) {
      next++
      const request = generate(random)
      const result = await send(port, request, timeoutMs)
      if (result.type === "no-answer") {
        noAnswer++
        keys.push("no answer")
        example("no answer", request.kind, request.bytes)
      } else if (result.type === "drop") {
        drops.push(result.detail)
        keys.push(`dropped (${result.detail})`)
        example(`dropped (${result.detail})`, request.kind, request.bytes)
      } else {
        const head = request.method === "HEAD" ? " (HEAD)" : ""
        const key = `${result.status || "not HTTP"} ${result.json ? (result.code ?? "JSON") : "non-JSON"}${head}`
        keys.push(key)
        if (result.status >= 500) fiveXx++
        if (!result.json) nonJson++
        if (result.status >= 500 || !result.json) example(key, request.kind, request.bytes)
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return {
    requests: keys.length,
    seconds: Math.round((performance.now() - started) / 100) / 10,
    statuses: countBy(keys),
    fiveXx,
    nonJson,
    drops: countBy(drops),
    noAnswer,
    examples: Object.fromEntries(examples)
  }
}
