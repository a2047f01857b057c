/**
 * Traces as a tracing backend gets them: the built service exports OTLP/HTTP to a receiver started here,
 * in front of a real 18.16 server behind the fault proxy (so a ClickHouse call can be made to need a retry).
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, expect, it } from "vitest"
import { type Proxy, startProxy } from "../scripts/support/proxy.ts"
import { describeReal, hasRealServer, realServerUrl } from "./support/layers.ts"
import { freePort, type Running, startService, until } from "./support/process.ts"

interface Received {
  readonly contentType: string
  readonly body: Buffer
}

type Value = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number }

interface Span {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly kind: number
  readonly attributes: ReadonlyArray<{ key: string; value: Value }>
}

/** A minimal OTLP/HTTP receiver: it keeps every export request. */
const startReceiver = async () => {
  const received: Array<Received> = []
  const server = Http.createServer((request, response) => {
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("end", () => {
      if (request.url === "/v1/traces") received.push({ contentType: request.headers["content-type"] ?? "", body: Buffer.concat(chunks) })
      response.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

const spansOf = (received: ReadonlyArray<Received>) =>
  received.filter((r) => r.contentType.includes("json")).flatMap((r) => {
    const data = JSON.parse(r.body.toString("utf8")) as {
      resourceSpans: Array<{ resource: { attributes: Span["attributes"] }; scopeSpans: Array<{ spans: Array<Span> }> }>
    }
    return data.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans.map((span) => ({ ...span, resource: rs.resource }))))
  })

const attribute = (span: Span, key: string) => {
  const value = span.attributes.find((a) => a.key === key)?.value
  return value === undefined ? undefined : value.stringValue ?? value.boolValue ?? value.doubleValue ?? Number(value.intValue)
}

const database = `tracing_${process.pid}`
let proxy: Proxy
let receiver: Awaited<ReturnType<typeof startReceiver>>
const services: Array<Running> = []

const sql = (text: string) =>
  fetch(`${realServerUrl}/?query=${encodeURIComponent(text)}`, { method: "POST" }).then(async (r) => {
    if (!r.ok) throw new Error(await r.text())
  })

beforeAll(async () => {
  if (!hasRealServer) return
  await sql(`CREATE DATABASE IF NOT EXISTS ${database}`)
  await sql(`CREATE TABLE ${database}.metrics (ts DateTime, metric_name String, value Float64) ENGINE = MergeTree ORDER BY (ts, metric_name)`)
  await sql(`INSERT INTO ${database}.metrics VALUES ('2024-01-01 00:00:00','page_views',458)`)
  proxy = await startProxy(realServerUrl)
  receiver = await startReceiver()
})

afterAll(async () => {
  for (const service of services) service.child.kill("SIGTERM")
  await Promise.all(services.map((service) => service.exited))
  await proxy?.close()
  await receiver?.close()
  if (hasRealServer) await sql(`DROP DATABASE IF EXISTS ${database}`)
})

const start = async (env: Record<string, string>) => {
  const port = await freePort()
  const service = startService({
    PORT: String(port),
    CLICKHOUSE_URL: proxy.url,
    CLICKHOUSE_DATABASE: database,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: "50",
    ...env
  })
  services.push(service)
  await service.waitFor(/Listening on/)
  return { service, base: `http://127.0.0.1:${port}` }
}

describeReal("traces over OTLP/HTTP", () => {
  it("a request and its retried ClickHouse call arrive as one trace, parent to child, with their attributes", async () => {
    const { base, service } = await start({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_SERVICE_NAME: "analytics-test" })
    proxy.next("http503")
    const response = await fetch(`${base}/api/metrics`, { headers: { "x-request-id": "traced-request-1" } })
    expect(await response.json()).toEqual({ total: 458 })

    const isRoot = (span: Span) => span.name === "http.server GET" && attribute(span, "request.id") === "traced-request-1"
    await until("the request's span", () => spansOf(receiver.received).some(isRoot))
    const root = spansOf(receiver.received).find(isRoot)!
    await until("the whole trace", () => spansOf(receiver.received).filter((s) => s.traceId === root.traceId).length >= 7)
    const trace = spansOf(receiver.received).filter((s) => s.traceId === root.traceId)
    const childrenOf = (parent: Span, name: string) => trace.filter((s) => s.parentSpanId === parent.spanId && s.name === name)
    const only = (parent: Span, name: string) => {
      const found = childrenOf(parent, name)
      expect(found.map((s) => s.name), `${name} under ${parent.name}`).toEqual([name])
      return found[0]!
    }

    expect(root.kind).toBe(2) // server
    expect(root.parentSpanId ?? "").toBe("")
    expect(attribute(root, "http.route")).toBe("/api/metrics")
    expect(attribute(root, "http.response.status_code")).toBe(200)
    expect((root as unknown as { resource: Span }).resource.attributes).toContainEqual({ key: "service.name", value: { stringValue: "analytics-test" } })

    const total = only(root, "Metrics.total")
    const coalesce = only(total, "ClickHouse.coalesce")
    expect(attribute(coalesce, "coalesce.joined")).toBe(false)
    const call = only(coalesce, "ClickHouse.query")
    const tries = childrenOf(call, "ClickHouse.try").sort((a, b) => Number(attribute(a, "clickhouse.attempt")) - Number(attribute(b, "clickhouse.attempt")))
    expect(tries.map((t) => [attribute(t, "clickhouse.attempt"), attribute(t, "clickhouse.try"), attribute(t, "error.type")])).toEqual([
      [1, "first", "unavailable"],
      [2, "retry", undefined]
    ])
    const queryIds = tries.map((t) => attribute(t, "clickhouse.query_id"))
    for (const id of queryIds) expect(id).toMatch(/^[0-9a-f-]{36}$/)
    expect(new Set(queryIds).size).toBe(2)
    for (const t of tries) only(t, "ClickHouse.poolWait")

    // The request's log line carries the trace.
    await service.waitFor(/message=request .*requestId=traced-request-1/)
    const line = service.output().split("\n").find((l) => l.includes("requestId=traced-request-1") && l.includes("message=request"))!
    expect(line).toContain(`traceId=${root.traceId}`)
  })

  it("follows the caller's traceparent: a sampled parent is continued, an unsampled one exports nothing", async () => {
    const { base } = await start({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" })
    const kept = { trace: "4bf92f3577b34da6a3ce929d0e0e4736", parent: "00f067aa0ba902b7" }
    const dropped = "5bf92f3577b34da6a3ce929d0e0e4737"
    await fetch(`${base}/api/metrics`, { headers: { traceparent: `00-${dropped}-00f067aa0ba902b7-00` } })
    await fetch(`${base}/api/metrics`, { headers: { traceparent: `00-${kept.trace}-${kept.parent}-01` } })
    await until("the continued trace", () => spansOf(receiver.received).some((s) => s.traceId === kept.trace && s.name === "ClickHouse.try"))
    const root = spansOf(receiver.received).find((s) => s.traceId === kept.trace && s.name === "http.server GET")!
    expect(root.parentSpanId).toBe(kept.parent)
    // Both requests ended before the continued trace was exported, in the same or an earlier batch.
    expect(spansOf(receiver.received).filter((s) => s.traceId === dropped)).toEqual([])
  })

  it("sends OTLP protobuf by default (the OTel default protocol)", async () => {
    const before = receiver.received.length
    const { base } = await start({})
    await fetch(`${base}/api/metrics`, { headers: { "x-request-id": "protobuf-request-1" } })
    await until("a protobuf export with the request", () =>
      receiver.received.slice(before).some((r) => r.body.includes("protobuf-request-1") && r.body.includes("ClickHouse.try")))
    const exported = receiver.received.slice(before).find((r) => r.body.includes("protobuf-request-1"))!
    expect(exported.contentType).toBe("application/x-protobuf")
    expect(() => JSON.parse(exported.body.toString("utf8"))).toThrow()
  })
})
