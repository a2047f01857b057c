import { describe, expect, it } from "@effect/vitest"
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs"
import * as Net from "node:net"
import { spawnSync } from "node:child_process"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { freePort, linesOf, listening, root, run, startService } from "./support/process.ts"

/** Every variable in the README's configuration table. */
const documented = [...readFileSync(Path.join(root, "README.md"), "utf8").matchAll(/^\| `([A-Z_]+)`(?: \/ `([A-Z_]+)`)? \|/gm)]
  .flatMap((match) => [match[1]!, match[2]].filter((name) => name !== undefined))

/** Any text is a valid value of these. */
const freeForm = ["CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD", "OTEL_RESOURCE_ATTRIBUTES"]

const badValues: Record<string, string> = {
  PORT: "70000",
  WORKERS: "0",
  HOST: "no-such-host.invalid",
  CLICKHOUSE_URL: "ftp://nope",
  CLICKHOUSE_DATABASE: "analytics; DROP TABLE x",
  CLICKHOUSE_TABLE: "metrics x",
  CLICKHOUSE_POOL_SIZE: "many",
  CLICKHOUSE_POOL_WAIT_MS: "0",
  CLICKHOUSE_POOL_MAX_WAITING: "-1",
  CLICKHOUSE_QUERY_TIMEOUT_MS: "5",
  CLICKHOUSE_HEDGE_AFTER_MS: "soon",
  CLICKHOUSE_IDLE_SOCKET_TTL_MS: "1",
  COALESCE_READS: "maybe",
  CACHE_TTL_MS: "-1",
  REQUEST_TIMEOUT_MS: "1",
  API_KEYS: "short",
  MAX_BODY_BYTES: "lots",
  SHUTDOWN_GRACE_MS: "-5",
  HEAP_GROWING_PERCENT: "lots",
  LISTEN_BACKLOG: "0",
  SERIES_MAX_POINTS: "0",
  SERIES_MAX_SERIES: "lots",
  LOG_LEVEL: "loud",
  LOG_FORMAT: "xml",
  METRICS_PORT: "70000",
  METRICS_PUBLIC: "maybe",
  OTEL_EXPORTER_OTLP_ENDPOINT: "ftp://collector",
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "not a url",
  OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
  OTEL_EXPORTER_OTLP_HEADERS: "no-equals-sign",
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: "=x",
  OTEL_SERVICE_NAME: " ",
  OTEL_TRACES_SAMPLER: "sometimes",
  OTEL_TRACES_SAMPLER_ARG: "2",
  OTEL_BSP_SCHEDULE_DELAY: "soon",
  OTEL_TRACES_EXPORTER: "jaeger",
  OTEL_SDK_DISABLED: "maybe"
}

/** Runs the built service to its end and returns its exit code and non-blank output lines. */
const startAndFail = async (env: Record<string, string>, command = process.execPath, args = ["dist/main.js"], cwd = root) => {
  const port = String(await freePort())
  const service = run(command, args, { CLICKHOUSE_URL: "embedded:/nonexistent/never-created", PORT: port, ...env }, cwd)
  const timer = setTimeout(() => service.child.kill("SIGKILL"), 30_000)
  const code = await service.exited
  clearTimeout(timer)
  return { code, lines: linesOf(service.output()) }
}

