import { HttpRouter, HttpServerResponse } from "@effect/platform"
import { Cause, Effect } from "effect"
import { ClickHouse } from "../ClickHouse/ClickHouse.js"
import { ApiError } from "../Domain/ApiError.js"
import { Metrics } from "../Metrics.js"
import { handleCause, toResponse } from "./ErrorResponse.js"

const getMetrics = Effect.gen(function*() {
  const metrics = yield* Metrics
  const total = yield* metrics.total
  return HttpServerResponse.unsafeJson({ total })
})

const healthz = Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" }))

const readyz = Effect.gen(function*() {
  const ch = yield* ClickHouse
  return yield* ch.ping.pipe(
    Effect.as(HttpServerResponse.unsafeJson({ status: "ready", clickhouse: ch.target.kind })),
    Effect.catchAll(() =>
      Effect.succeed(toResponse(
        new ApiError({ status: 503, code: "unavailable", message: "The analytics database is not reachable." })
      ))
    )
  )
})

const methodNotAllowed = (allow: string) =>
  Effect.succeed(HttpServerResponse.setHeader(
    toResponse(new ApiError({ status: 405, code: "method_not_allowed", message: `Use ${allow}.` })),
    "allow",
    allow
  ))

const otherMethods = ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const

const route = <E, R>(path: HttpRouter.PathInput, handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
  <E0, R0>(router: HttpRouter.HttpRouter<E0, R0>) =>
    router.pipe(
      HttpRouter.get(path, Effect.catchAllCause(handler, handleCause)),
      HttpRouter.head(path, Effect.catchAllCause(handler, handleCause)),
      (router) =>
        otherMethods.reduce(
          (router, method) => HttpRouter.route(method)(path, methodNotAllowed("GET, HEAD"))(router),
          router
        )
    )

/**
 * The service's routes, with every failure already mapped to a JSON response:
 * mountable as it is inside another app (`HttpRouter.mount("/analytics", MetricsRouter)`).
 */
export const MetricsRouter = HttpRouter.empty.pipe(
  route("/api/metrics", getMetrics),
  route("/healthz", healthz),
  route("/readyz", readyz)
)

const notFound = toResponse(new ApiError({ status: 404, code: "not_found", message: "No such endpoint." }))

/** The router as a whole app: unknown paths get a JSON 404, and nothing escapes unmapped. */
export const MetricsApp = MetricsRouter.pipe(
  Effect.catchAllCause((cause) => {
    const failure = Cause.failureOption(cause)
    return failure._tag === "Some" && failure.value._tag === "RouteNotFound"
      ? Effect.succeed(notFound)
      : handleCause(cause)
  })
)
