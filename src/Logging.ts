import * as Cause from "effect/Cause"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Tracer from "effect/Tracer"
import { type LogConfig, logConfig } from "./Config.js"
import { firstLine, StartupError } from "./Domain/StartupError.js"
import { isClickHouseError } from "./Domain/ClickHouseError.js"

/** A line logged inside a span of a kept trace carries its `traceId` and `spanId`. */
const withTraceIds = <O>(logger: Logger.Logger<unknown, O>) =>
  Logger.mapInputOptions(logger, (options) => {
    const span = Context.getOption(FiberRefs.getOrDefault(options.context, FiberRef.currentContext), Tracer.ParentSpan)
    if (span._tag === "None" || !span.value.sampled || span.value.traceId === "native") return options
    const annotations = HashMap.set(HashMap.set(options.annotations, "traceId", span.value.traceId), "spanId", span.value.spanId)
    return { ...options, annotations }
  })

/**
 * Structured logs: logfmt by default, JSON with `LOG_FORMAT=json`; `LOG_LEVEL` sets the floor. Above info the
 * floor is the logger's own filter, not `Logger.minimumLogLevel`: the default floor (info) then stays in place, so
 * no fiber carries a ref for it (see Tracing.ts for what a ref more costs per request). Below info it must be the
 * ref, for Effect drops lines under the ref's level before any logger sees them. The edge's one line per request
 * is turned off apart (`HttpConfig.accessLog`), so nothing builds lines for the filter to drop.
 */
export const layer = (config: LogConfig) => {
  const logger = Logger.withConsoleLog(withTraceIds(config.format === "json" ? Logger.jsonLogger : Logger.logfmtLogger))
  if (LogLevel.greaterThan(config.level, LogLevel.Info)) {
    const floor = config.level
    return Logger.replace(
      Logger.defaultLogger,
      Logger.map(Logger.filterLogLevel(logger, (level) => LogLevel.greaterThanEqual(level, floor)), () => undefined)
    )
  }
  const replaced = Logger.replace(Logger.defaultLogger, logger)
  return LogLevel.lessThan(config.level, LogLevel.Info) ? Layer.merge(replaced, Logger.minimumLogLevel(config.level)) : replaced
}

/** The one line that says why startup failed, for the failures an operator can fix; undefined for bugs. */
export const startupFailureLine = (error: unknown): string | undefined => {
  if (ConfigError.isConfigError(error)) return `Invalid configuration: ${String(error)}`
  if (error instanceof StartupError) return error.message
  if (isClickHouseError(error)) return `Startup failed: ClickHouse ${error._tag.slice("ClickHouse".length)}: ${firstLine(error.cause)}`
  return undefined
}

/** A failure an operator can fix is logged as one line; anything else (a bug) with its whole cause. */
export const reportStartupFailure = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.tapErrorCause(self, (cause) => {
    const failure = Cause.failureOption(cause)
    const line = failure._tag === "Some" ? startupFailureLine(failure.value) : undefined
    return line === undefined ? Effect.logError("startup failed", cause) : Effect.logError(line)
  })

/**
 * Runs the app layer until interrupted, with the logging the environment asks for. A bad `LOG_LEVEL` or
 * `LOG_FORMAT` is reported like any other bad setting, in the default format.
 */
export const launch = <E>(app: Layer.Layer<never, E>) =>
  logConfig.pipe(
    reportStartupFailure,
    Effect.flatMap((config) => Layer.launch(app).pipe(reportStartupFailure, Effect.provide(layer(config))))
  )

/** Logging as the environment asks for it (for scripts; the service reports a bad setting through `launch`). */
export const layerConfig = Layer.unwrapEffect(Effect.map(logConfig, layer))
