import { type ChildProcess, spawn } from "node:child_process"
import * as Net from "node:net"
import * as Path from "node:path"

export const root = Path.resolve(import.meta.dirname, "../..")

export interface Running {
  readonly child: ChildProcess
  readonly exited: Promise<number | null>
  readonly output: () => string
  /** Resolves once the output has a line matching `pattern`; rejects if the process exits first. */
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<string>
}

/** A command with the output collected, as users run it (`node dist/main.js`, `npm start`, ...). */
export const run = (command: string, args: ReadonlyArray<string>, env: Record<string, string>, cwd = root): Running => {
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
  let output = ""
  child.stdout!.on("data", (d) => (output += d))
  child.stderr!.on("data", (d) => (output += d))
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  const waitFor = (pattern: RegExp, timeoutMs = 60_000) =>
    new Promise<string>((resolve, reject) => {
      const started = Date.now()
      const poll = setInterval(() => {
        const line = output.split("\n").find((l) => pattern.test(l))
        const failed = child.exitCode !== null || Date.now() - started > timeoutMs
        if (line !== undefined || failed) clearInterval(poll)
        if (line !== undefined) resolve(line)
        else if (failed) reject(new Error(`no line matching ${pattern}; output:\n${output}`))
      }, 20)
    })
  return { child, exited, output: () => output, waitFor }
}

/** The built service (`dist/main.js`, built by the global setup). */
export const startService = (env: Record<string, string>) =>
  run(process.execPath, ["dist/main.js"], { HOST: "127.0.0.1", ...env })

export const freePort = () =>
  new Promise<number>((resolve) => {
    const server = Net.createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as Net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** Whether something accepts connections on the port. */
export const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = Net.connect(port, "127.0.0.1")
    socket.on("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.on("error", () => resolve(false))
  })

/** Output lines, blank ones left out. */
export const linesOf = (text: string) => text.split("\n").filter((line) => line.trim() !== "")

/** Polls `check` (a throw or rejection counts as not yet) until it holds, or fails naming `what` after `timeoutMs`. */
export const until = async (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000, everyMs = 50) => {
  const started = Date.now()
  while (!(await Promise.resolve().then(check).catch(() => false))) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}
