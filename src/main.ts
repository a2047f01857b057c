#!/usr/bin/env node
import { NodeRuntime } from "@effect/platform-node"
import { AppLive } from "./App.js"
import { launch } from "./Logging.js"

NodeRuntime.runMain(launch(AppLive), { disableErrorReporting: true, disablePrettyLogger: true })
