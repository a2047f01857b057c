import { spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import { demoRows } from "../../src/Domain/Metrics.ts"

/** Resets the peak RSS (VmHWM) of a process; false where /proc does not allow it. */
export const resetPeakRss = (pid: number): boolean => {
  try {
    Fs.writeFileSync(`/proc/${pid}/clear_refs`, "5")
    return true
  } catch {
    return false
  }
}

const statusMb = (pid: number, field: "VmHWM" | "VmRSS"): number | null => {
  try {
    const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(Fs.readFileSync(`/proc/${pid}/status`, "utf8"))
    return match ? Math.round(Number(match[1]) / 1024) : null
  } catch {
    return null
  }
}

/** Peak RSS in MB since the last reset, from /proc/<pid>/status. */
export const peakRssMb = (pid: number): number | null => statusMb(pid, "VmHWM")

/** RSS in MB now, from /proc/<pid>/status. */
export const rssMb = (pid: number): number | null => statusMb(pid, "VmRSS")

/** The six demo rows (total 458) as an SQL VALUES list. */
export const demoValues = demoRows.map((row) => `('${row.ts}', '${row.metric_name}', ${row.value})`).join(", ")

/** A loopback port nobody listens on at the moment of asking. */
export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = Net.createServer()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as Net.AddressInfo
      server.close(() => resolve(address.port))
    })
  })

const onPath = (command: string) => spawnSync("sh", ["-c", `command -v ${command}`]).status === 0

/** Installs Debian's package `command` (wrk, valgrind) with apt-get when it is missing and this is root; otherwise fails with one line. */
export const ensureDebianCommand = (command: string, log: (line: string) => void) => {
  if (onPath(command)) return
  if (process.getuid?.() !== 0 || !onPath("apt-get")) {
    throw new Error(`${command} is not installed: run 'apt-get install -y ${command}' (as root) and try again`)
  }
  log(`installing ${command}: apt-get install -y ${command}`)
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" }
  const install = () => spawnSync("apt-get", ["install", "-y", "-qq", command], { stdio: ["ignore", "ignore", "inherit"], env })
  if (install().status !== 0) {
    spawnSync("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"], env })
    install()
  }
  if (!onPath(command)) throw new Error(`${command} is not installed and 'apt-get install -y ${command}' did not install it`)
}
