import { Cause, Config, ConfigError, Effect, Layer, Logger, LogLevel } from "effect"

/** Structured logs: logfmt by default, JSON with LOG_FORMAT=json. */
const format = process.env.LOG_FORMAT === "json" ? Logger.json : Logger.logFmt

/** `LOG_LEVEL` (Debug, Info, Warning, Error, None; default Info): Warning drops the per-request lines. */
const minimumLevel = Layer.unwrapEffect(
  Config.logLevel("LOG_LEVEL").pipe(
    Config.withDefault(LogLevel.Info),
    Effect.map(Logger.minimumLogLevel),
    Effect.catchAll((error) =>
      Effect.as(Effect.logWarning(`Ignoring LOG_LEVEL: ${String(error)}`), Logger.minimumLogLevel(LogLevel.Info))
    )
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
