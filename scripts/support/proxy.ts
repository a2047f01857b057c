import * as Net from "node:net"

/**
 * A fault-injecting TCP proxy in front of a real ClickHouse server (HTTP/1.1, keep-alive).
 *
 * Faults, each decided once per event by a seeded PRNG (probability `rate * weight / sum of weights`)
 * or forced with `next(...)`:
 * - refuse (per connection): accept, then reset at once (RST), before contacting the server;
 * - latency (per request): wait `latencyMs` (+ up to `jitterMs`) before the request and/or the response;
 * - reset: a stale keep-alive socket. On a reused connection the request is answered with an RST and nothing
 *   else; on a fresh one this request is served and the next one on it gets the RST. The server's own close
 *   is hidden from then on, so the client never sees a FIN first;
 * - cut: the response headers and `cutFraction` of the body (of Content-Length, or else of the first body
 *   chunk) are forwarded, then the socket is closed;
 * - blackhole: the request and everything after it is read and dropped; nothing is ever answered;
 * - http503: a canned `503 Service Unavailable` with `Connection: close`; the server is never asked.
 *
 * Request boundaries: a client chunk starts a new request when it begins with an HTTP method token and the
 * response to the previous request has begun (or it is the first chunk). Enough for one request at a time per
 * connection, as HTTP clients send them; pipelined requests in one chunk count as one.
 */
export const faults = ["latency", "refuse", "reset", "cut", "blackhole", "http503"] as const
export type Fault = (typeof faults)[number]

export interface Faults {
  readonly rate?: number
  readonly mix?: Partial<Record<Fault, number>>
  readonly latencyMs?: number
  readonly jitterMs?: number
  readonly latencyOn?: "request" | "response" | "both"
  readonly cutFraction?: number
  /** Restarts the PRNG; without it the current sequence goes on. */
  readonly seed?: number
}

export type Stats = Record<Fault, number> & { readonly connections: number; readonly requests: number }

export interface Proxy {
  readonly url: string
  readonly connections: () => number
  /** The next request on any already-used connection is reset (kept for older tests; see `next("reset")`). */
  breakReusedConnections: boolean
  readonly setFaults: (faults: Faults) => void
  /** Forces the faults of the next events in order: `refuse` for the next connections, the rest for requests. */
  readonly next: (...faults: ReadonlyArray<Fault | "none">) => void
  /** No more faults: rate 0, forced faults dropped. Counters are kept. */
  readonly clear: () => void
  /** Faults applied so far. */
  readonly stats: () => Stats
  /** Every PRNG draw and forced fault, in order: per request, and per connection when refuse has a weight. */
  readonly history: () => ReadonlyArray<Fault | "none">
  readonly close: () => Promise<void>
}

export interface ProxyOptions extends Faults {
  readonly port?: number
}

/** mulberry32: a 32-bit state PRNG, uniform in [0, 1). */
export const mulberry32 = (seed: number) => {
  let state = seed | 0
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const methodStart = /^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) /
const body503 = "Service Unavailable (proxy)\n"
const canned503 = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n" +
  `Content-Length: ${body503.length}\r\nConnection: close\r\n\r\n${body503}`
const headerEnd = Buffer.from("\r\n\r\n")

type Settings = Required<Omit<Faults, "seed">>
const defaults: Settings = { rate: 0, mix: {}, latencyMs: 100, jitterMs: 0, latencyOn: "request", cutFraction: 0.5 }
const evenMix: Partial<Record<Fault, number>> = Object.fromEntries(faults.map((f) => [f, 1]))

