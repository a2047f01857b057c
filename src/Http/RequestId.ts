import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import { randomFillSync } from "node:crypto"

const valid = /^[A-Za-z0-9._:-]{1,128}$/

const batch = 128
const random = Buffer.alloc(16 * batch)
const text = Buffer.alloc(36 * batch)
const hex = Buffer.from("0123456789abcdef", "latin1")
let ids = ""
let next = batch

/**
 * A random (version 4) UUID, written 128 at a time into one flat string that each id is a slice of. Node's
 * `randomUUID` joins each id from 20 pieces: Node then flattens it to check the header's characters, which cost
 * more than a microsecond per answer, and a waiting request holds the pieces (about 0.45 KB).
 */
export const newId = (): string => {
  if (next === batch) {
    randomFillSync(random)
    let at = 0
    for (let i = 0; i < 16 * batch; i++) {
      const j = i % 16
      if (j === 4 || j === 6 || j === 8 || j === 10) text[at++] = 45 // "-"
      const byte = j === 6 ? (random[i]! & 0x0f) | 0x40 : j === 8 ? (random[i]! & 0x3f) | 0x80 : random[i]!
      text[at++] = hex[byte >> 4]!
      text[at++] = hex[byte & 15]!
    }
    ids = text.toString("latin1")
    next = 0
  }
  const at = 36 * next++
  return ids.slice(at, at + 36)
}

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
    id = given !== undefined && valid.test(given) ? given : newId()
    holder[idKey] = id
  }
  return id
}
