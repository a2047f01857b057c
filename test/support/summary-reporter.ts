import type { Reporter, TestModule } from "vitest/node"

/** Ends the run with one plain line, `N passed, N failed, N skipped`, that any CI can read. */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>) {
    let passed = 0
    let failed = 0
    let skipped = 0
    for (const module of modules) {
      let failedHere = 0
      for (const test of module.children.allTests()) {
        const state = test.result().state
        if (state === "passed") passed++
        else if (state === "failed") failedHere++
        else skipped++
      }
      // A file that failed outside its tests (a hook, an import) counts once, even if its tests were skipped.
      failed += module.state() === "failed" && failedHere === 0 ? 1 : failedHere
    }
    process.stdout.write(`\nsummary: ${passed} passed, ${failed} failed, ${skipped} skipped\n`)
  }
}
