import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as LogLevel from "effect/LogLevel"
import * as Runtime from "effect/Runtime"
import { setRequestDeadline } from "../ClickHouse/Deadline.js"
import * as Instruments from "../Observability/Instruments.js"
import { errorCodeOf } from "./ErrorResponse.js"
import { type Guard, pathOf } from "./Guards.js"
import { requestIdOf } from "./RequestId.js"

const methods: ReadonlySet<string> = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])

/** A client that went away before its answer. */
const clientGone = 499

const runtimeFlags = Runtime.defaultRuntime.runtimeFlags

export interface EdgeOptions {
  /** Checked in order before the app runs; the first refusal is the answer. */
  readonly guards?: ReadonlyArray<Guard>
  /** The request's deadline (Deadline.ts), set once the guards let it through. */
  readonly timeout?: Duration.Duration
  /** False: no line per request, whatever the log level (default true). */
  readonly accessLog?: boolean
}

/**
 * Wraps an app that answers every request itself (not the server's middleware: the server writes the response
 * before its middleware returns). Every response carries `x-request-id`, and so do the log lines of the error
 * edge (ErrorResponse.ts); every request is counted and timed by route template (`routes`; any other path is
 * `unmatched`), method and status, and its span (when traced) gets the route, the request id and the error code;
 * and, unless the log level is above info or `accessLog` is false, every request gets one structured line (method,
 * path, status, ms). A client that goes away is logged and counted with status 499 and its work is interrupted.
 * The guards and the deadline run here too: the edge of every request is one synchronous step and one continuation.
 */
export const requestLog = (routes: ReadonlySet<string>, options: EdgeOptions = {}) => {
  const guards = options.guards ?? []
  const timeoutMs = options.timeout === undefined ? undefined : Duration.toMillis(options.timeout)
  const accessLog = options.accessLog ?? true
  return HttpMiddleware.make((app) =>
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
      const logged = accessLog && !LogLevel.greaterThan(fiber.getFiberRef(FiberRef.currentMinimumLogLevel), LogLevel.Info)
      const since = performance.now()
      Instruments.httpInFlight.modify(1)
      let refused: HttpServerResponse.HttpServerResponse | undefined
      for (let i = 0; refused === undefined && i < guards.length; i++) refused = guards[i]!(request, path)
      // A refused request needs no deadline.
      if (refused === undefined && timeoutMs !== undefined) {
        setRequestDeadline(request, Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis() + timeoutMs)
      }
      let answered = false
      /** Counts the answer (none: the client left) and gives its log line, if lines are wanted. */
      const done = (response: HttpServerResponse.HttpServerResponse | undefined): Effect.Effect<void> | undefined => {
        answered = true
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
          : undefined
      }
      // A client that leaves interrupts the request's fiber, which then skips every handler but finalizers: its
      // observer counts it when it ends. (`app` answers every request itself, its failures included, so a fiber
      // that ends unanswered was interrupted, or died.) Cheaper than a mask and an exit handler on every request.
      const unanswered = () => {
        if (answered) return
        const line = done(undefined)
        if (line !== undefined) {
          Runtime.runFork(Runtime.make({ context: fiber.currentContext, fiberRefs: fiber.getFiberRefs(), runtimeFlags }))(line)
        }
      }
      fiber.addObserver(unanswered)
      return Effect.flatMap(refused === undefined ? app : Effect.succeed(refused), (response) => {
        fiber.removeObserver(unanswered)
        const answer = HttpServerResponse.setHeader(response, "x-request-id", requestId)
        const line = done(response)
        return line === undefined ? Effect.succeed(answer) : Effect.as(Effect.uninterruptible(line), answer)
      })
    })
  )
}
