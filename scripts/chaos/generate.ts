/**
 * Hostile HTTP/1.x requests from a seeded PRNG, as raw bytes: odd methods, traversal and broken percent-encoding
 * in paths, SQL-looking query strings, bad/huge/duplicated headers, oversized, malformed or non-UTF-8 bodies,
 * and bytes that are not HTTP at all.
 */
type Random = () => number

const pick = <A>(random: Random, items: ReadonlyArray<A>): A => items[Math.floor(random() * items.length)] as A
const chance = (random: Random, p: number) => random() < p
const int = (random: Random, min: number, max: number) => min + Math.floor(random() * (max - min + 1))
const chars = (random: Random, alphabet: string, n: number) =>
  Array.from({ length: n }, () => alphabet[Math.floor(random() * alphabet.length)]).join("")

const token = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
const printable = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join("")
const randomBytes = (random: Random, n: number) => Buffer.from(Array.from({ length: n }, () => int(random, 0, 255)))

const methods = [
  "GET", "GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
  "PROPFIND", "MKCOL", "PURGE", "SEARCH", "QUERY", "M-SEARCH", "LINK", "get", "GeT", "FOO", "G E T", "GET\t",
  "", "\0GET", "ÄÖÜ"
]

const paths = [
  "/api/metrics", "/api/metrics", "/api/metrics", "/healthz", "/readyz", "/", "/api", "/api/metrics/",
  "/API/METRICS", "//api//metrics", "/api/./metrics", "/api/../api/metrics", "/../../../../etc/passwd",
  "/api/metrics/..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd", "/..%5c..%5cwindows%5cwin.ini",
  "/api/metrics%00", "/api/metrics%00.json", "/%00", "/%", "/%zz", "/api/%E0%A4%A", "/%ff%fe%fd", "/%C0%AE%C0%AE/",
  "*", "http://evil.example/api/metrics", "HTTP://127.0.0.1/api/metrics", "api/metrics", "",
  "/api/metrics;DROP TABLE analytics.metrics", "/api/metrics' OR '1'='1", "/api/metrics%27%3B%20DROP%20TABLE%20x--",
  "/api/metrics/../../../../proc/self/environ", "/api/metrics#fragment", "/api/metrics\\..\\..\\", "/\u00e9\u4e2d\u{1F4A5}", "/api/metrics\u00ff\u00fe", "/\u00c3\u0028"
]

const queries = [
  "", "", "", "?", "?total=1", "?total=1&total=2", "?a[b][c]=1", "?%", "?%zz=%zz", "?x=%00", "?q=%E0%A4%A",
  "?table=system.users", "?q=1%27%20UNION%20SELECT%20*%20FROM%20system.users--", "?format=JSON&query=DROP+TABLE+x",
  "?metric=page_views';--", "?__proto__[polluted]=1", "?constructor[prototype][x]=1", "?=&=&&&", "?a=" + "%".repeat(50)
]

const versions = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1 x", "", "http/1.1", "HTTP/1"]

const oddHeaders: ReadonlyArray<(random: Random) => string> = [
  (r) => `X-Request-Id: ${pick(r, ["ok-id-1", "", "'; DROP TABLE x;--", "a".repeat(500), "\u00ff\u00fe", "../../x"])}`,
  (r) => `Content-Type: ${pick(r, ["application/json", "text/plain", "multipart/form-data; boundary=", "x/y; charset=utf-9", "\u00e9"])}`,
  (r) => `Accept: ${pick(r, ["*/*", "application/json", "text/html;q=0.x", "", "a".repeat(2000)])}`,
  (r) => `Accept-Encoding: ${pick(r, ["gzip", "br, zstd", "identity;q=0", "*;q=0", "x".repeat(300)])}`,
  (r) => `Connection: ${pick(r, ["close", "keep-alive", "upgrade", "Upgrade, HTTP2-Settings", "x"])}`,
  (r) => `Upgrade: ${pick(r, ["websocket", "h2c", "TLS/1.0", ""])}`,
  (r) => `Expect: ${pick(r, ["100-continue", "200-ok", ""])}`,
  (r) => `Range: bytes=${pick(r, ["0-1", "-5", "99999999999999999999-", "a-b"])}`,
  (r) => `Cookie: ${chars(r, printable, int(r, 0, 4000))}`,
  (r) => `X-Huge: ${"h".repeat(pick(r, [8_000, 15_000, 17_000, 40_000]))}`,
  (r) => `${chars(r, token, int(r, 1, 40))}: ${chars(r, printable, int(r, 0, 200))}`,
  (r) => `${pick(r, ["Bad Name", "Bad:Name", "Ä", "", "X-\0"])}: value`,
  () => "X-Ctl: a\0b\x07c",
  (r) => `X-Fold: a\r\n ${chars(r, token, 5)}`,
  (r) => `Host: ${pick(r, ["", "evil.example", "127.0.0.1:1", "a".repeat(300), "[::1", "x y"])}`,
  (r) => `Content-Length: ${pick(r, ["-1", "abc", "1, 2", "99999999999999999999", "0x10", " 3 "])}`,
  () => "Transfer-Encoding: chunked",
  (r) => `Transfer-Encoding: ${pick(r, ["gzip, chunked", "chunked, identity", "xchunked", "chunked\0"])}`,
  (r) => `X-Forwarded-For: ${pick(r, ["127.0.0.1", "1.2.3.4, ' OR 1=1", "::ffff:1.1.1.1".repeat(20)])}`,
  (r) => `Authorization: ${pick(r, ["Basic Zm9vOmJhcg==", "Bearer " + "x".repeat(3000), "Basic %%%"])}`
]

