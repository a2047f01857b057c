import { execFile } from "node:child_process"
import { rmSync } from "node:fs"
import * as Path from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)
const script = Path.resolve(import.meta.dirname, "../../scripts/clickhouse")

export interface ServerOptions {
  readonly dir: string
  readonly port?: number
  readonly maxConcurrentQueries?: number
  readonly keepAliveTimeout?: number
  /** 0 makes the server refuse (code 202) at once past max_concurrent_queries instead of queueing. */
  readonly queueMaxWaitMs?: number
  /** The server's time zone (UTC unless given). */
  readonly timezone?: string
  /** Start from an empty data directory. */
  readonly fresh?: boolean
  /** The native (TCP) port, which other servers' clusters name; a free one unless given. */
  readonly tcpPort?: number
  /** A cluster in remote_servers: each shard a list of replicas as "host:tcpPort", or "self" for this server. */
  readonly cluster?: { readonly name: string; readonly shards: ReadonlyArray<ReadonlyArray<string>> }
}

/** Debian's clickhouse-server as a plain process, through the same script users run. */
export const startServer = async (options: ServerOptions): Promise<string> => {
  if (options.fresh) rmSync(options.dir, { recursive: true, force: true })
  const args = ["start", "--dir", options.dir]
  if (options.port !== undefined) args.push("--port", String(options.port))
  if (options.maxConcurrentQueries !== undefined) {
    args.push("--max-concurrent-queries", String(options.maxConcurrentQueries))
  }
  if (options.keepAliveTimeout !== undefined) args.push("--keep-alive-timeout", String(options.keepAliveTimeout))
  if (options.queueMaxWaitMs !== undefined) args.push("--queue-max-wait-ms", String(options.queueMaxWaitMs))
  if (options.timezone !== undefined) args.push("--timezone", options.timezone)
  if (options.tcpPort !== undefined) args.push("--tcp-port", String(options.tcpPort))
  if (options.cluster !== undefined) {
    args.push("--cluster", options.cluster.name)
    for (const shard of options.cluster.shards) args.push("--shard", shard.join(","))
  }
  const { stdout } = await run("bash", [script, ...args], { timeout: 300_000 })
  return stdout.trim().split("\n").at(-1)!
}

export const stopServer = async (dir: string): Promise<void> => {
  await run("bash", [script, "stop", "--dir", dir], { timeout: 30_000 })
}

/** Stops the server and deletes its data directory: for the end of a test file. */
export const removeServer = async (dir: string): Promise<void> => {
  await stopServer(dir)
  rmSync(dir, { recursive: true, force: true })
}
