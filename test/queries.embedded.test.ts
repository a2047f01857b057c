import { layer } from "@effect/vitest"
import { config, embeddedBackend, stack, uniqueTable } from "./support/layers.ts"
import { querySuite } from "./support/querySuite.ts"

const table = uniqueTable("queries_embedded")

layer(stack(config(embeddedBackend(), { poolSize: 4 }), table), { excludeTestServices: true })(
  "analytics queries on the embedded engine (chDB): values bound server-side",
  (it) => querySuite(it, table, { propRuns: 25, concurrent: 1000 })
)