describe("startup failures: one line that names the problem, and a non-zero exit", () => {
  it("every documented setting has a bad value below", () => {
    expect(documented.length).toBeGreaterThan(15)
    expect(documented.filter((name) => !freeForm.includes(name)).sort()).toEqual(Object.keys(badValues).sort())
  })

  it.concurrent.each(Object.entries(badValues))("%s=%s", async (name, value) => {
    const { code, lines } = await startAndFail({ [name]: value })
    expect(code).not.toBe(0)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain(name)
    expect(lines[0]).not.toMatch(/\bat \S+:\d+/)
  })

  it("a port in use", async () => {
    const port = await freePort()
    const holder = Net.createServer().listen(port)
    await new Promise((resolve) => holder.once("listening", resolve))
    try {
      const { code, lines } = await startAndFail({ PORT: String(port), HOST: "" })
      expect(code).not.toBe(0)
      expect(lines).toEqual([expect.stringContaining(`PORT ${port} is in use`)])
    } finally {
      holder.close()
    }
  })

  it("the embedded engine chosen without the optional chdb package installed", async () => {
    // The built service beside a node_modules that has everything but chdb.
    const dir = mkdtempSync(Path.join(tmpdir(), "analytics-api-no-chdb-"))
    try {
      cpSync(Path.join(root, "dist"), Path.join(dir, "dist"), { recursive: true })
      cpSync(Path.join(root, "package.json"), Path.join(dir, "package.json"))
      mkdirSync(Path.join(dir, "node_modules"))
      for (const entry of readdirSync(Path.join(root, "node_modules"))) {
        if (entry !== "chdb" && entry !== ".bin") symlinkSync(Path.join(root, "node_modules", entry), Path.join(dir, "node_modules", entry))
      }
      const { code, lines } = await startAndFail({ CLICKHOUSE_URL: `embedded:${Path.join(dir, "data")}` }, process.execPath, ["dist/main.js"], dir)
      expect(code).not.toBe(0)
      expect(lines).toEqual([expect.stringContaining("needs the optional package chdb, which is not installed: run `npm install chdb`")])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe("npm start and npm run start:prod", () => {
  it.each(["start", "start:prod"])("npm run %s: SIGTERM stops npm and the service, and frees the port", async (script) => {
    const port = await freePort()
    const data = mkdtempSync(Path.join(tmpdir(), "analytics-api-start-"))
    const npm = run("npm", ["run", script], { PORT: String(port), HOST: "127.0.0.1", CLICKHOUSE_URL: `embedded:${data}` })
    try {
      await npm.waitFor(/Listening on/)
      const answer = await fetch(`http://127.0.0.1:${port}/api/metrics`).then((r) => r.json())
      expect(answer).toEqual({ total: 458 })
      npm.child.kill("SIGTERM")
      await npm.exited
      // The service is not left behind holding the port.
      let stillListening = true
      for (let i = 0; i < 100 && stillListening; i++) {
        stillListening = await listening(port)
        if (stillListening) await new Promise((r) => setTimeout(r, 50))
      }
      expect(stillListening).toBe(false)
    } finally {
      npm.child.kill("SIGKILL")
      rmSync(data, { recursive: true, force: true })
    }
  }, 60_000)
})

describe("the built service", () => {
  it("logs one line per failed request, with its request id, when ClickHouse is unreachable", async () => {
    const port = await freePort()
    const dead = await freePort()
    const service = startService({ PORT: String(port), CLICKHOUSE_URL: `http://127.0.0.1:${dead}` })
    try {
      await service.waitFor(/Listening on/)
      const before = linesOf(service.output()).length
      for (const id of ["req-one", "req-two"]) {
        const response = await fetch(`http://127.0.0.1:${port}/api/metrics`, { headers: { "x-request-id": id } })
        expect(response.status).toBe(503)
      }
      await new Promise((r) => setTimeout(r, 200))
      const lines = linesOf(service.output()).slice(before)
      const failures = lines.filter((line) => line.includes("request failed"))
      expect(failures).toHaveLength(2)
      expect(failures[0]).toMatch(/level=ERROR .*message="request failed: unavailable".*reason=.*ECONNREFUSED.*requestId=req-one/)
      expect(failures[1]).toContain("requestId=req-two")
      expect(service.output()).not.toMatch(/\bat \S+:\d+/)
    } finally {
      service.child.kill("SIGKILL")
    }
  })

  it("LOG_LEVEL=warning: warnings and errors are logged, info lines (a request's line among them) are not", async () => {
    const port = await freePort()
    const dead = await freePort()
    const service = startService({ PORT: String(port), CLICKHOUSE_URL: `http://127.0.0.1:${dead}`, LOG_LEVEL: "warning" })
    try {
      await service.waitFor(/not reachable yet/)
      let health = 0
      for (let i = 0; i < 50 && health !== 200; i++) {
        health = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status, () => 0)
        if (health !== 200) await new Promise((r) => setTimeout(r, 100))
      }
      expect(health).toBe(200)
      const response = await fetch(`http://127.0.0.1:${port}/api/metrics`, { headers: { "x-request-id": "req-warn" } })
      expect(response.status).toBe(503)
      await new Promise((r) => setTimeout(r, 200))
      const lines = linesOf(service.output())
      expect(lines.some((line) => /level=WARN .*not reachable yet/.test(line))).toBe(true)
      expect(lines.some((line) => /level=ERROR .*request failed: unavailable.*requestId=req-warn/.test(line))).toBe(true)
      expect(lines.filter((line) => line.includes("level=INFO"))).toEqual([])
    } finally {
      service.child.kill("SIGKILL")
    }
  })
})

describe("the listening socket", () => {
  /** The backlog of the socket listening on `port`, as the kernel holds it (`ss`: Send-Q of a listener). */
  const backlogOf = (port: number) => {
    const ss = spawnSync("ss", ["-Hltn", `sport = :${port}`], { encoding: "utf8" })
    expect(ss.error, "ss (iproute2) is needed to read a socket's backlog").toBeUndefined()
    const fields = ss.stdout.trim().split(/\s+/)
    expect(fields[0]).toBe("LISTEN")
    return Number(fields[2])
  }
  const somaxconn = Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8"))

  it.each([[undefined, 4096], ["1000", 1000]])(
    "LISTEN_BACKLOG=%s: the kernel holds min(%i, somaxconn) connections, not Node's 511",
    async (value, expected) => {
      const port = await freePort()
      const dead = await freePort()
      const backlog = value === undefined ? {} : { LISTEN_BACKLOG: value }
      const service = startService({ PORT: String(port), CLICKHOUSE_URL: `http://127.0.0.1:${dead}`, ...backlog })
      try {
        await service.waitFor(/Listening on/)
        expect(backlogOf(port)).toBe(Math.min(expected, somaxconn))
        expect(Math.min(expected, somaxconn)).toBeGreaterThan(511)
      } finally {
        service.child.kill("SIGKILL")
      }
    }
  )
})

describe("the port is taken first", () => {
  it("a request that arrives while ClickHouse is still being reached gets a JSON 503, not a hang", async () => {
    // A ClickHouse that accepts connections and never answers: startup waits on it for the 1 s ping.
    const blackhole = Net.createServer(() => undefined).listen(0, "127.0.0.1")
    await new Promise((resolve) => blackhole.once("listening", resolve))
    const port = await freePort()
    const service = startService({ PORT: String(port), CLICKHOUSE_URL: `http://127.0.0.1:${(blackhole.address() as Net.AddressInfo).port}` })
    try {
      let early: Response | undefined
      while (early === undefined && !/Listening on/.test(service.output())) {
        early = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined)
        if (early === undefined) await new Promise((r) => setTimeout(r, 20))
      }
      expect(early?.status).toBe(503)
      expect(early?.headers.get("retry-after")).toBe("1")
      expect(await early?.json()).toEqual({ error: { code: "unavailable", message: "The service is starting or stopping." } })
      await service.waitFor(/Listening on/)
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200)
    } finally {
      service.child.kill("SIGKILL")
      blackhole.close()
    }
  })
})
