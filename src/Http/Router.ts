import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { ClickHouse } from "../ClickHouse/ClickHouse.js"
import { ApiError } from "../Domain/ApiError.js"
import { FilterParams, normalizeFilter, SeriesParams } from "../Domain/Query.js"
import { Metrics } from "../Metrics.js"
import { Api, openApi } from "./Api.js"
import { type HandledError, handleCause, toResponse } from "./ErrorResponse.js"

/**
 * A handler of the Metrics service and the query parameters decoded with `schema`; anything else is a 400 that
 * names the parameter and what is allowed. Built once per endpoint: the result is an effect every request runs.
 */
const withParams = <A, I>(schema: Schema.Schema<A, I> & { readonly fields: Schema.Struct.Fields }, single: ReadonlyArray<string>) => {
  const allowed = Object.keys(schema.fields)
  const decode = Schema.decodeUnknown(schema)
  // No parameters at all (the grand total): the same answer every time, decoded once.
  const none = Schema.decodeUnknownEither(schema)({})
  const decodeAll = (params: Readonly<Record<string, string | ReadonlyArray<string>>>) => Effect.gen(function*() {
    for (const [name, value] of Object.entries(params)) {
      if (!allowed.includes(name)) {
        return yield* badRequest(`unknown parameter ${JSON.stringify(name)}: allowed are ${allowed.join(", ")}`)
      }
      if (single.includes(name) && Array.isArray(value)) return yield* badRequest(`${name}: give it at most once`)
    }
    const decoded = yield* decode(params).pipe(
      Effect.mapError((error) => {
        const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
        const name = String(issue?.path[0] ?? "")
        return new ApiError({
          code: "bad_request",
          message: issue?._tag === "Missing" ? `${name}: required` : `${name}: ${issue?.message ?? "not valid"}`
        })
      })
    )
    const window = decoded as { from?: number; to?: number }
    if (window.from !== undefined && window.to !== undefined && window.from >= window.to) {
      return yield* badRequest("from: must be before to (the window is [from, to))")
    }
    return decoded
  })
  return <B, E>(
    handler: (metrics: Metrics, params: A) => Effect.Effect<B, E>
  ): Effect.Effect<B, E | ApiError, Metrics | HttpServerRequest.ParsedSearchParams> => {
    // The handler's effect for no parameters, built once per Metrics service rather than per request.
    let unfiltered: { readonly metrics: Metrics; readonly effect: Effect.Effect<B, E> } | undefined
    // One step reads both from the request's context: a lookup each would be two steps more.
    return Effect.withFiberRuntime((fiber) => {
      const metrics = Context.unsafeGet(fiber.currentContext, Metrics)
      const params = Context.unsafeGet(fiber.currentContext, HttpServerRequest.ParsedSearchParams)
      if (none._tag === "Left" || !isEmpty(params)) return Effect.flatMap(decodeAll(params), (decoded) => handler(metrics, decoded))
      if (unfiltered?.metrics !== metrics) unfiltered = { metrics, effect: handler(metrics, none.right) }
      return unfiltered.effect
    })
  }
}

const isEmpty = (params: object) => {
  for (const _ in params) return false
  return true
}

const filterParams = withParams(FilterParams, ["from", "to"])
const seriesParams = withParams(SeriesParams, ["from", "to", "interval", "agg", "fill"])

const badRequest = (message: string) => Effect.fail(new ApiError({ code: "bad_request", message }))

const json = (body: unknown) => HttpServerResponse.unsafeJson(body)

/** The last total's answer, reused while the total stays the same: most callers ask the same question and get one run's number. */
let lastTotal: { readonly total: number; readonly response: HttpServerResponse.HttpServerResponse } | undefined
const totalResponse = (total: number) => {
  if (lastTotal?.total !== total) lastTotal = { total, response: json({ total }) }
  return lastTotal.response
}

// The most asked question, unfiltered as a rule: then its effect is the one `withParams` built once.
const getTotal = filterParams((metrics, params) => Effect.map(metrics.total(normalizeFilter(params)), totalResponse))

const getNames = filterParams((metrics, params) => Effect.map(metrics.names(normalizeFilter(params)), json))

const getSummary = filterParams((metrics, params) => Effect.map(metrics.summary(normalizeFilter(params)), json))

const getSeries = seriesParams((metrics, params) =>
  Effect.map(
    metrics.series({
      filter: normalizeFilter(params),
      interval: params.interval,
      agg: params.agg ?? "sum",
      fill: params.fill !== "none"
    }),
    json
  ))

