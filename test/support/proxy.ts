import * as Net from "node:net"

/**
 * A TCP proxy in front of a real ClickHouse server, for breaking connections on purpose.
 * `breakReusedConnections`: the next request sent on an already-used connection is answered with a reset
 * (a keep-alive socket that the server closed without the client noticing).
 */
export interface Proxy {
  readonly url: string
  readonly connections: () => number
  breakReusedConnections: boolean
  readonly close: () => Promise<void>
}

export const startProxy = async (target: string): Promise<Proxy> => {
  const { hostname, port } = new URL(target)
  let connections = 0
  const sockets = new Set<Net.Socket>()
  const state = { breakReusedConnections: false }
  const server = Net.createServer((client) => {
    connections++
    let requests = 0
    const upstream = Net.connect(Number(port), hostname)
    sockets.add(client).add(upstream)
    client.on("data", (chunk) => {
      requests++
      if (requests > 1 && state.breakReusedConnections) {
        state.breakReusedConnections = false
        client.resetAndDestroy()
        upstream.destroy()
        return
      }
      upstream.write(chunk)
    })
    upstream.on("data", (chunk) => client.write(chunk))
    const end = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on("close", end).on("error", end)
    upstream.on("close", end).on("error", end)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address() as Net.AddressInfo
  return {
    url: `http://127.0.0.1:${address.port}`,
    connections: () => connections,
    get breakReusedConnections() {
      return state.breakReusedConnections
    },
    set breakReusedConnections(value: boolean) {
      state.breakReusedConnections = value
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  }
}
