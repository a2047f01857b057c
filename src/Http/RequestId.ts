import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import { randomUUID } from "node:crypto"

const valid = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * Where the edge keeps what it knows of a request (its id, its deadline): properties of the Node request under it,
 * `source`, which the copies of the request that a router makes for a mounted prefix share. Not a WeakMap: an entry
 * per request costs about a microsecond, most of it in the garbage collector, against a few dozen nanoseconds for
 * a property.
 */
export const holderOf = (request: HttpServerRequest.HttpServerRequest): Record<symbol, unknown> =>
  (typeof request.source === "object" && request.source !== null ? request.source : request) as Record<symbol, unknown>

const idKey = Symbol.for("analytics-api/RequestId")

/** The request's id: the caller's `x-request-id` when it is a sane one, else a new UUID; the same each time it is asked. */
export const requestIdOf = (request: HttpServerRequest.HttpServerRequest): string => {
  const holder = holderOf(request)
  let id = holder[idKey] as string | undefined
  if (id === undefined) {
    const given = request.headers["x-request-id"]
    id = given !== undefined && valid.test(given) ? given : randomUUID()
    holder[idKey] = id
  }
  return id
}
