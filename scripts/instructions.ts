/**
 * Instructions per request, counted by valgrind's callgrind: on this shared two-core machine, where wall-clock
 * figures move by a tenth or more from one minute to the next, a count that the machine's other load does not
 * change (it still moves by up to a tenth between runs: where a major GC lands, and JIT work, are counted too).
 *
 * Each system runs alone under callgrind with instrumentation off: it is warmed up (`--warmup` requests), then
 * instructions are counted, in every thread of the process (JIT compiler and GC helpers included), while
 * `--requests` more are answered over `--connections` keep-alive connections. Every answer is checked. `--gc`
 * forces a full GC before the count; `--repeat` counts each system that many times, interleaved, and reports the
 * mean (a major GC lands in some counts and not in others: it is part of the cost, so it is averaged, not
 * dropped); `--api DIR` counts the API built in DIR (its dist/main.js) instead of this checkout's, to compare
 * builds; `--out DIR` keeps each count's per-function profile there (`callgrind_annotate DIR/callgrind.f.1`).
 * Ratios are against the bare platform route (g), and for the uncoalesced read against the minimal platform route
 * awaiting one shared client (h), in the same run. Each count also gives the ClickHouse queries per request:
 * under callgrind a coalesced run has fewer callers than under wrk, so per-run work weighs more here.
 *
 *   npm run instructions [-- --requests 4000 --warmup 4000 --connections 100 --repeat 3 --only g,j,f]
 */
import { spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import * as ClickHouse from "./bench/clickhouse.ts"
import { ensureDebianCommand, freePort } from "./support/proc.ts"

const root = Path.resolve(import.meta.dirname, "..")

const { values: args } = parseArgs({
  options: {
    requests: { type: "string", default: "4000" },
    warmup: { type: "string", default: "4000" },
    connections: { type: "string", default: "100" },
    only: { type: "string" },
    repeat: { type: "string", default: "1" },
    gc: { type: "boolean", default: false },
    api: { type: "string" },
    out: { type: "string" }
  }
})

interface System {
  readonly id: string
  readonly name: string
  readonly script: string
  readonly path: string
  readonly body: string
  readonly env?: Record<string, string>
  /** Where `script` is, when not this checkout. */
  readonly cwd?: string
}

const total = "{\"total\":458}"
const api = { script: "dist/main.js", path: "/api/metrics", body: total, ...(args.api === undefined ? {} : { cwd: Path.resolve(args.api) }) }
const systems: ReadonlyArray<System> = [
  { id: "g", name: "bare @effect/platform constant JSON", script: "scripts/bench/platform-server.mjs", path: "/api/metrics", body: total },
  { id: "j", name: "minimal platform route + shared client, fresh-read coalesced", script: "scripts/bench/platform-coalesced-server.mjs", path: "/api/metrics", body: total },
  { id: "f", name: "API /api/metrics, COALESCE_READS=true", ...api, env: { COALESCE_READS: "true" } },
  { id: "i", name: "API /healthz", ...api, path: "/healthz", body: "{\"status\":\"ok\"}" },
  { id: "h", name: "minimal platform route + one shared client", script: "scripts/bench/platform-client-server.mjs", path: "/api/metrics", body: total },
  { id: "e", name: "API /api/metrics, COALESCE_READS=false", ...api, env: { COALESCE_READS: "false" } }
]

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** `count` GETs over `connections` keep-alive connections; the number whose status or body was not `body`. */
const load = (url: string, count: number, connections: number, body: string) =>
  new Promise<number>((resolve) => {
    const agent = new Http.Agent({ keepAlive: true, maxSockets: connections })
    let sent = 0, done = 0, wrong = 0
    const settle = (ok: boolean) => {
      if (!ok) wrong++
      if (++done === count) {
        agent.destroy()
        resolve(wrong)
      } else next()
    }
    const next = () => {
      if (sent++ >= count) return
      const request = Http.get(url, { agent }, (response) => {
        let text = ""
        response.setEncoding("utf8").on("data", (chunk) => (text += chunk))
        response.on("end", () => settle(response.statusCode === 200 && text === body))
      })
      // Under callgrind a request takes ~100× its usual time; one that takes a minute is a hang.
      request.setTimeout(60_000, () => request.destroy(new Error("no answer in 60 s")))
      request.on("error", () => settle(false))
    }
    for (let i = 0; i < connections; i++) next()
  })

const callgrind = (pid: number, command: string) => {
  if (spawnSync("callgrind_control", [command, String(pid)], { stdio: "ignore" }).status !== 0) {
    throw new Error(`callgrind_control ${command} ${pid} failed`)
  }
}

/** Where a count's per-function profile goes: nowhere, unless `--out DIR` asks for it (read it with callgrind_annotate). */
const outFile = (system: System, round: number) =>
  args.out === undefined ? "/dev/null" : Path.resolve(args.out, `callgrind.${system.id}.${round + 1}`)

/** What ran a count's instructions, by function name in its per-function profile; the rest is "other native". */
const categories: ReadonlyArray<readonly [string, RegExp]> = [
  ["JIT compiler", /compiler::|Compiler|OptimizedCompilation|Turbofan|[Mm]aglev/],
  ["GC", /Scaveng|MarkCompact|Marking|Sweep|Evacuat|heap::base|IteratePointers|Heap::|MemoryChunk|RememberedSet|SlotSet|Pretenuring/],
  ["V8 builtins", /Builtins_/],
  ["JIT code", /^\?\?\?:0x[0-9a-f]+/]
]

/** Thousands of instructions per request, by what ran them. */
const breakdown = (file: string, requests: number): string => {
  const annotated = spawnSync("callgrind_annotate", ["--threshold=100", file], { encoding: "utf8", maxBuffer: 1 << 28 }).stdout
  const totals = new Map<string, number>()
  for (const line of annotated.split("\n")) {
    const match = /^\s*([\d,]+) \([^)]*\)\s+(.*)$/.exec(line)
    if (match === null || match[2]!.includes("PROGRAM TOTALS")) continue
    const name = categories.find(([, pattern]) => pattern.test(match[2]!))?.[0] ?? "other native (V8 runtime, Node, libuv, libc)"
    totals.set(name, (totals.get(name) ?? 0) + Number(match[1]!.replaceAll(",", "")))
  }
  return [...totals].sort((a, b) => b[1] - a[1]).map(([name, n]) => `${name} ${Math.round(n / requests / 1000)}k`).join(", ")
}

/**
 * Queries ClickHouse has run, this one included. Under callgrind the server is ~100× slower and ClickHouse is not,
 * so a coalesced run has fewer callers than under wrk: the count's share of per-run work depends on it.
 */
const queriesRun = async (clickhouse: string) =>
  Number(await ClickHouse.query(clickhouse, "SELECT value FROM system.events WHERE event = 'Query'"))

