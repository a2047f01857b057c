import { layer } from "@effect/vitest"
import { config, describeReal, embeddedBackend, hasRealServer, remoteBackend, stack, uniqueTable } from "./support/layers.ts"
import { sqlSuite } from "./support/sqlSuite.ts"

const embedded = uniqueTable("sql_embedded")
layer(stack(config(embeddedBackend()), embedded), { excludeTestServices: true })(
  "values on the embedded engine: bound as server-side parameters",
  (it) => sqlSuite(it, embedded)
)

const remote = uniqueTable("sql_remote")
describeReal("values on the real ClickHouse server (Debian 18.16): escaped literals (Sql.quote)", () => {
  if (!hasRealServer) return
  layer(stack(config(remoteBackend()), remote), { excludeTestServices: true })("18.16", (it) => sqlSuite(it, remote))
})
