import { layer } from "@effect/vitest"
import { config, embeddedBackend, stack, uniqueTable } from "./support/layers.ts"
import { metricsSuite } from "./support/suites.ts"

const table = uniqueTable("embedded")

layer(stack(config(embeddedBackend(), { poolSize: 4 }), table), { excludeTestServices: true })(
  "metrics on the embedded engine (chDB)",
  (it) => metricsSuite(it, table, { concurrent: 1000, propRuns: 30 })
)
