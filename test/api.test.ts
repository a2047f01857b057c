import { expect, layer } from "@effect/vitest"
import { Validator } from "@seriousme/openapi-schema-validator"
import { Effect, Either } from "effect"
import { client } from "../src/Http/Api.ts"
import { config, embeddedBackend, getJson, request, stack, uniqueTable } from "./support/layers.ts"
import { demo } from "./support/model.ts"
import { resetTo } from "./support/suites.ts"

const table = uniqueTable("api")

const start = 1_704_067_200

layer(stack(config(embeddedBackend()), table), { excludeTestServices: true })("the API's contract", (it) => {
  it.effect("/openapi.json is a valid OpenAPI 3.1 document listing every endpoint and parameter", () =>
    Effect.gen(function*() {
      const answer = yield* getJson("/openapi.json")
      expect(answer.status).toBe(200)
      const spec = answer.json as { openapi: string; paths: Record<string, { get: { parameters?: Array<{ name: string }> } }> }
      const result = yield* Effect.promise(() => new Validator().validate(spec as never))
      expect(result.errors ?? []).toEqual([])
      expect(result.valid).toBe(true)
      expect(spec.openapi).toBe("3.1.0")
      const parameters = (path: string) => (spec.paths[path]?.get.parameters ?? []).map((p) => p.name).sort()
      expect(Object.keys(spec.paths).sort()).toEqual(
        ["/api/metrics", "/api/metrics/names", "/api/metrics/series", "/api/metrics/summary", "/healthz", "/readyz"]
      )
      for (const path of ["/api/metrics", "/api/metrics/names", "/api/metrics/summary"]) {
        expect(parameters(path)).toEqual(["from", "metric", "to"])
      }
      expect(parameters("/api/metrics/series")).toEqual(["agg", "fill", "from", "interval", "metric", "to"])
      expect(JSON.stringify(spec)).not.toContain("HttpApiDecodeError")
    }))

  it.effect("/docs is an HTML page with the document in it, no CDN", () =>
    Effect.gen(function*() {
      const answer = yield* request("GET", "/docs")
      expect(answer.status).toBe(200)
      expect(answer.headers["content-type"]).toMatch(/text\/html/)
      expect(answer.text).toContain("\"openapi\":\"3.1.0\"")
      // The page script is inline, not fetched from a CDN.
      expect(answer.text).not.toMatch(/<script[^>]*\ssrc=/)
    }))

  it.effect("the typed client calls every endpoint of the running service and gets decoded answers", () =>
    Effect.gen(function*() {
      yield* resetTo(table, demo)
      const api = yield* client("")
      expect(yield* api.metrics.total({ urlParams: {} })).toEqual({ total: 458 })
      expect(yield* api.metrics.total({ urlParams: { metric: ["errors"], from: start + 3600 } })).toEqual({ total: 6 })
      const names = yield* api.metrics.names({ urlParams: { to: start + 3600 } })
      expect(names.metrics.map((m) => [m.name, m.count, m.last])).toEqual([
        ["errors", 1, "2024-01-01T00:00:00Z"],
        ["page_views", 1, "2024-01-01T00:00:00Z"]
      ])
      const summary = yield* api.metrics.summary({ urlParams: { metric: "page_views" } })
      expect(summary.metrics[0]).toMatchObject({ count: 3, p50: 150, p99: 200 })
      const series = yield* api.metrics.series({
        urlParams: { metric: "errors", interval: 3600, agg: "max", from: start, to: start + 4 * 3600 }
      })
      expect(series).toEqual({
        interval: "1h",
        agg: "max",
        series: [{
          name: "errors",
          points: [
            { ts: "2024-01-01T00:00:00Z", value: 2 },
            { ts: "2024-01-01T01:00:00Z", value: 1 },
            { ts: "2024-01-01T02:00:00Z", value: 5 },
            { ts: "2024-01-01T03:00:00Z", value: null }
          ]
        }]
      })
      expect(yield* api.health.alive()).toEqual({ status: "ok" })
      expect(yield* api.health.ready()).toMatchObject({
        status: "ready",
        clickhouse: "embedded",
        backend: { kind: "embedded", version: expect.stringMatching(/^\d+\./) },
        pool: { size: 4, inUse: 0, waiting: 0 }
      })
      // A refused query reaches the client as the typed error body.
      const refused = yield* Effect.either(api.metrics.series({ urlParams: { interval: 1, from: 0, to: 100_000 } }))
      expect(Either.isLeft(refused) && refused.left).toMatchObject({ error: { code: "bad_request" } })
    }))
})
