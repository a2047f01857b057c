import { HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { ClickHouseLayer, createSchema, insertDemoRows, Metrics, MetricsRouter } from "../src/index.ts"
import { config, embeddedBackend, getJson, getTotal, quietLogs, request, uniqueTable } from "./support/layers.ts"

const table = uniqueTable("embedding")

// Another Effect app with routes of its own, mounting the analytics router under /analytics.
const OtherApp = HttpRouter.empty.pipe(
  HttpRouter.get("/", HttpServerResponse.text("the other app")),
  HttpRouter.mount("/analytics", MetricsRouter)
)

const Seeded = Layer.effectDiscard(Effect.zipRight(createSchema(table), insertDemoRows(table)))

const OtherAppLive = HttpServer.serve(OtherApp).pipe(
  Layer.provide(Metrics.layer(table)),
  Layer.provide(Seeded),
  Layer.provideMerge(NodeHttpServer.layerTest),
  Layer.provide(ClickHouseLayer(config(embeddedBackend()))),
  Layer.provide(quietLogs)
)

layer(OtherAppLive, { excludeTestServices: true })("embedded in another app", (it) => {
  it.effect("serves the total under the mount prefix", () =>
    Effect.gen(function*() {
      expect(yield* getTotal("/analytics/api/metrics")).toBe(458)
      expect((yield* getJson("/analytics/readyz")).status).toBe(200)
    }))

  it.effect("keeps its JSON errors inside the host app, and the host's own routes keep working", () =>
    Effect.gen(function*() {
      const wrongMethod = yield* request("POST", "/analytics/api/metrics")
      expect(wrongMethod.status).toBe(405)
      expect(wrongMethod.headers["allow"]).toBe("GET, HEAD")
      expect(wrongMethod.json).toEqual({ error: { code: "method_not_allowed", message: "Use GET, HEAD." } })
      const root = yield* request("GET", "/")
      expect(root).toMatchObject({ status: 200, text: "the other app" })
    }))
})
