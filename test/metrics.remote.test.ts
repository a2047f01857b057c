import { layer } from "@effect/vitest"
import { config, describeReal, hasRealServer, remoteBackend, stack, uniqueTable } from "./support/layers.ts"
import { metricsSuite } from "./support/suites.ts"

const table = uniqueTable("remote")

// The suite's server allows only a few concurrent queries; a pool of 2 serves 1000 callers exactly.
describeReal("metrics on the real ClickHouse server (Debian 18.16)", () => {
  if (!hasRealServer) return
  layer(stack(config(remoteBackend(), { poolSize: 2 }), table), { excludeTestServices: true })(
    "pool of 2, server max_concurrent_queries 6",
    (it) => metricsSuite(it, table, { concurrent: 1000, propRuns: 30 })
  )
})
