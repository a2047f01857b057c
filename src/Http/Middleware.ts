import { HttpApp, HttpMiddleware, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Clock, Effect, Exit } from "effect"
import { randomUUID } from "node:crypto"
import { pathOf } from "./Guards.ts"

const validRequestId = /^[A-Za-z0-9._:-]{1,128}$/

const requestIdOf = (request: HttpServerRequest.HttpServerRequest) => {
  const given = request.headers["x-request-id"]
  return given !== undefined && validRequestId.test(given) ? given : randomUUID()
}

/**
 * Every response carries `x-request-id`; every request gets one structured log line
 * (method, path, status, ms), and every log line inside it carries the request id.
 * A client that goes away is logged with status 499 and its work is interrupted.
 */
export const requestLog = HttpMiddleware.make((app) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const requestId = requestIdOf(request)
    const started = yield* Clock.currentTimeMillis
    const logLine = (status: number) =>
      Clock.currentTimeMillis.pipe(
        Effect.flatMap((now) =>
          Effect.logInfo("request").pipe(
            Effect.annotateLogs({ method: request.method, path: pathOf(request.url), status, ms: now - started })
          )
        )
      )
    yield* HttpApp.appendPreResponseHandler((_request, response) =>
      Effect.succeed(HttpServerResponse.setHeader(response, "x-request-id", requestId))
    )
    return yield* app.pipe(
      Effect.onExit((exit) => logLine(Exit.isSuccess(exit) ? exit.value.status : 499)),
      Effect.annotateLogs("requestId", requestId)
    )
  })
)
