import { HttpServerResponse } from "@effect/platform"
import { Cause, Effect } from "effect"
import { ApiError } from "../Domain/ApiError.ts"
import type { ClickHouseError } from "../Domain/ClickHouseError.ts"

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

const isClickHouseError = (error: unknown): error is ClickHouseError =>
  typeof error === "object" && error !== null && "_tag" in error &&
  typeof error._tag === "string" && error._tag.startsWith("ClickHouse")

/**
 * The one edge where failures become responses. The caller gets our code and message;
 * the log gets the full cause (annotated with the request id by the middleware).
 */
export const handleCause = <E>(cause: Cause.Cause<E>) =>
  Effect.gen(function*() {
    if (Cause.isInterruptedOnly(cause)) return yield* Effect.failCause(cause as Cause.Cause<never>)
    const failure = Cause.failureOption(cause)
    const error = failure._tag === "Some" && failure.value instanceof ApiError
      ? failure.value
      : failure._tag === "Some" && isClickHouseError(failure.value)
      ? fromClickHouseError(failure.value)
      : internalError
    if (error.status >= 500) {
      yield* Effect.logError(`request failed: ${error.code}`, cause)
    }
    return toResponse(error)
  })
