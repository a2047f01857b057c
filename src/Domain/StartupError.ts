import * as Data from "effect/Data"

/** A reason the service cannot start, said in one line that tells the operator what to change. */
export class StartupError extends Data.TaggedError("StartupError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** The first line of an error's message: enough for a log line, without the stack. */
export const firstLine = (error: unknown): string => {
  const text = error instanceof Error ? error.message : String(error)
  return text.split("\n", 1)[0]!.trim()
}
