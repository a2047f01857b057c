import { execFileSync } from "node:child_process"
import * as Path from "node:path"
import type { TestProject } from "vitest/node"
import { startServer, removeServer } from "./clickhouse-server.ts"

declare module "vitest" {
  export interface ProvidedContext {
    /** URL of the real ClickHouse server shared by the suite, or "" when it could not be started. */
    clickhouseUrl: string
  }
}

/** The suite's real server: max_concurrent_queries is low on purpose, so only the pool keeps answers exact. */
export const maxConcurrentQueries = 6

const dir = Path.resolve(import.meta.dirname, `../../.clickhouse/test-suite-${process.pid}`)

const banner = (lines: Array<string>) => {
  const bar = "!".repeat(78)
  process.stderr.write(`\n${bar}\n${lines.map((line) => `!! ${line}`).join("\n")}\n${bar}\n\n`)
}

/** Tests run the service as users do, from `dist/`: bring it up to date with the sources (a no-op when it is). */
const build = () => {
  const tsc = Path.resolve(import.meta.dirname, "../../node_modules/typescript/bin/tsc")
  execFileSync(process.execPath, [tsc, "-b", "tsconfig.build.json"], { cwd: Path.resolve(import.meta.dirname, "../.."), stdio: "inherit" })
}

export default async function setup(project: TestProject) {
  build()
  try {
    const url = await startServer({ dir, maxConcurrentQueries, queueMaxWaitMs: 0, fresh: true })
    project.provide("clickhouseUrl", url)
    process.stderr.write(`real ClickHouse server for the suite: ${url} (max_concurrent_queries=${maxConcurrentQueries}, refused past it at once)\n`)
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    if (process.env.CI) {
      throw new Error(`the real ClickHouse server could not be started and CI=true: ${message}`)
    }
    banner([
      "REAL-SERVER TIER NOT RUN: clickhouse-server could not be started.",
      "Its tests are reported as skipped. Install it with: apt-get install -y clickhouse-server",
      message.split("\n")[0] ?? ""
    ])
    project.provide("clickhouseUrl", "")
  }
  return async () => {
    await removeServer(dir).catch(() => undefined)
  }
}
