/**
 * The request edge (Http/Middleware.ts) as a client meets it, over a real socket: an answer carries its request id,
 * is counted by route, method and status, and gets one log line (none with `accessLog: false`); its deadline reaches
 * the work under it; a client that leaves before its answer is counted and logged once as 499, and the work it
 * started is interrupted; a new request id is a random UUID.
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Clock, Duration, Effect, HashMap, Layer, Logger, ManagedRuntime } from "effect"
import * as Http from "node:http"
import * as Net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { within } from "../src/ClickHouse/Deadline.ts"
import { handleCause } from "../src/Http/ErrorResponse.ts"
import { toApp } from "../src/Http/Router.ts"
import { requestLog } from "../src/Http/Middleware.ts"
import { newId } from "../src/Http/RequestId.ts"
import { expose } from "../src/Observability/Prometheus.ts"
import { until } from "./support/process.ts"

const lines: Array<Record<string, unknown>> = []
const capture = Logger.make(({ annotations, message }) => {
  lines.push({ message: Array.isArray(message) ? message.join(" ") : message, ...Object.fromEntries(HashMap.toEntries(annotations)) })
})

let started = 0
let interrupted = 0
const routes = ["/edge/answered", "/edge/never", "/edge/deadline"]
/** The time left to the work of the request, as a ClickHouse call under it sees it. */
const left = Effect.map(
  Effect.zip(within(60_000), Clock.currentTimeMillis),
  ([deadline, now]) => HttpServerResponse.unsafeJson({ left: deadline - now })
)
const router = HttpRouter.empty.pipe(
  HttpRouter.get("/edge/deadline", left),
  HttpRouter.mount(
    "/edge/mounted",
    HttpRouter.empty.pipe(
      HttpRouter.get("/deadline", left),
      HttpRouter.get("/defect", Effect.catchAllCause(Effect.die("boom"), handleCause))
    )
  ),
  HttpRouter.get("/edge/answered", Effect.succeed(HttpServerResponse.unsafeJson({ ok: true }))),
  HttpRouter.get(
    "/edge/never",
    Effect.sync(() => started++).pipe(
      Effect.zipRight(Effect.never),
      Effect.onInterrupt(() => Effect.sync(() => interrupted++))
    )
  )
)

const runtime = ManagedRuntime.make(
  HttpServer.serve(requestLog(new Set(routes), { timeout: Duration.seconds(5) })(toApp(router))).pipe(
    Layer.provideMerge(NodeHttpServer.layer(() => Http.createServer(), { port: 0, host: "127.0.0.1" })),
    Layer.provide(Logger.replace(Logger.defaultLogger, capture))
  )
)
let port = 0

beforeAll(async () => {
  const address = await runtime.runPromise(Effect.map(HttpServer.HttpServer, (server) => server.address))
  if (address._tag !== "TcpAddress") throw new Error("not a TCP address")
  port = address.port
})
afterAll(() => runtime.dispose())

/** The counter's sample in the exposition, 0 when it has none yet. */
const count = (route: string, status: string) => {
  const line = expose({ serviceName: "edge-test", serviceVersion: "0" }).split("\n")
    .find((l) => l.startsWith(`analytics_http_requests_total{route="${route}",method="GET",status="${status}"} `))
  return line === undefined ? 0 : Number(line.split(" ").at(-1))
}

describe("request edge", () => {
  it("an answer carries its request id, is counted once, and is logged once", async () => {
    const before = count("/edge/answered", "200")
    const response = await fetch(`http://127.0.0.1:${port}/edge/answered`, { headers: { "x-request-id": "edge-answered-1" } })
    expect(response.status).toBe(200)
    expect(response.headers.get("x-request-id")).toBe("edge-answered-1")
    expect(await response.json()).toEqual({ ok: true })
    expect(count("/edge/answered", "200") - before).toBe(1)
    expect(lines.filter((l) => l.requestId === "edge-answered-1")).toEqual([
      expect.objectContaining({ message: "request", method: "GET", path: "/edge/answered", status: 200 })
    ])
  })

  it("the request's deadline reaches the work under it, under a mounted router's copy of the request too", async () => {
    for (const path of ["/edge/deadline", "/edge/mounted/deadline"]) {
      const { left } = await (await fetch(`http://127.0.0.1:${port}${path}`)).json() as { left: number }
      expect(left).toBeGreaterThan(4_000)
      expect(left).toBeLessThanOrEqual(5_000)
    }
  })

  it("a request without an id of its own: the error edge logs the id its answer carries, under a mounted router too", async () => {
    const response = await fetch(`http://127.0.0.1:${port}/edge/mounted/defect`)
    expect(response.status).toBe(500)
    const id = response.headers.get("x-request-id")
    expect(id).toMatch(/^[0-9a-f-]{36}$/)
    expect(lines.filter((l) => String(l.message).startsWith("request failed"))).toEqual([
      expect.objectContaining({ requestId: id })
    ])
  })

  it("a client that leaves is counted and logged once as 499, and its work is interrupted", async () => {
    const before = count("/edge/never", "499")
    const socket = Net.connect(port, "127.0.0.1")
    socket.on("error", () => {})
    socket.write("GET /edge/never HTTP/1.1\r\nHost: x\r\nx-request-id: edge-left-1\r\n\r\n")
    await until("the request to start", () => started === 1, 5000, 20)
    socket.destroy()
    await until("the 499 to be counted", () => count("/edge/never", "499") - before === 1, 5000, 20)
    await until("the work to be interrupted", () => interrupted === 1, 5000, 20)
    // Nothing more comes later.
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(count("/edge/never", "499") - before).toBe(1)
    expect(lines.filter((l) => l.requestId === "edge-left-1")).toEqual([
      expect.objectContaining({ message: "request", method: "GET", path: "/edge/never", status: 499 })
    ])
  })
})

describe("request edge with accessLog false", () => {
  const quiet = ManagedRuntime.make(
    HttpServer.serve(requestLog(new Set(routes), { accessLog: false })(toApp(router))).pipe(
      Layer.provideMerge(NodeHttpServer.layer(() => Http.createServer(), { port: 0, host: "127.0.0.1" })),
      Layer.provide(Logger.replace(Logger.defaultLogger, capture))
    )
  )
  afterAll(() => quiet.dispose())

  it("an answer gets no log line, and still carries its request id and is counted", async () => {
    const address = await quiet.runPromise(Effect.map(HttpServer.HttpServer, (server) => server.address))
    if (address._tag !== "TcpAddress") throw new Error("not a TCP address")
    const before = count("/edge/answered", "200")
    const response = await fetch(`http://127.0.0.1:${address.port}/edge/answered`, { headers: { "x-request-id": "edge-quiet-1" } })
    expect(response.status).toBe(200)
    expect(response.headers.get("x-request-id")).toBe("edge-quiet-1")
    expect(count("/edge/answered", "200") - before).toBe(1)
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(lines.filter((l) => l.requestId === "edge-quiet-1")).toEqual([])
  })
})

describe("request ids", () => {
  it("a new id is a version-4 UUID, never the same twice, across the batches it is cut from", () => {
    const ids = Array.from({ length: 1000 }, () => newId())
    expect(new Set(ids).size).toBe(ids.length)
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    // Every position takes many values: the bytes are random, not a counter or a repeated batch.
    for (const at of [0, 9, 15, 20, 35]) expect(new Set(ids.map((id) => id[at])).size).toBeGreaterThan(2)
  })
})
