import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import { randomUUID } from "node:crypto"

const valid = /^[A-Za-z0-9._:-]{1,128}$/
const ids = new WeakMap<HttpServerRequest.HttpServerRequest, string>()

/** The request's id: the caller's `x-request-id` when it is a sane one, else a new UUID; the same each time it is asked. */
export const requestIdOf = (request: HttpServerRequest.HttpServerRequest): string => {
  let id = ids.get(request)
  if (id === undefined) {
    const given = request.headers["x-request-id"]
    id = given !== undefined && valid.test(given) ? given : randomUUID()
    ids.set(request, id)
  }
  return id
}
