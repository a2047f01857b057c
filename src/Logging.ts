import { Cause, Config, ConfigError, Effect, Layer, Logger, LogLevel } from "effect"

/** Structured logs: logfmt by default, JSON with LOG_FORMAT=json. */
const format = process.env.LOG_FORMAT === "json" ? Logger.json : Logger.logFmt

const levels: Record<string, LogLevel.LogLevel> = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warn: LogLevel.Warning,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None,
  off: LogLevel.None
}

/** `LOG_LEVEL` (debug, info, warning, error, none; any case; default info): warning drops the per-request lines. */
const minimumLevel = Layer.unwrapEffect(
  Config.string("LOG_LEVEL").pipe(
    Config.withDefault("info"),
    Effect.map((name) => levels[name.trim().toLowerCase()]),
    Effect.flatMap((level) =>
      level === undefined
        ? Effect.as(Effect.logWarning("Ignoring LOG_LEVEL: use debug, info, warning, error or none"), LogLevel.Info)
        : Effect.succeed(level)
    ),
    Effect.orElseSucceed(() => LogLevel.Info),
    Effect.map(Logger.minimumLogLevel)
  )
)

export const Logging = Layer.merge(format, minimumLevel)

const isConfigError = (error: unknown): error is ConfigError.ConfigError => ConfigError.isConfigError(error)

/** A bad setting stops startup with one line naming the variable; anything else is logged with its cause. */
export const reportStartupFailure = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.tapErrorCause(self, (cause) => {
    const failure = Cause.failureOption(cause)
    if (failure._tag === "Some" && isConfigError(failure.value)) {
      return Effect.logError(`Invalid configuration: ${String(failure.value)}`)
    }
    return Effect.logError("startup failed", cause)
  })
