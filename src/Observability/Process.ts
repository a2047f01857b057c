import * as Effect from "effect/Effect"
import { monitorEventLoopDelay } from "node:perf_hooks"
import * as Instruments from "./Instruments.js"

const toSeconds = (nanos: number) => nanos / 1e9

/**
 * The process gauges, read at each scrape: memory, uptime, and the event-loop delay since the previous scrape
 * (sampled every 10 ms by Node's own monitor, reset after each read). Stops with the scope.
 */
export const sampleProcess = Effect.acquireRelease(
  Effect.sync(() => {
    const delay = monitorEventLoopDelay({ resolution: 10 })
    delay.enable()
    const remove = Instruments.addSampler(() => {
      const memory = process.memoryUsage()
      Instruments.residentMemory.update(memory.rss)
      Instruments.heapUsed.update(memory.heapUsed)
      Instruments.heapTotal.update(memory.heapTotal)
      Instruments.uptime.update(process.uptime())
      if (delay.count > 0) {
        Instruments.eventLoopDelayP50.update(toSeconds(delay.percentile(50)))
        Instruments.eventLoopDelayP99.update(toSeconds(delay.percentile(99)))
        Instruments.eventLoopDelayMax.update(toSeconds(delay.max))
        delay.reset()
      }
    })
    return () => {
      remove()
      delay.disable()
    }
  }),
  (stop) => Effect.sync(stop)
)
