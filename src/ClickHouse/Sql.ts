/**
 * SQL with values that never become SQL text unescaped. A statement is text with typed holes; it is
 * rendered either with server-side parameters (`{p0:String}` and `query_params`: the embedded engine, modern
 * servers) or, on servers without them (18.16), with each value as a literal written by `quote`, whose
 * correctness a property test checks against the real server byte for byte. Identifiers never come from
 * values: only from configuration and allow-lists, written into the text by the caller.
 */
export type Value =
  | { readonly type: "String"; readonly value: string }
  | { readonly type: "Array(String)"; readonly value: ReadonlyArray<string> }
  | { readonly type: "UInt32"; readonly value: number }

export interface Statement {
  readonly parts: ReadonlyArray<string | Value>
}

export const string = (value: string): Value => ({ type: "String", value })
export const strings = (value: ReadonlyArray<string>): Value => ({ type: "Array(String)", value })
export const uint32 = (value: number): Value => {
  if (!Number.isSafeInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`not a UInt32: ${value}`)
  return { type: "UInt32", value }
}

/** `sql\`SELECT ... WHERE name = ${Sql.string(name)}\``: literal text, and values only where marked. */
export const sql = (text: TemplateStringsArray, ...values: ReadonlyArray<Value | Statement>): Statement => {
  const parts: Array<string | Value> = []
  text.forEach((chunk, i) => {
    parts.push(chunk)
    const value = values[i]
    if (value === undefined) return
    if ("parts" in value) parts.push(...value.parts)
    else parts.push(value)
  })
  return { parts }
}

/** Joins statements with `separator` (`AND`, `, `). */
export const join = (statements: ReadonlyArray<Statement>, separator: string): Statement => ({
  parts: statements.flatMap((statement, i) => (i === 0 ? statement.parts : [separator, ...statement.parts]))
})

const hex = (code: number) => `\\x${code.toString(16).padStart(2, "0")}`

/**
 * A ClickHouse string literal: backslash and quote escaped, control bytes as `\xHH`; everything else,
 * any Unicode included, as it is (the query travels as UTF-8).
 */
export const quote = (value: string): string =>
  `'${value.replace(/[\\'\u0000-\u001f\u007f]/g, (c) => (c === "\\" ? "\\\\" : c === "'" ? "\\'" : hex(c.charCodeAt(0))))}'`

const literal = (value: Value): string =>
  value.type === "String"
    ? quote(value.value)
    : value.type === "UInt32"
    ? String(value.value)
    : `[${value.value.map(quote).join(", ")}]`

export interface Rendered {
  readonly sql: string
  readonly params: Readonly<Record<string, string | number | ReadonlyArray<string>>> | undefined
}

const renderedWith = new WeakMap<Statement, Rendered>()
const renderedWithout = new WeakMap<Statement, Rendered>()

/** The statement as text for a server with (`serverParams`) or without server-side parameters; once per statement. */
export const render = (statement: Statement, serverParams: boolean): Rendered => {
  const cache = serverParams ? renderedWith : renderedWithout
  let rendered = cache.get(statement)
  if (rendered === undefined) {
    rendered = renderNow(statement, serverParams)
    cache.set(statement, rendered)
  }
  return rendered
}

const renderNow = (statement: Statement, serverParams: boolean): Rendered => {
  let sqlText = ""
  const params: Record<string, string | number | ReadonlyArray<string>> = {}
  let n = 0
  for (const part of statement.parts) {
    if (typeof part === "string") {
      sqlText += part
    } else if (serverParams) {
      const name = `p${n++}`
      params[name] = part.value
      sqlText += `{${name}:${part.type}}`
    } else {
      sqlText += literal(part)
    }
  }
  return { sql: sqlText, params: n === 0 ? undefined : params }
}
