import type * as HttpServerError from "@effect/platform/HttpServerError"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Http from "node:http"
import type { Duplex } from "node:stream"
import type { ServerConfig } from "../Config.js"
import { type ErrorCode, statusOf } from "../Domain/ApiError.js"
import { firstLine, StartupError } from "../Domain/StartupError.js"

/** Answers written straight to Node, outside the app (its parser's rejections): statuses from the same table. */
const errorJson = (code: ErrorCode, message: string) => JSON.stringify({ error: { code, message } })

const clientErrorBody = (code: ErrorCode, message: string) => {
  const status = statusOf[code]
  const body = errorJson(code, message)
  return `HTTP/1.1 ${status} ${Http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
}

/** Requests Node's parser rejects before they reach the app still get a JSON answer. */
const onClientError = (error: Error & { code?: string }, socket: Duplex) => {
  if (socket.writable && !(socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
    const answer = error.code === "HPE_HEADER_OVERFLOW"
      ? clientErrorBody("headers_too_large", "The request line or headers are too large.")
      : error.code === "ERR_HTTP_REQUEST_TIMEOUT" || error.code === "ERR_HTTP_HEADERS_TIMEOUT"
      ? clientErrorBody("request_timeout", "The request was not received in time.")
      : clientErrorBody("bad_request", "The request is not valid HTTP.")
    socket.end(answer)
  } else {
    socket.destroy()
  }
}

/** Limits that keep a slow or hostile client from pinning the server. */
const createServer = () => {
  const server = Http.createServer({
    // A request without Host reaches the app (and gets its JSON answer) instead of Node's bare 400.
    requireHostHeader: false,
    maxHeaderSize: 16 * 1024,
    headersTimeout: 10_000,
    requestTimeout: 60_000,
    keepAliveTimeout: 5_000
  })
  server.maxRequestsPerSocket = 10_000
  server.timeout = 120_000
  server.on("clientError", onClientError)
  // Requests Node would otherwise answer itself, without a body, or not at all.
  server.on("checkExpectation", (_request: Http.IncomingMessage, response: Http.ServerResponse) => {
    response.writeHead(statusOf.expectation_failed, { "content-type": "application/json", connection: "close" })
    response.end(errorJson("expectation_failed", "Only Expect: 100-continue is supported."))
  })
  server.on("connect", (_request: Http.IncomingMessage, socket: Duplex) => {
    socket.end(clientErrorBody("method_not_allowed", "CONNECT is not supported."))
  })
  // The port is taken before ClickHouse is ready (so that a busy port fails first): until the app serves,
  // and after it stops, a request gets a JSON 503 instead of hanging with no handler.
  server.on("request", (_request: Http.IncomingMessage, response: Http.ServerResponse) => {
    if (server.listenerCount("request") > 1) return
    response.writeHead(statusOf.unavailable, { "content-type": "application/json", "retry-after": "1", connection: "close" })
    response.end(errorJson("unavailable", "The service is starting or stopping."))
  })
  return server
}

/**
 * Graceful stop: no new connections, idle keep-alive sockets closed, in-flight requests given
 * `shutdownGrace` to finish before their connections are closed.
 */
const gracefulClose = (server: Http.Server, grace: Duration.Duration) =>
  Effect.async<void>((resume) => {
    if (!server.listening) return resume(Effect.void)
    server.close(() => resume(Effect.void))
    server.closeIdleConnections()
  }).pipe(
    Effect.timeoutTo({
      duration: grace,
      onSuccess: () => Effect.void,
      onTimeout: () =>
        Effect.logWarning("shutdown grace period over; closing remaining connections").pipe(
          Effect.zipRight(Effect.sync(() => server.closeAllConnections()))
        )
    }),
    Effect.flatten
  )

/** Why the port could not be had, in one line that names the setting to change. */
const listenFailure = (config: ServerConfig, variable: string, error: HttpServerError.ServeError) => {
  const code = (error.cause as { code?: unknown } | undefined)?.code
  const host = Option.getOrUndefined(config.host)
  return new StartupError({
    message: code === "EADDRINUSE"
      ? `${variable} ${config.port} is in use${host === undefined ? "" : ` on ${host}`}`
      : code === "EACCES"
      ? `${variable} ${config.port} needs more privileges than this process has`
      : code === "EADDRNOTAVAIL" || code === "ENOTFOUND" || code === "EAI_AGAIN"
      ? `HOST ${host ?? ""} is not an address of this machine`
      : `Could not listen on ${variable} ${config.port}: ${firstLine(error.cause)}`,
    cause: error
  })
}

/**
 * The Node server in two layers, for two places in the app: `listen` goes first, so that a busy port fails
 * before anything else starts; `drain` goes right under the served app, so that on shutdown in-flight
 * requests finish while what they use (ClickHouse) is still there. `variable` names the port's setting in errors.
 */
export const make = (config: ServerConfig, variable = "PORT") => {
  const server = createServer()
  const listen = NodeHttpServer.layer(() => server, {
    port: config.port,
    backlog: config.backlog,
    ...Option.match(config.host, { onNone: () => ({}), onSome: (host) => ({ host }) })
  }).pipe(Layer.mapError((error) => listenFailure(config, variable, error)))
  const drain = Layer.scopedDiscard(Effect.addFinalizer(() => gracefulClose(server, config.shutdownGrace)))
  return { listen, drain } as const
}
