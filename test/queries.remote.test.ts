import { layer } from "@effect/vitest"
import { config, describeReal, hasRealServer, remoteBackend, stack, uniqueTable } from "./support/layers.ts"
import { querySuite } from "./support/querySuite.ts"

const table = uniqueTable("queries_remote")

// 18.16 has no server-side parameters: every value travels as a literal written by Sql.quote.
describeReal("analytics queries on the real ClickHouse server (Debian 18.16): values as escaped literals", () => {
  if (!hasRealServer) return
  layer(stack(config(remoteBackend(), { poolSize: 2 }), table), { excludeTestServices: true })(
    "pool of 2, server max_concurrent_queries 6",
    (it) => querySuite(it, table, { propRuns: 25, concurrent: 1000 })
  )
})
