import * as Schema from "effect/Schema"

export const ErrorCode = Schema.Literal(
  "bad_request",
  "unauthorized",
  "not_found",
  "method_not_allowed",
  "request_timeout",
  "payload_too_large",
  "headers_too_large",
  "expectation_failed",
  "overloaded",
  "unavailable",
  "timeout",
  "query_failed",
  "bad_response",
  "internal"
)
export type ErrorCode = typeof ErrorCode.Type

/** The one table from error code to HTTP status: a new code does not compile until it has its status here. */
export const statusOf: { readonly [Code in ErrorCode]: number } = {
  bad_request: 400,
  unauthorized: 401,
  not_found: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  payload_too_large: 413,
  headers_too_large: 431,
  expectation_failed: 417,
  overloaded: 503,
  unavailable: 503,
  timeout: 504,
  query_failed: 500,
  bad_response: 502,
  internal: 500
}

/** What reaches a caller: a stable code (its status from `statusOf`) and a message written by us, never by a driver. */
export class ApiError extends Schema.TaggedError<ApiError>()("ApiError", {
  code: ErrorCode,
  message: Schema.String,
  retryAfterSeconds: Schema.optional(Schema.Int)
}) {
  get status(): number {
    return statusOf[this.code]
  }
}

export const ErrorBody = Schema.Struct({
  error: Schema.Struct({ code: ErrorCode, message: Schema.String })
})
export type ErrorBody = typeof ErrorBody.Type
