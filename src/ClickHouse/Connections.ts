/**
 * The pool's connections: idle ones reused newest first, new ones opened on demand, and closed once broken or
 * idle for longer than `idleTtlMs`.
 *
 * Why not Effect's `Pool`: its `get` (a semaphore, a scope and a finalizer per use) cost about 90 µs of CPU on
 * every try, an eighth of the client's own call (measured: docs/bench.md). Here every taker already holds one of
 * the Gate's permits, one per connection, so a connection is always there to take: a list does the rest.
 */
export interface Connections<C> {
  /** Only while holding a Gate permit. */
  readonly take: () => C
  /** Back to the idle list; closed instead when it broke. */
  readonly give: (connection: C, broken: boolean) => void
  readonly closeAll: () => Promise<void>
}

export interface ConnectionsOptions<C> {
  readonly open: () => C
  readonly close: (connection: C) => Promise<void>
  readonly idleTtlMs: number
}

export const makeConnections = <C>(options: ConnectionsOptions<C>): Connections<C> => {
  const idle: Array<{ readonly connection: C; readonly since: number }> = []
  const opened = new Set<C>()
  let closed = false

  const retire = (connection: C) => {
    opened.delete(connection)
    options.close(connection).catch(() => undefined)
  }

  return {
    take: () => {
      const now = Date.now()
      // The oldest idle ones are at the bottom.
      while (idle.length > 0 && now - idle[0]!.since > options.idleTtlMs) retire(idle.shift()!.connection)
      const reused = idle.pop()
      if (reused !== undefined) return reused.connection
      const connection = options.open()
      opened.add(connection)
      return connection
    },
    give: (connection, broken) => {
      if (broken || closed) retire(connection)
      else idle.push({ connection, since: Date.now() })
    },
    closeAll: async () => {
      closed = true
      idle.length = 0
      const all = [...opened]
      opened.clear()
      await Promise.all(all.map((connection) => options.close(connection).catch(() => undefined)))
    }
  }
}
