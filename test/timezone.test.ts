import { expect, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { ClickHouse } from "../src/ClickHouse/ClickHouse.ts"
import * as Path from "node:path"
import { removeServer, startServer } from "./support/clickhouse-server.ts"
import { config, describeReal, hasRealServer, remoteBackend, stack, uniqueTable } from "./support/layers.ts"
import { querySuite } from "./support/querySuite.ts"

const dir = Path.resolve(import.meta.dirname, `../.clickhouse/test-timezone-${process.pid}`)
const table = uniqueTable("timezone")
const Zone = Schema.Struct({ tz: Schema.String, epoch: Schema.String })

/** A server of its own whose time zone is +05:30, for as long as the file runs. */
const KolkataServer = Layer.unwrapScoped(
  Effect.acquireRelease(
    Effect.promise(() => startServer({ dir, timezone: "Asia/Kolkata", fresh: true })),
    () => Effect.promise(() => removeServer(dir).catch(() => undefined))
  ).pipe(Effect.map((url) => stack(config(remoteBackend(url), { poolSize: 2 }), table)))
)

// Every bucket, window and timestamp must still be UTC: the model knows nothing of the server's zone.
describeReal("a ClickHouse 18.16 server whose time zone is Asia/Kolkata", () => {
  if (!hasRealServer) return
  layer(KolkataServer, { excludeTestServices: true, timeout: 300_000 })(
    "answers in UTC",
    (it) => {
      it.effect("the server's own zone is +05:30 (so a wall-clock bug would show)", () =>
        Effect.gen(function*() {
          const ch = yield* ClickHouse
          const [row] = yield* ch.query("SELECT timezone() AS tz, toString(toDateTime(1704067200)) AS epoch", Zone)
          expect(row).toEqual({ tz: "Asia/Kolkata", epoch: "2024-01-01 05:30:00" })
        }))
      querySuite(it, table, { propRuns: 25, concurrent: 200 })
    }
  )
})
