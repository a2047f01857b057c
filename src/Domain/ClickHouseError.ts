import * as Data from "effect/Data"

export class ClickHouseUnavailable extends Data.TaggedError("ClickHouseUnavailable")<{
  readonly cause: unknown
}> {}

export class ClickHouseOverloaded extends Data.TaggedError("ClickHouseOverloaded")<{
  readonly reason: "pool" | "server"
  readonly cause?: unknown
}> {}

export class ClickHouseTimeout extends Data.TaggedError("ClickHouseTimeout")<{
  readonly cause?: unknown
}> {}

export class ClickHouseQueryError extends Data.TaggedError("ClickHouseQueryError")<{
  readonly code: number
  readonly cause: unknown
}> {}

export class ClickHouseBadResponse extends Data.TaggedError("ClickHouseBadResponse")<{
  readonly cause: unknown
}> {}

export type ClickHouseError =
  | ClickHouseUnavailable
  | ClickHouseOverloaded
  | ClickHouseTimeout
  | ClickHouseQueryError
  | ClickHouseBadResponse

const tags: ReadonlySet<string> = new Set([
  "ClickHouseUnavailable",
  "ClickHouseOverloaded",
  "ClickHouseTimeout",
  "ClickHouseQueryError",
  "ClickHouseBadResponse"
])

export const isClickHouseError = (error: unknown): error is ClickHouseError =>
  typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string" && tags.has(error._tag)