const healthz = Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" }))

const openApiDocument = HttpServerResponse.unsafeJson(openApi)

/**
 * The docs page (Scalar, with its script inline: no CDN), built on its first request: the module holds 3 MB
 * of script that a service nobody browses need not load. Static once built, so its scope is never closed.
 */
const docsApp = Effect.runSync(Effect.cached(
  Effect.gen(function*() {
    const [{ layerHttpLayerRouter }, { toHttpEffect }] = yield* Effect.promise(() =>
      Promise.all([import("@effect/platform/HttpApiScalar"), import("@effect/platform/HttpLayerRouter")])
    )
    const scope = yield* Scope.make()
    return yield* toHttpEffect(layerHttpLayerRouter({ api: Api, path: "/docs" })).pipe(Scope.extend(scope))
  })
))

const notFound = toResponse(new ApiError({ code: "not_found", message: "No such endpoint." }))

const docs = Effect.scoped(Effect.flatMap(docsApp, (app) => app)).pipe(Effect.catchAll(() => Effect.succeed(notFound)))

/** 200 while at least one replica answers, listing each with its state; else the error edge's clean 503. */
const readyz = Effect.gen(function*() {
  const ch = yield* ClickHouse
  const replicas = yield* ch.replicas
  if (!replicas.some((replica) => replica.up)) {
    return toResponse(new ApiError({ code: "unavailable", message: "The analytics database is not reachable." }))
  }
  const [pool, version] = yield* Effect.all([ch.poolState, ch.version])
  const { kind } = ch.target
  return HttpServerResponse.unsafeJson({
    status: "ready",
    clickhouse: kind,
    backend: ch.target.kind === "remote"
      ? { kind, url: ch.target.url, ...(version === undefined ? {} : { version }) }
      : { ...ch.target, ...(version === undefined ? {} : { version }) },
    pool,
    ...(ch.target.kind === "remote" ? { replicas } : {})
  })
})

const methodNotAllowed = (allow: string) =>
  Effect.succeed(toResponse(new ApiError({ code: "method_not_allowed", message: `Use ${allow}.` }), { allow }))

const otherMethods = ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const

/**
 * A GET (and HEAD) route whose every failure the error edge can map (`toApp`): its error type must be a
 * `HandledError`. Mapped once there, not per route: a handler of its own would be one step and one frame more on
 * every request, and on the stack of every request that waits.
 */
const route = <R>(path: HttpRouter.PathInput, handler: Effect.Effect<HttpServerResponse.HttpServerResponse, HandledError, R>) =>
  <E0 extends HandledError, R0>(router: HttpRouter.HttpRouter<E0, R0>) =>
    router.pipe(
      HttpRouter.get(path, handler),
      HttpRouter.head(path, handler),
      (router) =>
        otherMethods.reduce(
          (router, method) => HttpRouter.route(method)(path, methodNotAllowed("GET, HEAD"))(router),
          router
        )
    )

/** The service's routes; `toApp` maps their failures to JSON responses. */
export const MetricsRouter = HttpRouter.empty.pipe(
  route("/api/metrics", getTotal),
  route("/api/metrics/names", getNames),
  route("/api/metrics/summary", getSummary),
  route("/api/metrics/series", getSeries),
  route("/healthz", healthz),
  route("/readyz", readyz),
  route("/openapi.json", Effect.succeed(openApiDocument)),
  route("/docs", docs)
)

/** The routes with `GET /metrics` (the Prometheus exposition) among them. */
export const withMetricsRoute = (handler: Effect.Effect<HttpServerResponse.HttpServerResponse>) =>
<E extends HandledError, R>(router: HttpRouter.HttpRouter<E, R>) => route("/metrics", handler)(router)

/** The paths of a router's routes: the `route` label of the request metrics. */
export const routeTemplates = <E, R>(router: HttpRouter.HttpRouter<E, R>): ReadonlySet<string> =>
  new Set(Array.from(router.routes, (r) => r.path))

/** A router as a whole app: unknown paths get a JSON 404, every other failure its JSON answer, and nothing escapes unmapped. */
export const toApp = <R>(router: HttpRouter.HttpRouter<HandledError, R>) =>
  router.pipe(
    Effect.catchAllCause((cause) => {
      const failure = Cause.failureOption(cause)
      return failure._tag === "Some" && failure.value._tag === "RouteNotFound"
        ? Effect.succeed(notFound)
        : handleCause(cause as Cause.Cause<HandledError>)
    })
  )
