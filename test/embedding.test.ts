import { HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Analytics } from "../src/index.ts"
import { config, embeddedBackend, getJson, getTotal, quietLogs, request, uniqueTable } from "./support/layers.ts"

// Another Effect app with routes of its own, mounting the analytics API under /analytics. The engine's
// directory is empty: the layer creates the table and the demo rows before the first request.
const OtherApp = HttpRouter.empty.pipe(
  HttpRouter.get("/", HttpServerResponse.text("the other app")),
  Analytics.mount("/analytics")
)

const OtherAppLive = HttpServer.serve(OtherApp).pipe(
  Layer.provide(Analytics.layer({ clickHouse: config(embeddedBackend()), table: uniqueTable("embedding") })),
  Layer.provideMerge(NodeHttpServer.layerTest),
  Layer.provide(quietLogs)
)

layer(OtherAppLive, { excludeTestServices: true })("embedded in another app", (it) => {
  it.effect("serves the demo total under the mount prefix, on a fresh embedded engine", () =>
    Effect.gen(function*() {
      expect(yield* getTotal("/analytics/api/metrics")).toBe(458)
      expect((yield* getJson("/analytics/readyz")).status).toBe(200)
    }))

  it.effect("answers every path under the prefix itself: JSON 404 and 405, with a request id", () =>
    Effect.gen(function*() {
      const wrongMethod = yield* request("POST", "/analytics/api/metrics")
      expect(wrongMethod.status).toBe(405)
      expect(wrongMethod.headers["allow"]).toBe("GET, HEAD")
      expect(wrongMethod.json).toEqual({ error: { code: "method_not_allowed", message: "Use GET, HEAD." } })
      const unknown = yield* request("GET", "/analytics/no/such/path")
      expect(unknown.status).toBe(404)
      expect(unknown.json).toEqual({ error: { code: "not_found", message: "No such endpoint." } })
      expect(unknown.headers["x-request-id"]).toMatch(/\S/)
    }))

  it.effect("leaves the host's own routes alone", () =>
    Effect.gen(function*() {
      expect(yield* request("GET", "/")).toMatchObject({ status: 200, text: "the other app" })
      expect((yield* request("GET", "/elsewhere")).status).toBe(404)
    }))
})
