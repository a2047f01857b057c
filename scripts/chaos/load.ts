/**
 * Closed-loop load: `concurrency` workers, each sending GET requests one after another over a shared keep-alive
 * agent, every answer checked and recorded with the phase it started in.
 */
import * as Http from "node:http"

export type Outcome = "ok" | "wrong" | "error" | "timeout" | "socket"

export interface Sample {
  readonly phase: string
  /** When the request was sent, ms since the run began. */
  readonly startMs: number
  readonly ms: number
  readonly outcome: Outcome
  /** "200", "503 unavailable", "503 non-JSON", "timeout", "socket ECONNRESET", … */
  readonly key: string
}

export interface LoadOptions {
  readonly url: string
  readonly concurrency: number
  readonly timeoutMs: number
  readonly expected: number
  readonly now: () => number
  readonly phase: () => string
}

const errorCode = (body: string): string | undefined => {
  try {
    const error: unknown = JSON.parse(body).error
    if (typeof error !== "object" || error === null) return undefined
    const { code, message } = error as Record<string, unknown>
    return typeof code === "string" && typeof message === "string" ? code : undefined
  } catch {
    return undefined
  }
}

const isRight = (body: string, expected: number): boolean => {
  try {
    return JSON.parse(body).total === expected
  } catch {
    return false
  }
}

export const startLoad = (options: LoadOptions) => {
  const { url, concurrency, timeoutMs, expected, now, phase } = options
  const agent = new Http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency })
  const samples: Array<Sample> = []
  let running = true

  const once = () =>
    new Promise<Sample>((resolve) => {
      const base = { phase: phase(), startMs: now() }
      let settled = false
      let timedOut = false
      const finish = (outcome: Outcome, key: string) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        resolve({ ...base, ms: now() - base.startMs, outcome, key })
      }
      const failed = (error: Error & { code?: string }) =>
        timedOut ? finish("timeout", "timeout") : finish("socket", `socket ${error.code ?? error.message}`)
      const request = Http.get(url, { agent }, (response) => {
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("error", failed)
        response.on("close", () => {
          if (!response.complete) return failed(new Error("incomplete response"))
          const status = response.statusCode ?? 0
          const body = Buffer.concat(chunks).toString("utf8")
          if (status === 200) return isRight(body, expected) ? finish("ok", "200") : finish("wrong", "200 wrong")
          finish("error", `${status} ${errorCode(body) ?? "non-JSON"}`)
        })
      })
      request.on("error", failed)
      const timer = setTimeout(() => {
        timedOut = true
        request.destroy(new Error("client timeout"))
      }, timeoutMs)
    })

  const worker = async () => {
    while (running) samples.push(await once())
  }
  const done = Promise.all(Array.from({ length: concurrency }, worker))

  return {
    samples,
    /** Stops sending and waits for the requests in flight (each ends by its client timeout at the latest). */
    stop: async () => {
      running = false
      await done
      agent.destroy()
    }
  }
}
