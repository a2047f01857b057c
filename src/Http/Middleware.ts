import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as LogLevel from "effect/LogLevel"
import * as Instruments from "../Observability/Instruments.js"
import { errorCodeOf } from "./ErrorResponse.js"
import { pathOf } from "./Guards.js"
import { requestIdOf } from "./RequestId.js"

const methods: ReadonlySet<string> = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])

/** A client that went away before its answer. */
const clientGone = 499

/**
 * Wraps an app that answers every request itself (not the server's middleware: the server writes the response
 * before its middleware returns). Every response carries `x-request-id`, and so do the log lines of the error
 * edge (ErrorResponse.ts); every request is counted and timed by route template (`routes`; any other path is `unmatched`), method and status, and its
 * span (when traced) gets the route, the request id and the error code; and, unless `LOG_LEVEL` is above info,
 * every request gets one structured line (method, path, status, ms). A client that goes away is logged and
 * counted with status 499 and its work is interrupted.
 */
export const requestLog = (routes: ReadonlySet<string>) =>
  HttpMiddleware.make((app) =>
    // One synchronous step for the bookkeeping of every request: it is on the path of each of them.
    Effect.withFiberRuntime<HttpServerResponse.HttpServerResponse, Effect.Effect.Error<typeof app>, Effect.Effect.Context<typeof app>>((fiber) => {
      const request = Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest)
      const requestId = requestIdOf(request)
      const path = pathOf(request.url)
      const route = routes.has(path) ? path : "unmatched"
      const method = methods.has(request.method) ? request.method : "other"
      const span = fiber.currentSpan
      const traced = span?._tag === "Span" && span.sampled ? span : undefined
      traced?.attribute("http.route", route)
      traced?.attribute("request.id", requestId)
      const logged = !LogLevel.greaterThan(fiber.getFiberRef(FiberRef.currentMinimumLogLevel), LogLevel.Info)
      const since = performance.now()
      Instruments.httpInFlight.modify(1)
      const done = (exit: Exit.Exit<HttpServerResponse.HttpServerResponse, unknown>) => {
        const response = Exit.isSuccess(exit) ? exit.value : undefined
        const status = response?.status ?? clientGone
        const code = response === undefined ? undefined : errorCodeOf(response)
        const ms = performance.now() - since
        Instruments.httpInFlight.modify(-1)
        Instruments.httpRequests(route, method, String(status)).update(1)
        Instruments.httpDuration(route, method).update(ms / 1000)
        if (code !== undefined) {
          Instruments.httpErrors(code).update(1)
          traced?.attribute("error.type", code)
        }
        // Skipping the log line's bookkeeping when nobody reads the lines is worth a third of the throughput.
        return logged
          ? Effect.logInfo("request").pipe(
            Effect.annotateLogs({ method: request.method, path: pathOf(request.originalUrl), status, ms: Math.round(ms), requestId })
          )
          : Effect.void
      }
      // `app` answers every request itself (its failures are responses): the header goes on what it answers.
      return app.pipe(
        Effect.onExit((exit) => done(exit)),
        Effect.map((response) => HttpServerResponse.setHeader(response, "x-request-id", requestId))
      )
    })
  )
