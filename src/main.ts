import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { AppLive } from "./App.ts"
import { reportStartupFailure, Logging } from "./Logging.ts"

Layer.launch(AppLive).pipe(
  reportStartupFailure,
  Effect.provide(Logging),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)
