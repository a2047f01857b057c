import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Either, Option } from "effect"
import { spawnSync } from "node:child_process"
import * as Path from "node:path"
import { clickHouseConfig, serverConfig, tableConfig } from "../src/Config.ts"

const root = Path.resolve(import.meta.dirname, "..")

const withEnv = (env: Record<string, string>) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

describe("configuration", () => {
  it.effect("defaults match the original service", () =>
    Effect.gen(function*() {
      const server = yield* serverConfig
      expect(server.port).toBe(3000)
      expect(Option.isNone(server.host)).toBe(true)
      expect(server.heapGrowingPercent).toBe(75)
      expect(server.backlog).toBe(4096)
      const ch = yield* clickHouseConfig
      expect(ch.backend).toMatchObject({ _tag: "Auto" })
      expect(ch.backend._tag === "Auto" && ch.backend.url.href).toBe("http://localhost:8123/")
      expect(ch.poolSize).toBe(4)
      expect(Duration.toMillis(ch.queryTimeout)).toBe(30_000)
      expect(yield* tableConfig).toEqual({ database: "analytics", table: "metrics" })
    }).pipe(withEnv({})))

  it.effect("CLICKHOUSE_URL chooses the backend", () =>
    Effect.gen(function*() {
      const remote = yield* clickHouseConfig.pipe(withEnv({ CLICKHOUSE_URL: "https://ch.example:8443" }))
      expect(remote.backend._tag).toBe("Remote")
      const embedded = yield* clickHouseConfig.pipe(withEnv({ CLICKHOUSE_URL: "embedded:/tmp/x" }))
      expect(embedded.backend).toEqual({ _tag: "Embedded", path: "/tmp/x" })
      const bad = yield* Effect.either(clickHouseConfig.pipe(withEnv({ CLICKHOUSE_URL: "ftp://nope" })))
      expect(Either.isLeft(bad) && String(bad.left)).toMatch(/CLICKHOUSE_URL.*http\(s\):\/\/ URL, a comma-separated list/)
    }))

  it.effect("CLICKHOUSE_URL lists replicas, in order; a bad or repeated one stops startup", () =>
    Effect.gen(function*() {
      const list = yield* clickHouseConfig.pipe(withEnv({ CLICKHOUSE_URL: " http://a:8123 , https://u:p@b:8443/ " }))
      expect(list.backend._tag === "Remote" && list.backend.urls.map((url) => url.href))
        .toEqual(["http://a:8123/", "https://u:p@b:8443/"])
      const bad = yield* Effect.either(clickHouseConfig.pipe(withEnv({ CLICKHOUSE_URL: "http://a:8123,,http://b:8123" })))
      expect(Either.isLeft(bad) && String(bad.left)).toMatch(/CLICKHOUSE_URL.*comma-separated list/)
      const twice = yield* Effect.either(clickHouseConfig.pipe(withEnv({ CLICKHOUSE_URL: "http://a:8123,http://a:8123/x" })))
      expect(Either.isLeft(twice) && String(twice.left)).toMatch(/CLICKHOUSE_URL.*lists http:\/\/a:8123 twice/)
    }))

  it.effect.each([
    ["PORT", "99999", /PORT/],
    ["PORT", "abc", /PORT/],
    ["CLICKHOUSE_POOL_SIZE", "0", /CLICKHOUSE_POOL_SIZE.*from 1 to 1000/],
    ["CLICKHOUSE_POOL_WAIT_MS", "-5", /CLICKHOUSE_POOL_WAIT_MS/],
    ["CLICKHOUSE_TABLE", "metrics; DROP TABLE x", /CLICKHOUSE_TABLE.*plain identifier/]
  ] as const)("%s=%s is refused with the variable's name", ([name, value, message]) =>
    Effect.gen(function*() {
      const result = yield* Effect.either(
        Effect.all([serverConfig, clickHouseConfig, tableConfig]).pipe(withEnv({ [name]: value }))
      )
      expect(Either.isLeft(result) && String(result.left)).toMatch(message)
    }))
})

describe("startup with a bad setting", () => {
  const start = (env: Record<string, string>) =>
    spawnSync(process.execPath, ["--import", "tsx", "src/main.ts"], {
      cwd: root,
      env: { ...process.env, CLICKHOUSE_URL: "embedded:/nonexistent-never-created", ...env },
      encoding: "utf8",
      timeout: 30_000
    })

  it.each([
    ["PORT", "70000"],
    ["CLICKHOUSE_POOL_SIZE", "many"]
  ])("%s=%s stops the process with one line naming it", (name, value) => {
    const result = start({ [name]: value })
    expect(result.status).toBe(1)
    const lines = (result.stdout + result.stderr).trim().split("\n").filter((line) => line.trim() !== "")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(new RegExp(`Invalid configuration.*${name}`))
  })
})