const count = async (system: System, clickhouse: string, requests: number, warmup: number, connections: number, round: number) => {
  const port = await freePort()
  const log = Path.join(root, `bench-results/logs/instructions-${system.id}.log`)
  Fs.mkdirSync(Path.dirname(log), { recursive: true })
  const child = spawn(
    "valgrind",
    ["--tool=callgrind", "--instr-atstart=no", `--callgrind-out-file=${outFile(system, round)}`, "--log-file=" + log,
      "node", ...(args.gc ? ["--expose-gc", "--import", Path.join(root, "scripts/bench/gc-on-signal.mjs")] : []), system.script],
    { cwd: system.cwd ?? root, stdio: "ignore", env: { ...process.env, PORT: String(port), CLICKHOUSE_URL: clickhouse, LOG_LEVEL: "Warning", ...system.env } }
  )
  const url = `http://127.0.0.1:${port}${system.path}`
  try {
    // Starting under valgrind takes tens of seconds.
    const readyBy = Date.now() + 180_000
    for (let ready = false; !ready;) {
      if (child.exitCode !== null) throw new Error(`${system.id} exited before it was ready: see ${log}`)
      if (Date.now() > readyBy) throw new Error(`${system.id} was not ready within 180 s: see ${log}`)
      ready = await load(url, 1, 1, system.body).then((wrong) => wrong === 0)
      if (!ready) await sleep(500)
    }
    const wrongBefore = await load(url, warmup, connections, system.body)
    if (args.gc) {
      process.kill(child.pid!, "SIGUSR2")
      await sleep(2000)
    }
    const queriesBefore = await queriesRun(clickhouse)
    callgrind(child.pid!, "--instr=on")
    const wrong = await load(url, requests, connections, system.body)
    callgrind(child.pid!, "--instr=off")
    // Less the query that read the counter the second time.
    const queries = await queriesRun(clickhouse) - queriesBefore - 1
    child.kill("SIGTERM")
    await new Promise((resolve) => child.once("exit", resolve))
    const collected = /Collected : (\d+)/.exec(Fs.readFileSync(log, "utf8"))?.[1]
    if (collected === undefined) throw new Error(`no count in ${log}`)
    return { perRequest: Number(collected) / requests, queriesPerRequest: queries / requests, wrong: wrong + wrongBefore }
  } finally {
    child.kill("SIGKILL")
  }
}

const main = async () => {
  ensureDebianCommand("valgrind", console.log)
  spawnSync("npx", ["tsc", "-b", "tsconfig.build.json"], { cwd: root, stdio: "inherit" })
  const [requests, warmup, connections] = [Number(args.requests), Number(args.warmup), Number(args.connections)]
  const only = args.only?.split(",")
  if (args.out !== undefined) Fs.mkdirSync(args.out, { recursive: true })
  const clickhouse = ClickHouse.start()
  const results = new Map<string, number>()
  try {
    await ClickHouse.seed(clickhouse, "metrics")
    const repeat = Number(args.repeat)
    console.log(
      `instructions per request: ${requests} counted after ${warmup} to warm up, ${connections} connections, 6-row table` +
        `${args.gc ? ", a full GC before each count" : ""}${repeat > 1 ? `; mean of ${repeat} counts, interleaved` : ""}`
    )
    const chosen = systems.filter((system) => only === undefined || only.includes(system.id))
    const counts = new Map<string, Array<number>>()
    for (let round = 0; round < repeat; round++) {
      for (const system of chosen) {
        const { perRequest, queriesPerRequest, wrong } = await count(system, clickhouse, requests, warmup, connections, round)
        counts.set(system.id, [...(counts.get(system.id) ?? []), perRequest])
        console.log(
          `  (${system.id}) count ${round + 1}: ${Math.round(perRequest / 1000)}k, ${wrong} wrong answers, ` +
            `${queriesPerRequest.toFixed(3)} ClickHouse queries per request`
        )
        if (args.out !== undefined) console.log(`    ${breakdown(outFile(system, round), requests)}`)
      }
    }
    for (const system of chosen) {
      const all = counts.get(system.id)!
      const mean = all.reduce((sum, n) => sum + n, 0) / all.length
      results.set(system.id, mean)
      const base = system.id === "e" ? results.get("h") : system.id === "g" ? undefined : results.get("g")
      const ratio = base === undefined ? "" : `  ${(base / mean).toFixed(2)}x (${system.id === "e" ? "h" : "g"})`
      const spread = all.length > 1 ? ` (${all.map((n) => `${Math.round(n / 1000)}k`).join(", ")})` : ""
      console.log(`(${system.id}) ${system.name}: ${Math.round(mean / 1000)}k${spread}${ratio}`)
    }
  } finally {
    ClickHouse.stop()
  }
}

await main()
