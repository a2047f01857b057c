import { HttpMiddleware, HttpServerRequest } from "@effect/platform"
import { Duration, Effect, Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { ApiError } from "../Domain/ApiError.js"
import { toResponse } from "./ErrorResponse.js"

const digest = (text: string) => createHash("sha256").update(text, "utf8").digest()

const presented = (request: HttpServerRequest.HttpServerRequest): string | undefined => {
  const authorization = request.headers["authorization"]
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization)
    return match?.[1]
  }
  return request.headers["x-api-key"]
}

const unauthorized = toResponse(new ApiError({ code: "unauthorized", message: "A valid API key is required." }), {
  "www-authenticate": "Bearer"
})

/**
 * API keys (`Authorization: Bearer <key>` or `X-API-Key: <key>`). Every key is compared, in constant time over
 * SHA-256 digests, so neither the answer's timing nor its length tells which key or how much of it matched.
 * No keys: open. `open` paths (the liveness probe) never need one.
 */
export const apiKeyAuth = (keys: ReadonlyArray<Redacted.Redacted<string>>, open: ReadonlyArray<string> = ["/healthz"]) => {
  const digests = keys.map((key) => digest(Redacted.value(key)))
  const valid = (given: string) => {
    const candidate = digest(given)
    let matched = false
    for (const known of digests) matched = timingSafeEqual(candidate, known) || matched
    return matched
  }
  return HttpMiddleware.make((app) =>
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
      if (digests.length === 0 || open.includes(pathOf(request.url))) return app
      const given = presented(request)
      return given !== undefined && valid(given) ? app : Effect.succeed(unauthorized)
    })
  )
}

const timedOut = toResponse(new ApiError({ code: "timeout", message: "The request did not finish in time." }))

/** Each request has a deadline; past it the work is interrupted (down to the ClickHouse query) and the caller gets 504. */
export const deadline = (timeout: Duration.Duration) =>
  HttpMiddleware.make((app) =>
    Effect.timeoutTo(app, { duration: timeout, onSuccess: (response) => response, onTimeout: () => timedOut })
  )

/** No endpoint takes a body: a declared body past `maxBytes` is refused before anyone reads it. */
export const bodyLimit = (maxBytes: number) =>
  HttpMiddleware.make((app) =>
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
      const length = Number(request.headers["content-length"] ?? "0")
      return Number.isFinite(length) && length <= maxBytes ? app : Effect.succeed(
        toResponse(new ApiError({ code: "payload_too_large", message: `Bodies are limited to ${maxBytes} bytes.` }), {
          connection: "close"
        })
      )
    })
  )

export const pathOf = (url: string) => {
  const end = url.indexOf("?")
  return end === -1 ? url : url.slice(0, end)
}
