import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Redacted from "effect/Redacted"
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
 * A check of a request before the app sees it: a refusal to answer with, or `undefined` to let it through.
 * Guards are plain functions so that the request log (Middleware.ts) runs all of them in its own single step.
 */
export type Guard = (request: HttpServerRequest.HttpServerRequest, path: string) => HttpServerResponse.HttpServerResponse | undefined

/**
 * API keys (`Authorization: Bearer <key>` or `X-API-Key: <key>`). Every key is compared, in constant time over
 * SHA-256 digests, so neither the answer's timing nor its length tells which key or how much of it matched.
 * No keys: open. `open` paths (the liveness probe) never need one.
 */
export const apiKeyAuth = (keys: ReadonlyArray<Redacted.Redacted<string>>, open: ReadonlyArray<string> = ["/healthz"]): Guard => {
  const digests = keys.map((key) => digest(Redacted.value(key)))
  const valid = (given: string) => {
    const candidate = digest(given)
    let matched = false
    for (const known of digests) matched = timingSafeEqual(candidate, known) || matched
    return matched
  }
  return (request, path) => {
    if (digests.length === 0 || open.includes(path)) return undefined
    const given = presented(request)
    return given !== undefined && valid(given) ? undefined : unauthorized
  }
}

/** No endpoint takes a body: a declared body past `maxBytes` is refused before anyone reads it. */
export const bodyLimit = (maxBytes: number): Guard => {
  const tooLarge = toResponse(new ApiError({ code: "payload_too_large", message: `Bodies are limited to ${maxBytes} bytes.` }), {
    connection: "close"
  })
  return (request) => {
    const length = Number(request.headers["content-length"] ?? "0")
    return Number.isFinite(length) && length <= maxBytes ? undefined : tooLarge
  }
}

export const pathOf = (url: string) => {
  const end = url.indexOf("?")
  return end === -1 ? url : url.slice(0, end)
}
