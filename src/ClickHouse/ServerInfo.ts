/**
 * What the server is and knows, detected once at first contact: its version, whether it binds `{name:Type}`
 * parameters, and which optional settings it knows. An unknown setting fails every query on an old server,
 * so the settings sent with each query are computed here, once, from what the server knows.
 */
import type { ClickHouseClient, ClickHouseSettings } from "@clickhouse/client"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { type ClickHouseError, ClickHouseTimeout } from "../Domain/ClickHouseError.js"
import { readJson, type Target } from "./Backend.js"
import { classify } from "./Classify.js"

export interface ServerInfo {
  readonly version: string
  /** Whether the server binds `{name:Type}` parameters itself; without them values are sent as escaped literals. */
  readonly serverParams: boolean
  /** The optional settings we would like to send that this server knows. */
  readonly settings: ReadonlySet<string>
  /** Sent with every read: read-only where the server knows the setting. */
  readonly readSettings: ClickHouseSettings
  /** Sent with every write. */
  readonly writeSettings: ClickHouseSettings
}

const wantedSettings = ["max_execution_time", "cancel_http_readonly_queries_on_client_close", "wait_end_of_query", "readonly"]

/** The server's own time limit, in whole seconds, below our deadline so the server gives up first. */
export const serverTimeLimit = (deadline: Duration.Duration): number =>
  Math.max(1, Math.floor(Duration.toSeconds(deadline) * 0.9))

/**
 * With `wait_end_of_query`, the server holds the answer until the query ends: in memory only when `buffer_size`
 * (an HTTP-interface parameter of every version) is above its 1 MiB default, and in a temporary file otherwise.
 * A file created, written, read back and removed per query cost a fifth of the server's CPU for a one-row answer
 * here. So answers up to 4 MiB stay in memory; a larger one goes on in the file, still whole or not at all.
 */
const answerBufferBytes = 4 * 1024 * 1024

const querySettings = (settings: ReadonlySet<string>, queryTimeout: Duration.Duration) => {
  const wanted: ClickHouseSettings = {
    max_execution_time: serverTimeLimit(queryTimeout),
    cancel_http_readonly_queries_on_client_close: 1,
    wait_end_of_query: 1
  }
  const known = Object.fromEntries(Object.entries(wanted).filter(([name]) => settings.has(name)))
  const write = "wait_end_of_query" in known ? { ...known, buffer_size: answerBufferBytes } : known
  // readonly=2: no writes or DDL, but settings such as max_execution_time may still be sent.
  return { writeSettings: write, readSettings: settings.has("readonly") ? { ...write, readonly: "2" } : write }
}

export const detect = (
  control: ClickHouseClient,
  target: Target,
  queryTimeout: Duration.Duration,
  /** The replica, for the log line. */
  name: string
): Effect.Effect<ServerInfo, ClickHouseError> =>
  Effect.tryPromise({
    try: async () => {
      const [version] = await readJson(control, { query: "SELECT version() AS version" }) as Array<{ version: string }>
      const names = await readJson(control, {
        query: `SELECT name FROM system.settings WHERE name IN (${wantedSettings.map((s) => `'${s}'`).join(", ")})`
      }) as Array<{ name: string }>
      const settings = new Set(names.map((row) => row.name))
      const serverParams = await readJson(control, { query: "SELECT {probe:UInt8} AS probe", query_params: { probe: 1 } })
        .then(() => true, () => false)
      // An HTTP-interface parameter on every server version, a listed setting only on newer ones.
      if (target.kind === "remote") settings.add("wait_end_of_query")
      // The embedded engine refuses even plain reads under readonly; it is in-process, with no other users.
      else settings.delete("readonly")
      return { version: version?.version ?? "unknown", serverParams, settings, ...querySettings(settings, queryTimeout) }
    },
    catch: classify
  }).pipe(
    Effect.timeoutFail({ duration: queryTimeout, onTimeout: () => new ClickHouseTimeout({}) }),
    Effect.tap((info) =>
      Effect.logInfo(
        `ClickHouse ${info.version} (${target.kind === "remote" ? name : "embedded"}); optional settings: ${[...info.settings].join(", ")}; ` +
          `values bound ${info.serverParams ? "server-side" : "as escaped literals"}`
      )
    )
  )