export const startProxy = async (target: string, options: ProxyOptions = {}): Promise<Proxy> => {
  const { hostname, port } = new URL(target)
  const sockets = new Set<Net.Socket>()
  const counts: Record<Fault, number> = { latency: 0, refuse: 0, reset: 0, cut: 0, blackhole: 0, http503: 0 }
  const decisions: Array<Fault | "none"> = []
  const forced = { connection: [] as Array<Fault | "none">, request: [] as Array<Fault | "none"> }
  let connections = 0
  let requests = 0
  let breakReused = false
  let settings = defaults
  let random = mulberry32(0)
  let jitter = mulberry32(1)

  const setFaults = (next: Faults) => {
    settings = { ...defaults, ...next, mix: next.mix ?? evenMix }
    if (next.seed !== undefined) {
      random = mulberry32(next.seed)
      jitter = mulberry32(next.seed ^ 0x5bd1e995)
    }
  }
  setFaults(options)

  const decide = (event: "connection" | "request"): Fault | "none" => {
    const weight = (f: Fault) => Math.max(0, settings.mix[f] ?? 0)
    const candidates = faults.filter((f) => (f === "refuse") === (event === "connection") && weight(f) > 0)
    const queued = forced[event].shift()
    let chosen: Fault | "none" = queued ?? "none"
    if (queued === undefined) {
      if (settings.rate <= 0 || candidates.length === 0) return "none"
      const total = faults.reduce((sum, f) => sum + weight(f), 0)
      const u = random()
      let threshold = 0
      chosen = candidates.find((f) => u < (threshold += (settings.rate * weight(f)) / total)) ?? "none"
    }
    decisions.push(chosen)
    return chosen
  }

  const latency = () => settings.latencyMs + Math.floor(jitter() * settings.jitterMs)

  /** Writes `chunk` to `to` after `ms`, holding back `from` meanwhile so the order is kept. */
  const delayed = (from: Net.Socket, to: Net.Socket, chunk: Buffer, ms: number) =>
    new Promise<void>((resolve) => {
      from.pause()
      setTimeout(() => {
        if (!to.destroyed) to.write(chunk)
        from.resume()
        resolve()
      }, ms)
    })

  const server = Net.createServer((client) => {
    connections++
    sockets.add(client)
    client.on("error", () => client.destroy())
    if (decide("connection") === "refuse") {
      counts.refuse++
      client.resetAndDestroy()
      sockets.delete(client)
      return
    }
    const upstream = Net.connect(Number(port), hostname)
    sockets.add(upstream)
    let served = 0
    let responseBegan = true
    let stale = false
    let detached = false
    let dropping = false
    let responseDelay = 0
    /** Settles once a delayed response chunk is written, so the server's FIN follows it. */
    let held = Promise.resolve()
    let cut: { head: Buffer | undefined; limit?: number; sent: number } | undefined

    const closeUpstream = () => {
      detached = true
      upstream.destroy()
    }
    const onRequest = (chunk: Buffer) => {
      requests++
      served++
      responseBegan = false
      const legacy = breakReused && served > 1
      if (legacy) breakReused = false
      const fault = stale || legacy ? "reset" : decide("request")
      if (fault === "none" || fault === "refuse") return upstream.write(chunk)
      if (fault === "reset") {
        if (served > 1) {
          counts.reset++
          client.resetAndDestroy()
          return closeUpstream()
        }
        stale = detached = true
        return upstream.write(chunk)
      }
      counts[fault]++
      if (fault === "blackhole") {
        dropping = true
        return closeUpstream()
      }
      if (fault === "http503") {
        dropping = true
        client.end(canned503)
        return closeUpstream()
      }
      if (fault === "cut") {
        cut = { head: Buffer.alloc(0), sent: 0 }
        return upstream.write(chunk)
      }
      const on = settings.latencyOn
      responseDelay = on === "response" || on === "both" ? latency() : 0
      if (on === "request" || on === "both") return void delayed(client, upstream, chunk, latency())
      return upstream.write(chunk)
    }
    client.on("data", (chunk: Buffer) => {
      if (dropping) return
      const starts = responseBegan && methodStart.test(chunk.subarray(0, 8).toString("latin1"))
      if (starts) return onRequest(chunk)
      upstream.write(chunk)
    })

    const cutResponse = (state: NonNullable<typeof cut>, chunk: Buffer) => {
      let body = chunk
      if (state.head !== undefined) {
        const buffered = Buffer.concat([state.head, chunk])
        const end = buffered.indexOf(headerEnd)
        if (end < 0) {
          state.head = buffered
          return
        }
        const head = buffered.subarray(0, end + headerEnd.length)
        body = buffered.subarray(head.length)
        state.head = undefined
        client.write(head)
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(head.toString("latin1"))
        if (length !== null) state.limit = Math.floor(Number(length[1]) * settings.cutFraction)
      }
      if (state.limit === undefined) {
        if (body.length === 0) return
        state.limit = Math.floor(body.length * settings.cutFraction)
      }
      const part = body.subarray(0, Math.max(0, state.limit - state.sent))
      state.sent += part.length
      if (state.sent < state.limit) {
        client.write(part)
        return
      }
      client.end(part)
      closeUpstream()
    }
    upstream.on("data", (chunk: Buffer) => {
      responseBegan = true
      if (cut !== undefined) return cutResponse(cut, chunk)
      if (responseDelay > 0) {
        const ms = responseDelay
        responseDelay = 0
        held = delayed(upstream, client, chunk, ms)
        return
      }
      client.write(chunk)
    })

    upstream.on("error", () => upstream.destroy())
    upstream.on("end", () => void held.then(() => detached || client.end()))
    upstream.on("close", (hadError) => {
      sockets.delete(upstream)
      if (hadError && !detached) client.destroy()
    })
    client.on("close", () => {
      sockets.delete(client)
      upstream.destroy()
    })
  })

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, "127.0.0.1", resolve)
  })
  const address = server.address() as Net.AddressInfo
  return {
    url: `http://127.0.0.1:${address.port}`,
    connections: () => connections,
    get breakReusedConnections() {
      return breakReused
    },
    set breakReusedConnections(value: boolean) {
      breakReused = value
    },
    setFaults,
    next: (...next) => {
      for (const fault of next) forced[fault === "refuse" ? "connection" : "request"].push(fault)
    },
    clear: () => {
      setFaults({ rate: 0 })
      forced.connection.length = 0
      forced.request.length = 0
      breakReused = false
    },
    stats: () => ({ ...counts, connections, requests }),
    history: () => [...decisions],
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  }
}
