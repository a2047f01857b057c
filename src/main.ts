#!/usr/bin/env node
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { AppLive, preflight, WorkerLive } from "./App.js"
import { launch } from "./Logging.js"
import * as Workers from "./Workers.js"

NodeRuntime.runMain(launch(Workers.layer({ app: AppLive, worker: WorkerLive, preflight })), {
  disableErrorReporting: true,
  disablePrettyLogger: true
})