type Body = { readonly bytes: Buffer; readonly framing: "length" | "chunked" | "wrong-length" | "none" }

const bodies: ReadonlyArray<(random: Random) => Body> = [
  () => ({ bytes: Buffer.from('{"total": 1}'), framing: "length" }),
  () => ({ bytes: Buffer.from('{"total": '), framing: "length" }),
  (r) => ({ bytes: randomBytes(r, int(r, 1, 2000)), framing: "length" }),
  () => ({ bytes: Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x28, 0x8c, 0xbc, 0xff]), framing: "length" }),
  (r) => ({ bytes: Buffer.alloc(pick(r, [100_000, 1_000_000, 3_000_000]), "A"), framing: "length" }),
  (r) => ({ bytes: randomBytes(r, int(r, 1, 500)), framing: "chunked" }),
  (r) => ({ bytes: Buffer.from(pick(r, ["zz\r\nabc\r\n0\r\n\r\n", "5\r\nab\r\n0\r\n\r\n", "ffffffffffffffff\r\nx\r\n"])), framing: "none" }),
  () => ({ bytes: Buffer.from("SELECT * FROM system.users; DROP TABLE analytics.metrics"), framing: "length" }),
  (r) => ({ bytes: Buffer.from("short"), framing: pick(r, ["wrong-length", "none"]) })
]

export interface HostileRequest {
  readonly kind: string
  readonly method: string
  readonly bytes: Buffer
}

/** One request; the kind names what is hostile about it. */
export const generate = (random: Random): HostileRequest => {
  const kind = pick(random, ["method", "path", "query", "headers", "huge", "body", "mixed", "garbage"])
  let method = "GET"
  let path = "/api/metrics"
  let query = ""
  let version = "HTTP/1.1"
  const headers = ["Host: 127.0.0.1"]
  let body: Body | undefined
  let eol = "\r\n"
  const some = (p: number) => kind === "mixed" ? chance(random, p) : false
  if (kind === "garbage") {
    const bytes = chance(random, 0.5)
      ? randomBytes(random, int(random, 1, 3000))
      : Buffer.from(pick(random, ["\r\n\r\n", "GET\r\n\r\n", "GET /\r\n\r\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "\x16\x03\x01\x02\x00\x01"]))
    return { kind, method: "?", bytes }
  }
  if (kind === "method" || some(0.3)) method = chance(random, 0.8) ? pick(random, methods) : chars(random, token, int(random, 1, 30))
  if (kind === "path" || some(0.5)) {
    path = pick(random, paths)
    if (chance(random, 0.15)) path = "/" + chars(random, printable.replace(/[ ?#]/g, ""), int(random, 1, 200))
  }
  if (kind === "huge") {
    const n = pick(random, [2_000, 8_000, 16_000, 20_000, 100_000])
    if (chance(random, 0.5)) path = `/${"a".repeat(n)}`
    else if (chance(random, 0.5)) path = `/api/metrics/${"../".repeat(n / 3)}`
    else headers.push(...Array.from({ length: Math.floor(n / 40) }, (_, i) => `X-Many-${i}: ${"v".repeat(20)}`))
  }
  if (kind === "query" || some(0.5)) {
    query = chance(random, 0.7)
      ? pick(random, queries)
      : "?" + Array.from({ length: int(random, 1, 20) }, () =>
        `${chars(random, token, int(random, 0, 10))}=${chars(random, printable.replace(/[ #]/g, ""), int(random, 0, 50))}`
      ).join("&")
  }
  if (kind === "headers" || some(0.5)) {
    for (let i = int(random, 1, 4); i > 0; i--) headers.push(pick(random, oddHeaders)(random))
    if (chance(random, 0.1)) headers.shift()
    if (chance(random, 0.1)) version = pick(random, versions)
    if (chance(random, 0.05)) eol = pick(random, ["\n", "\r"])
  }
  if (kind === "body" || some(0.3)) body = pick(random, bodies)(random)
  const head = [`${method} ${path}${query} ${version}`.trimEnd(), ...headers]
  let payload: Buffer = Buffer.alloc(0)
  if (body !== undefined) {
    if (body.framing === "length") head.push(`Content-Length: ${body.bytes.length}`)
    if (body.framing === "wrong-length") head.push(`Content-Length: ${body.bytes.length + 10}`)
    if (body.framing === "chunked") head.push("Transfer-Encoding: chunked")
    payload = body.framing === "chunked"
      ? Buffer.concat([Buffer.from(`${body.bytes.length.toString(16)}\r\n`), body.bytes, Buffer.from("\r\n0\r\n\r\n")])
      : body.bytes
  }
  // latin1 turns "\u00ff" into the single byte 0xff: request lines and headers that are not UTF-8
  const encoding = (kind === "path" || kind === "headers") && chance(random, 0.2) ? "latin1" : "utf8"
  const bytes = Buffer.concat([Buffer.from(head.join(eol) + eol + eol, encoding), payload])
  return { kind, method, bytes }
}
