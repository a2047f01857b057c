/** A stand-in app under Workers.layer for the restart tests: a worker fails at startup while FAIL_FILE exists. */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Duration, Effect, Layer } from "effect"
import { existsSync } from "node:fs"
import { StartupError } from "../../src/Domain/StartupError.ts"
import { launch } from "../../src/Logging.ts"
import * as Workers from "../../src/Workers.ts"

const app = Layer.effectDiscard(Effect.suspend(() =>
  existsSync(process.env.FAIL_FILE ?? "")
    ? Effect.fail(new StartupError({ message: "told to fail" }))
    : Effect.logInfo("up")
))

NodeRuntime.runMain(
  launch(Workers.layer({ app, worker: app, preflight: () => Effect.succeed({ shutdownGrace: Duration.seconds(1) }) })),
  { disableErrorReporting: true, disablePrettyLogger: true }
)
