#!/usr/bin/env node
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { AppLive } from "./App.js"
import { launch } from "./Logging.js"

NodeRuntime.runMain(launch(AppLive), { disableErrorReporting: true, disablePrettyLogger: true })
