/**
 * The package as a consumer gets it: `npm pack`, installed into a new app with its own effect/@effect/*
 * versions (one patch away from ours), the README's embedding snippet run with plain node and type-checked.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as Path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, listening, root, run } from "./support/process.ts"

const ours = JSON.parse(readFileSync(Path.join(root, "package.json"), "utf8")) as {
  readonly devDependencies: Record<string, string>
  readonly peerDependencies: Record<string, string>
}

/** Our version of a framework package with its patch number one lower. */
const neighbour = (name: string) => {
  const [major, minor, patch] = ours.devDependencies[name]!.split(".").map(Number) as [number, number, number]
  return `${major}.${minor}.${patch - 1}`
}

const frameworks = ["effect", "@effect/platform", "@effect/platform-node", "@effect/opentelemetry"]

/** The fenced block after the README's `embedding-snippet` marker. */
const snippet = () => {
  const readme = readFileSync(Path.join(root, "README.md"), "utf8")
  const match = /<!-- embedding-snippet[^>]*-->\s*```ts\n([\s\S]*?)```/.exec(readme)
  if (match === null) throw new Error("the README has no embedding snippet")
  return match[1]!
}

const npm = (args: ReadonlyArray<string>, cwd: string) =>
  execFileSync("npm", [...args, "--no-audit", "--no-fund"], { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 240_000 })

/** Every installed copy of a package, however deep. */
const copiesOf = (dir: string, name: string): Array<string> => {
  const found: Array<string> = []
  const walk = (modules: string) => {
    for (const entry of readdirSync(modules)) {
      if (entry.startsWith(".")) continue
      const path = Path.join(modules, entry)
      if (entry.startsWith("@")) {
        for (const scoped of readdirSync(path)) visit(Path.join(path, scoped), `${entry}/${scoped}`)
      } else {
        visit(path, entry)
      }
    }
  }
  const visit = (path: string, packageName: string) => {
    if (packageName === name) found.push(path)
    const nested = Path.join(path, "node_modules")
    if (statSync(nested, { throwIfNoEntry: false })?.isDirectory()) walk(nested)
  }
  walk(Path.join(dir, "node_modules"))
  return found
}

describe("the packed package in a new consumer app", () => {
  const dir = mkdtempSync(Path.join(tmpdir(), "analytics-api-consumer-"))
  let tarball = ""

  beforeAll(() => {
    const [packed] = JSON.parse(npm(["pack", "--json", "--pack-destination", dir], root)) as Array<{ filename: string }>
    tarball = Path.join(dir, packed!.filename)
    const dependencies: Record<string, string> = { "analytics-api": `file:./${packed!.filename}` }
    for (const name of frameworks) dependencies[name] = neighbour(name)
    writeFileSync(
      Path.join(dir, "package.json"),
      JSON.stringify({
        name: "consumer",
        private: true,
        type: "module",
        dependencies,
        devDependencies: {
          typescript: ours.devDependencies["typescript"],
          "@types/node": ours.devDependencies["@types/node"],
          // @effect/platform-node-shared's declarations import ws: any app that checks its libraries needs this.
          "@types/ws": "^8.5.0"
        }
      })
    )
    writeFileSync(
      Path.join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noEmit: true,
          types: ["node"],
          // The package's own declarations are checked too.
          skipLibCheck: false
        },
        include: ["main.ts"]
      })
    )
    writeFileSync(Path.join(dir, "main.mjs"), snippet())
    writeFileSync(Path.join(dir, "main.ts"), snippet())
    npm(["install"], dir)
  }, 300_000)

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true })
  })

  it("ships only the compiled package: no sources, tests, docs or build files", () => {
    const files = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).trim().split("\n").map((f) => f.replace(/^package\//, ""))
    expect(files).toContain("dist/index.js")
    expect(files).toContain("dist/index.d.ts")
    expect(files).toContain("dist/index.js.map")
    expect(files).toContain("package.json")
    expect(files.filter((f) => !/^dist\/.*\.(js|d\.ts|js\.map)$/.test(f) && !/^(package\.json|README\.md)$/.test(f))).toEqual([])
  })

  it("has exactly one copy of effect and of each @effect package: the consumer's", () => {
    for (const name of frameworks) {
      const copies = copiesOf(dir, name)
      expect(copies, name).toHaveLength(1)
      const installed = JSON.parse(readFileSync(Path.join(copies[0]!, "package.json"), "utf8")) as { version: string }
      expect(installed.version, name).toBe(neighbour(name))
    }
  })

  it("type-checks with tsc --noEmit (NodeNext, strict), the package's declarations included", () => {
    const tsc = Path.join(dir, "node_modules", "typescript", "bin", "tsc")
    const result = (() => {
      try {
        return execFileSync(process.execPath, [tsc, "--noEmit", "-p", "."], { cwd: dir, encoding: "utf8" })
      } catch (error) {
        return String((error as { stdout?: string }).stdout ?? error)
      }
    })()
    expect(result).toBe("")
  }, 120_000)

  it("runs the README's snippet with plain node: the demo total, a JSON 404 under the prefix, a clean SIGTERM", async () => {
    const port = await freePort()
    // As on a fresh machine: no ClickHouse anywhere, so the embedded engine with an empty directory. If this
    // machine has a server on the default port, the snippet is pointed at an embedded engine explicitly.
    const env: Record<string, string> = { PORT: String(port), NODE_OPTIONS: "" }
    if (await listening(8123)) env["CLICKHOUSE_URL"] = `embedded:${Path.join(dir, "data")}`
    const app = run(process.execPath, ["main.mjs"], env, dir)
    try {
      await app.waitFor(/Listening on/, 60_000)
      const base = `http://127.0.0.1:${port}`
      const total = await fetch(`${base}/analytics/api/metrics`)
      expect(total.status).toBe(200)
      expect(await total.json()).toEqual({ total: 458 })
      const unknown = await fetch(`${base}/analytics/no/such/path`)
      expect(unknown.status).toBe(404)
      expect(unknown.headers.get("content-type")).toMatch(/application\/json/)
      expect(unknown.headers.get("x-request-id")).toMatch(/\S/)
      expect(await unknown.json()).toEqual({ error: { code: "not_found", message: "No such endpoint." } })
      expect(await fetch(`${base}/`).then((r) => r.text())).toBe("the host app")
      app.child.kill("SIGTERM")
      expect(await app.exited).toBe(0)
      expect(app.output()).not.toMatch(/Executing an Effect versioned/)
    } finally {
      app.child.kill("SIGKILL")
    }
  }, 120_000)
})
