import { HttpApp, HttpMiddleware, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Clock, Effect, Exit, FiberRef, LogLevel } from "effect"
import { randomUUID } from "node:crypto"
import { pathOf } from "./Guards.js"

const validRequestId = /^[A-Za-z0-9._:-]{1,128}$/

const requestIdOf = (request: HttpServerRequest.HttpServerRequest) => {
  const given = request.headers["x-request-id"]
  return given !== undefined && validRequestId.test(given) ? given : randomUUID()
}

/**
 * Every response carries `x-request-id`; every log line inside a request carries the request id; and,
 * unless `LOG_LEVEL` is above info, every request gets one structured line (method, path, status, ms).
 * A client that goes away is logged with status 499 and its work is interrupted.
 */
export const requestLog = HttpMiddleware.make((app) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const requestId = requestIdOf(request)
    // The platform sends the response before middleware sees it: headers go on through a pre-response handler.
    yield* HttpApp.appendPreResponseHandler((_request, response) =>
      Effect.succeed(HttpServerResponse.setHeader(response, "x-request-id", requestId))
    )
    const tagged = Effect.annotateLogs(app, "requestId", requestId)
    // Skipping the bookkeeping when nobody reads the lines is worth a third of the throughput.
    if (LogLevel.greaterThan(yield* FiberRef.get(FiberRef.currentMinimumLogLevel), LogLevel.Info)) return yield* tagged
    const started = yield* Clock.currentTimeMillis
    const logLine = (status: number) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.logInfo("request").pipe(
          Effect.annotateLogs({ method: request.method, path: pathOf(request.originalUrl), status, ms: now - started, requestId })
        ))
    return yield* tagged.pipe(Effect.onExit((exit) => logLine(Exit.isSuccess(exit) ? exit.value.status : 499)))
  })
)
