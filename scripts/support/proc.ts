import * as Fs from "node:fs"
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
