import type { HttpClient } from "@effect/platform"
import { expect } from "@effect/vitest"
import type { Vitest } from "@effect/vitest"
import { Effect, FastCheck, Schema } from "effect"
import { ClickHouse } from "../../src/ClickHouse/ClickHouse.ts"
import * as Sql from "../../src/ClickHouse/Sql.ts"
import type { TableConfig } from "../../src/Config.ts"
import { getJson } from "./layers.ts"
import { resetTo } from "./suites.ts"

/** Any well-formed text: quotes, backslashes, control characters, `\0`, any plane of Unicode. */
const textArb = FastCheck.oneof(
  FastCheck.string({ unit: "binary", maxLength: 40 }),
  FastCheck.string({ unit: FastCheck.constantFrom("'", "\\", "\0", "\n", "\r", "\t", "\b", "\u001f", "\u007f", "?", "{", "}", ":", "%", "é", "😀", "x"), maxLength: 20 })
).filter((s) => Buffer.from(s, "utf8").toString("utf8") === s)

const injections = [
  "x' OR '1'='1",
  "x\\' OR 1=1 --",
  "') OR 1=1 --",
  "x'); DROP TABLE t; --",
  "\\",
  "'",
  "{p0:String}",
  "page_views' OR metric_name != '",
  "page_views\u0000"
]

const Echo = Schema.Struct({ h: Schema.String, s: Schema.String, hs: Schema.Array(Schema.String) })

const hex = (s: string) => Buffer.from(s, "utf8").toString("hex").toUpperCase()

/** Values reach the server byte for byte, and never change which rows a query counts. */
export const sqlSuite = (it: Vitest.MethodsNonLive<ClickHouse | HttpClient.HttpClient, true>, table: TableConfig) => {
  it.effect.prop("any text round-trips through the server byte for byte, alone and in an array", [textArb, FastCheck.array(textArb, { maxLength: 4 })], ([text, list]) =>
    Effect.gen(function*() {
      const ch = yield* ClickHouse
      const [row] = yield* ch.select(
        Sql.sql`SELECT hex(${Sql.string(text)}) AS h, ${Sql.string(text)} AS s, arrayMap(x -> hex(x), ${Sql.strings([...list, text])}) AS hs`,
        Echo
      )
      expect(row!.h).toBe(hex(text))
      expect(row!.s).toBe(text)
      expect(row!.hs).toEqual([...list, text].map(hex))
    }), { fastCheck: { numRuns: 300 } })

  it.effect.prop("hostile metric names count exactly the rows with that name, never others", [
    FastCheck.oneof(FastCheck.constantFrom(...injections), textArb.filter((s) => s.length > 0 && [...s].length <= 256))
  ], ([name]) =>
    Effect.gen(function*() {
      yield* resetTo(table, [
        { ts: 1704067200, metric_name: "page_views", value: 100 },
        { ts: 1704067200, metric_name: "errors", value: 7 },
        { ts: 1704067200, metric_name: name, value: 1000 }
      ])
      const expected = name === "page_views" ? 1100 : name === "errors" ? 1007 : 1000
      const answer = yield* getJson(`/api/metrics?metric=${encodeURIComponent(name)}`)
      expect(answer.json).toEqual({ total: expected })
      const other = yield* getJson(`/api/metrics?metric=${encodeURIComponent(`${name}x`)}`)
      expect(other.json).toEqual({ total: 0 })
    }), { fastCheck: { numRuns: 60 } })
}
