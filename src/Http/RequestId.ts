import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import { randomUUID } from "node:crypto"

const valid = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * Where a request keeps its id once asked: a property of its own, not a WeakMap (a WeakMap entry per request costs
 * about a microsecond, most of it in the garbage collector, against a few dozen nanoseconds for the property).
 */
const idKey = Symbol.for("analytics-api/RequestId")
type WithId = { [idKey]?: string }

/** The request's id: the caller's `x-request-id` when it is a sane one, else a new UUID; the same each time it is asked. */
export const requestIdOf = (request: HttpServerRequest.HttpServerRequest): string => {
  const holder = request as HttpServerRequest.HttpServerRequest & WithId
  let id = holder[idKey]
  if (id === undefined) {
    const given = request.headers["x-request-id"]
    id = given !== undefined && valid.test(given) ? given : randomUUID()
    holder[idKey] = id
  }
  return id
}
