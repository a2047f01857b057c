/**
 * The Prometheus exposition as written from Effect's registry: families, escaping, histograms. Each test registers
 * metrics of its own (the registry is the process's) and reads only their lines; promtool checks the whole text.
 */
import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { promisify } from "node:util"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"
import { describe, expect, it } from "vitest"
import { expose } from "../src/Observability/Prometheus.ts"

const promtool = "/usr/bin/promtool"

const text = () => expose({ serviceName: "exposition-test", serviceVersion: "1.2.3" })

const linesOf = (exposition: string, name: string) =>
  exposition.split("\n").filter((line) => line.startsWith(name) || line.startsWith(`# HELP ${name}`) || line.startsWith(`# TYPE ${name}`))

const check = async (exposition: string) => {
  if (!existsSync(promtool)) return
  const checked = promisify(execFile)(promtool, ["check", "metrics"], { encoding: "utf8" })
  checked.child.stdin!.end(exposition)
  const { stdout, stderr } = await checked
  expect(stdout + stderr).toBe("")
}

describe("the Prometheus exposition", () => {
  it("escapes hostile label values and help text, and gives a family one header for all its label sets", async () => {
    const counter = Metric.counter("exposition_hostile_total", { description: "a \\ backslash\nand a newline", incremental: true })
    counter.unsafeUpdate(2, [MetricLabel.make("who", "a \"quoted\" \\ value\nacross lines")])
    counter.unsafeUpdate(1, [MetricLabel.make("who", "plain")])
    const exposition = text()
    expect(linesOf(exposition, "exposition_hostile_total")).toEqual([
      "# HELP exposition_hostile_total a \\\\ backslash\\nand a newline",
      "# TYPE exposition_hostile_total counter",
      "exposition_hostile_total{who=\"a \\\"quoted\\\" \\\\ value\\nacross lines\"} 2",
      "exposition_hostile_total{who=\"plain\"} 1"
    ])
    expect(exposition).toContain("target_info{service_name=\"exposition-test\",service_version=\"1.2.3\"} 1")
    await check(exposition)
  })

  it("writes a histogram's buckets cumulative and ascending, +Inf last and equal to the count, then sum and count", async () => {
    const histogram = Metric.histogram("exposition_wait_seconds", MetricBoundaries.fromIterable([0.1, 1]), "waits")
    for (const seconds of [0.05, 0.5, 0.7, 3]) histogram.unsafeUpdate(seconds, [MetricLabel.make("kind", "x")])
    const exposition = text()
    expect(linesOf(exposition, "exposition_wait_seconds")).toEqual([
      "# HELP exposition_wait_seconds waits",
      "# TYPE exposition_wait_seconds histogram",
      "exposition_wait_seconds_bucket{kind=\"x\",le=\"0.1\"} 1",
      "exposition_wait_seconds_bucket{kind=\"x\",le=\"1\"} 3",
      "exposition_wait_seconds_bucket{kind=\"x\",le=\"+Inf\"} 4",
      "exposition_wait_seconds_sum{kind=\"x\"} 4.25",
      "exposition_wait_seconds_count{kind=\"x\"} 4"
    ])
    await check(exposition)
  })

  it("names a counter that only goes up `_total`, writes one that may go down as a gauge, mends names Prometheus refuses, and leaves Effect's own out", async () => {
    Metric.counter("exposition_ups", { incremental: true }).unsafeUpdate(3, [])
    Metric.counter("exposition_level").unsafeUpdate(-2, [])
    Metric.gauge("exposition_ratio").unsafeUpdate(0.25, [])
    Metric.counter("effect_exposition_internal").unsafeUpdate(1, [])
    Metric.gauge("exposition odd-name").unsafeUpdate(1, [MetricLabel.make("odd:key-1", "v")])
    const exposition = text()
    expect(linesOf(exposition, "exposition_ups")).toEqual([
      "# HELP exposition_ups_total exposition_ups_total",
      "# TYPE exposition_ups_total counter",
      "exposition_ups_total 3"
    ])
    expect(linesOf(exposition, "exposition_level")).toEqual([
      "# HELP exposition_level exposition_level",
      "# TYPE exposition_level gauge",
      "exposition_level -2"
    ])
    expect(exposition).toContain("\nexposition_ratio 0.25\n")
    expect(exposition).not.toContain("effect_exposition_internal")
    expect(exposition).toContain("\nexposition_odd_name{odd_key_1=\"v\"} 1\n")
    await check(exposition)
  })
})
