import { Cause, ConfigError, Effect, Logger } from "effect"

/** Structured logs: logfmt by default, JSON with LOG_FORMAT=json. */
export const Logging = process.env.LOG_FORMAT === "json" ? Logger.json : Logger.logFmt

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
