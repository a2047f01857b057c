/**
 * A fault-injecting proxy in front of ClickHouse, for chaos runs (see scripts/support/proxy.ts for the faults).
 *   tsx scripts/proxy.ts --target http://127.0.0.1:8123 [--port P] [--rate 0.2] [--mix reset=1,cut=1,...]
 *     [--latency-ms 200] [--jitter-ms 50] [--latency-on request|response|both] [--cut-fraction 0.5]
 *     [--seed 42] [--every 10]
 * Prints its URL, then one JSON line of counts every `--every` seconds (0: never) and on SIGINT/SIGTERM.
 */
import { parseArgs } from "node:util"
import { type Fault, faults, type ProxyOptions, startProxy } from "./support/proxy.ts"

const fail = (message: string): never => {
  process.stderr.write(`scripts/proxy: ${message}\n`)
  process.exit(2)
}

const { values } = parseArgs({
  options: {
    target: { type: "string" },
    port: { type: "string", default: "0" },
    rate: { type: "string", default: "0" },
    mix: { type: "string" },
    "latency-ms": { type: "string", default: "100" },
    "jitter-ms": { type: "string", default: "0" },
    "latency-on": { type: "string", default: "request" },
    "cut-fraction": { type: "string", default: "0.5" },
    seed: { type: "string", default: "42" },
    every: { type: "string", default: "10" }
  }
})

const number = (name: keyof typeof values, min: number, max: number): number => {
  const value = Number(values[name])
  return Number.isFinite(value) && value >= min && value <= max ? value : fail(`--${name} must be in [${min}, ${max}]`)
}

const isFault = (name: string): name is Fault => (faults as ReadonlyArray<string>).includes(name)

const parseMix = (text: string): Partial<Record<Fault, number>> =>
  Object.fromEntries(text.split(",").map((entry) => {
    const [name = "", weight = "1"] = entry.split("=")
    if (!isFault(name)) fail(`--mix: unknown fault "${name}" (known: ${faults.join(", ")})`)
    const value = Number(weight)
    return [name, Number.isFinite(value) && value >= 0 ? value : fail(`--mix: bad weight for ${name}`)]
  }))

const latencyOn = values["latency-on"]
if (latencyOn !== "request" && latencyOn !== "response" && latencyOn !== "both") {
  fail("--latency-on must be request, response or both")
}
const options: ProxyOptions = {
  port: number("port", 0, 65535),
  rate: number("rate", 0, 1),
  latencyMs: number("latency-ms", 0, 3_600_000),
  jitterMs: number("jitter-ms", 0, 3_600_000),
  latencyOn: latencyOn as "request" | "response" | "both",
  cutFraction: number("cut-fraction", 0, 1),
  seed: number("seed", -(2 ** 31), 2 ** 32),
  ...(values.mix !== undefined ? { mix: parseMix(values.mix) } : {})
}
const target = values.target ?? fail("--target is required, e.g. --target http://127.0.0.1:8123")

const proxy = await startProxy(target, options)
process.stdout.write(`${proxy.url}\n`)
const report = () => process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...proxy.stats() })}\n`)
const every = number("every", 0, 86_400)
if (every > 0) setInterval(report, every * 1000).unref()

const stop = () => {
  report()
  void proxy.close().then(() => process.exit(0))
}
process.once("SIGINT", stop).once("SIGTERM", stop)
