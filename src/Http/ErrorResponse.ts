import { HttpServerResponse } from "@effect/platform"
import { Cause, Effect } from "effect"
import { ApiError } from "../Domain/ApiError.js"
import { type ClickHouseError, isClickHouseError } from "../Domain/ClickHouseError.js"
import { firstLine } from "../Domain/StartupError.js"
import { InvalidQuery } from "../Metrics.js"

export const fromClickHouseError = (error: ClickHouseError): ApiError => {
  switch (error._tag) {
    case "ClickHouseOverloaded":
      return new ApiError({
        status: 503,
        code: "overloaded",
        message: "The service is at capacity; retry shortly.",
        retryAfterSeconds: 1
      })
    case "ClickHouseUnavailable":
      return new ApiError({ status: 503, code: "unavailable", message: "The analytics database is unavailable." })
    case "ClickHouseTimeout":
      return new ApiError({ status: 504, code: "timeout", message: "The query did not finish in time." })
    case "ClickHouseQueryError":
      return new ApiError({ status: 500, code: "query_failed", message: "The analytics query failed." })
    case "ClickHouseBadResponse":
      return new ApiError({ status: 502, code: "bad_response", message: "The analytics database sent an unreadable answer." })
  }
}

export const internalError = new ApiError({ status: 500, code: "internal", message: "Internal server error." })

export const toResponse = (error: ApiError): HttpServerResponse.HttpServerResponse => {
  const response = HttpServerResponse.unsafeJson(
    { error: { code: error.code, message: error.message } },
    { status: error.status }
  )
  return error.retryAfterSeconds === undefined
    ? response
    : HttpServerResponse.setHeader(response, "retry-after", String(error.retryAfterSeconds))
}

/** Why a ClickHouse call failed, in a few words for the log: the driver's first line, never its stack. */
const reasonOf = (error: ClickHouseError): string =>
  error._tag === "ClickHouseOverloaded" && error.reason === "pool"
    ? "no pooled connection free in time"
    : error.cause === undefined
    ? error._tag
    : firstLine(error.cause)

/**
 * The one edge where failures become responses. The caller gets our code and message. The log gets one
 * line (annotated with the request id by the middleware): the failure class and the driver's reason for a
 * ClickHouse failure, which is expected in an outage; the full cause for anything else, which is a bug.
 */
export const handleCause = <E>(cause: Cause.Cause<E>) =>
  Effect.gen(function*() {
    if (Cause.isInterruptedOnly(cause)) return yield* Effect.failCause(cause as Cause.Cause<never>)
    const failure = Cause.failureOption(cause)
    if (failure._tag === "Some" && failure.value instanceof ApiError) return toResponse(failure.value)
    if (failure._tag === "Some" && failure.value instanceof InvalidQuery) {
      return toResponse(new ApiError({ status: 400, code: "bad_request", message: failure.value.message }))
    }
    if (failure._tag === "Some" && isClickHouseError(failure.value)) {
      const error = fromClickHouseError(failure.value)
      if (error.status >= 500) {
        yield* Effect.logError(`request failed: ${error.code}`).pipe(Effect.annotateLogs("reason", reasonOf(failure.value)))
      }
      return toResponse(error)
    }
    yield* Effect.logError(`request failed: ${internalError.code}`, cause)
    return toResponse(internalError)
  })
