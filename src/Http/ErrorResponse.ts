import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { ApiError } from "../Domain/ApiError.js"
import { type ClickHouseError, isClickHouseError } from "../Domain/ClickHouseError.js"
import { firstLine } from "../Domain/StartupError.js"
import { InvalidQuery } from "../Metrics.js"
import { requestIdOf } from "./RequestId.js"

export const fromClickHouseError = (error: ClickHouseError): ApiError => {
  switch (error._tag) {
    case "ClickHouseOverloaded":
      return new ApiError({
        code: "overloaded",
        message: "The service is at capacity; retry shortly.",
        retryAfterSeconds: 1
      })
    case "ClickHouseUnavailable":
      return new ApiError({ code: "unavailable", message: "The analytics database is unavailable." })
    case "ClickHouseTimeout":
      return new ApiError({ code: "timeout", message: "The query did not finish in time." })
    case "ClickHouseQueryError":
      return new ApiError({ code: "query_failed", message: "The analytics query failed." })
    case "ClickHouseBadResponse":
      return new ApiError({ code: "bad_response", message: "The analytics database sent an unreadable answer." })
  }
}

export const internalError = new ApiError({ code: "internal", message: "Internal server error." })

/** The error code of each error response, for the request metrics (responses are immutable: one lookup). */
const codes = new WeakMap<HttpServerResponse.HttpServerResponse, ApiError["code"]>()

export const errorCodeOf = (response: HttpServerResponse.HttpServerResponse) => codes.get(response)

/** The JSON answer of an error, with any extra headers; the only way an error response is made. */
export const toResponse = (error: ApiError, headers: Record<string, string> = {}): HttpServerResponse.HttpServerResponse => {
  const response = HttpServerResponse.unsafeJson(
    { error: { code: error.code, message: error.message } },
    {
      status: error.status,
      headers: error.retryAfterSeconds === undefined ? headers : { ...headers, "retry-after": String(error.retryAfterSeconds) }
    }
  )
  codes.set(response, error.code)
  return response
}

/** Why a ClickHouse call failed, in a few words for the log: the driver's first line, never its stack. */
const reasonOf = (error: ClickHouseError): string =>
  error._tag === "ClickHouseOverloaded" && error.reason === "pool"
    ? "no pooled connection free in time"
    : error.cause === undefined
    ? error._tag
    : firstLine(error.cause)

/** The failures a route may have. A route with any other error type does not compile (see Router.route). */
export type HandledError = ApiError | ClickHouseError | InvalidQuery

const toApiError = (error: HandledError): ApiError => {
  switch (error._tag) {
    case "ApiError":
      return error
    case "InvalidQuery":
      return new ApiError({ code: "bad_request", message: error.message })
    default:
      return fromClickHouseError(error)
  }
}

/**
 * The one edge where failures become responses. The caller gets our code and message. The log gets one
 * line (annotated with the request id by the middleware): the failure class and the driver's reason for a
 * ClickHouse failure, which is expected in an outage; the full cause for anything else, which is a bug.
 */
export const handleCause = (cause: Cause.Cause<HandledError>) =>
  Effect.gen(function*() {
    if (Cause.isInterruptedOnly(cause)) return yield* Effect.failCause(cause as Cause.Cause<never>)
    const request = yield* Effect.serviceOption(HttpServerRequest.HttpServerRequest)
    const withId = Option.match(request, {
      onNone: () => ({}),
      onSome: (request): Record<string, unknown> => ({ requestId: requestIdOf(request) })
    })
    const failure = Cause.failureOption(cause)
    if (failure._tag === "None") {
      yield* Effect.logError(`request failed: ${internalError.code}`, cause).pipe(Effect.annotateLogs(withId))
      return toResponse(internalError)
    }
    const error = toApiError(failure.value)
    if (error.status >= 500 && isClickHouseError(failure.value)) {
      yield* Effect.logError(`request failed: ${error.code}`).pipe(
        Effect.annotateLogs({ ...withId, reason: reasonOf(failure.value) })
      )
    }
    return toResponse(error)
  })
