import {
  type ClickHouseError,
  ClickHouseBadResponse,
  ClickHouseOverloaded,
  ClickHouseQueryError,
  ClickHouseTimeout,
  ClickHouseUnavailable
} from "../Domain/ClickHouseError.js"

const TOO_MANY_SIMULTANEOUS_QUERIES = 202
const TIMEOUT_EXCEEDED = 159
const TOO_SLOW = 160
const SOCKET_TIMEOUT = 209
const NETWORK_ERROR = 210
const QUERY_WAS_CANCELLED = 394
/** A Distributed table's shard with no replica reachable: the answer would be partial, so there is none. */
const ALL_CONNECTION_TRIES_FAILED = 279

/**
 * The ClickHouse error code of a failure: a new client gives `ClickHouseError` with a string `code`,
 * an old server's text reaches us as a plain `Error` whose message starts `Code: N`.
 */
export const clickHouseCode = (error: unknown): number | undefined => {
  if (!(error instanceof Error)) return undefined
  const code = (error as { code?: unknown }).code
  if (typeof code === "string" && /^\d+$/.test(code)) return Number(code)
  if (typeof code === "number") return code
  const match = /^\s*Code:\s*(\d+)/.exec(error.message)
  return match ? Number(match[1]) : undefined
}

export const classify = (error: unknown): ClickHouseError => {
  const code = clickHouseCode(error)
  if (code !== undefined) {
    switch (code) {
      case TOO_MANY_SIMULTANEOUS_QUERIES:
        return new ClickHouseOverloaded({ reason: "server", cause: error })
      case TIMEOUT_EXCEEDED:
      case TOO_SLOW:
      case QUERY_WAS_CANCELLED:
        return new ClickHouseTimeout({ cause: error })
      case SOCKET_TIMEOUT:
      case NETWORK_ERROR:
      case ALL_CONNECTION_TRIES_FAILED:
        return new ClickHouseUnavailable({ cause: error })
      default:
        return new ClickHouseQueryError({ code, cause: error })
    }
  }
  if (error instanceof SyntaxError) return new ClickHouseBadResponse({ cause: error })
  if (error instanceof Error && /^Timeout error/i.test(error.message)) return new ClickHouseTimeout({ cause: error })
  // Anything else came from the transport or from something that is not ClickHouse answering in its place
  // (a proxy's error page, a server mid-restart): the database is, for now, not there.
  return new ClickHouseUnavailable({ cause: error })
}
