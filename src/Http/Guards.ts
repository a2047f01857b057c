import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Redacted from "effect/Redacted"
import { createHash, timingSafeEqual } from "node:crypto"
import { requestDeadline } from "../ClickHouse/Deadline.js"
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

/**
 * Each request has a deadline: every wait for ClickHouse on its behalf (a connection, a query, a shared run, a
 * retry) ends by it, the query is cancelled on the server, and the caller gets 504. It is a time, not a timer:
 * the waits themselves keep it (Deadline.ts), so a request costs no fiber or timer of its own.
 */
export const deadline = (timeout: Duration.Duration) => {
  const ms = Duration.toMillis(timeout)
  return HttpMiddleware.make((app) =>
    // Set on the request's own fiber, not around `app`: nothing runs on it after the request.
    Effect.clockWith((clock) => Effect.zipRight(FiberRef.set(requestDeadline, clock.unsafeCurrentTimeMillis() + ms), app))
  )
}

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
