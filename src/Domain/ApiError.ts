import { Schema } from "effect"

export const ErrorCode = Schema.Literal(
  "bad_request",
  "unauthorized",
  "not_found",
  "method_not_allowed",
  "request_timeout",
  "payload_too_large",
  "headers_too_large",
  "overloaded",
  "unavailable",
  "timeout",
  "query_failed",
  "bad_response",
  "internal"
)
export type ErrorCode = typeof ErrorCode.Type

/** What reaches a caller: a status, a stable code and a message written by us, never by a driver. */
export class ApiError extends Schema.TaggedError<ApiError>()("ApiError", {
  status: Schema.Int,
  code: ErrorCode,
  message: Schema.String,
  retryAfterSeconds: Schema.optional(Schema.Int)
}) {}

export const ErrorBody = Schema.Struct({
  error: Schema.Struct({ code: ErrorCode, message: Schema.String })
})
export type ErrorBody = typeof ErrorBody.Type
