/**
 * `WORKERS=n`: the service in n worker processes behind one port, with node:cluster (@effect/platform's workers
 * run jobs, they do not share a listening socket). With 1, the default, there is no cluster: the app runs in this
 * process as it always has.
 *
 * The primary reads and checks every setting before it forks (a bad one is one line and exit 1, not n crashing
 * workers) and does no request work: it accepts connections and hands them to the workers in turn (node's
 * round-robin). A worker that exits is started again after a back-off; on SIGTERM or SIGINT every worker drains
 * and the primary exits 0 if all of them stopped cleanly.
 */
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import Cluster, { type Worker } from "node:cluster"
import * as Os from "node:os"
import { StartupError } from "./Domain/StartupError.js"

export const maxWorkers = 256

/** `WORKERS`: an integer from 1 to `maxWorkers`, or `auto` for one per core. */
export const workersConfig: Config.Config<number> = Config.string("WORKERS").pipe(
  Config.mapOrFail((raw) => {
    const value = raw.trim().toLowerCase()
    const count = value === "auto" ? Math.min(Os.availableParallelism(), maxWorkers) : /^\d+$/.test(value) ? Number(value) : NaN
    return count >= 1 && count <= maxWorkers
      ? Either.right(count)
      : Either.left(ConfigError.InvalidData([], `must be an integer from 1 to ${maxWorkers}, or auto`))
  }),
  Config.withDefault(1)
)

export const restartPolicy = {
  firstDelayMs: 100,
  maxDelayMs: 5_000,
  /** A worker that ran this long resets its slot's back-off. */
  stableAfterMs: 10_000,
  /** Exits in a row before ready, in one slot, after which the primary gives up and exits 1. */
  maxFailedStarts: 5
} as const

/** The wait before a slot's next worker starts: the first delay after a worker that lived, else doubling. */
export const nextDelayMs = (previousMs: number | undefined, livedMs: number) =>
  previousMs === undefined || livedMs >= restartPolicy.stableAfterMs
    ? restartPolicy.firstDelayMs
    : Math.min(previousMs * 2, restartPolicy.maxDelayMs)

const readyMessage = "analytics-api:ready"

/** Past its drain (`SHUTDOWN_GRACE_MS`) and this, a stopping worker is killed. */
const stopMarginMs = 5_000

interface Slot {
  worker: Worker
  startedAt: number
  ready: boolean
  delayMs: number | undefined
  failedStarts: number
  timer: NodeJS.Timeout | undefined
}

const describe = (worker: Worker) => ({ worker: worker.id, pid: worker.process.pid })

/**
 * The primary: `count` workers, restarted when they exit, until interrupted. The first is started alone, so
 * that a reason all of them would fail for (a port in use) is said once, by it, and the primary exits with its
 * code; the others start once it is ready.
 */
const supervise = (count: number, grace: Duration.Duration) =>
  Effect.gen(function*() {
    const log = Runtime.runSync(yield* Effect.runtime<never>())
    return yield* Effect.async<never, StartupError>((resume) => {
      const slots: Array<Slot> = []
      let stopping = false
      let starting = true

      const fork = (index: number) => {
        const worker = Cluster.fork()
        const previous = slots[index]
        slots[index] = {
          worker,
          startedAt: Date.now(),
          ready: false,
          delayMs: previous?.delayMs,
          failedStarts: previous?.failedStarts ?? 0,
          timer: undefined
        }
        if (previous !== undefined) {
          log(Effect.logInfo("worker restarted").pipe(Effect.annotateLogs({ ...describe(worker), replaces: previous.worker.id })))
        }
        worker.on("message", (message) => {
          if (message === readyMessage) onReady(index, worker)
        })
        worker.once("exit", (code, signal) => onExit(index, worker, code, signal))
      }

      const onReady = (index: number, worker: Worker) => {
        const slot = slots[index]!
        slot.ready = true
        if (!starting) return log(Effect.logInfo("worker ready").pipe(Effect.annotateLogs(describe(worker))))
        if (slots.length === 1) for (let i = 1; i < count; i++) fork(i)
        if (slots.length === count && slots.every((s) => s.ready)) {
          starting = false
          log(Effect.logInfo("workers ready").pipe(Effect.annotateLogs({ workers: count, pids: slots.map((s) => s.worker.process.pid).join(",") })))
        }
      }

      const onExit = (index: number, worker: Worker, code: number | null, signal: string | null) => {
        if (stopping) return
        const slot = slots[index]!
        if (slots.length === 1 && !slot.ready) {
          // The worker has logged why; the primary adds nothing.
          return resume(Effect.sync(() => process.exit(code === 0 || code === null ? 1 : code)))
        }
        const livedMs = Date.now() - slot.startedAt
        slot.failedStarts = slot.ready ? 0 : slot.failedStarts + 1
        slot.delayMs = nextDelayMs(slot.delayMs, livedMs)
        const givingUp = slot.failedStarts >= restartPolicy.maxFailedStarts
        const exit = { ...describe(worker), code, signal, livedMs, ...(givingUp ? {} : { restartInMs: slot.delayMs }) }
        log(Effect.logWarning("worker exited").pipe(Effect.annotateLogs(exit)))
        if (!givingUp) {
          slot.timer = setTimeout(() => fork(index), slot.delayMs)
          return
        }
        const message = `Startup failed: workers exited before they were ready ${slot.failedStarts} times in a row`
        resume(Effect.zipRight(stop, Effect.fail(new StartupError({ message }))))
      }

      const stop = Effect.async<void>((done) => {
        stopping = true
        for (const slot of slots) clearTimeout(slot.timer)
        const live = slots.map((s) => s.worker).filter((worker) => !worker.isDead())
        if (live.length === 0) return done(Effect.void)
        log(Effect.logInfo("stopping workers").pipe(Effect.annotateLogs({ workers: live.length })))
        const kill = setTimeout(() => {
          log(Effect.logWarning("workers still running past the shutdown grace; killing them"))
          for (const worker of live) worker.process.kill("SIGKILL")
        }, Duration.toMillis(grace) + stopMarginMs)
        const unclean: Array<number> = []
        let left = live.length
        for (const worker of live) {
          worker.once("exit", (code, signal) => {
            if (code !== 0) unclean.push(worker.id)
            log(Effect.logInfo("worker stopped").pipe(Effect.annotateLogs({ ...describe(worker), code, signal })))
            if (--left > 0) return
            clearTimeout(kill)
            done(unclean.length === 0
              ? Effect.void
              : Effect.logError("workers did not stop cleanly").pipe(
                Effect.annotateLogs({ workers: unclean.join(",") }),
                // A defect next to the interruption: the process exits 1.
                Effect.zipRight(Effect.dieMessage(`workers ${unclean.join(",")} did not stop cleanly`))
              ))
          })
          worker.process.kill("SIGTERM")
        }
      })

      fork(0)
      return stop
    })
  })

/**
 * In a worker: the app, with its log lines marked with the worker's id and the primary told once it serves. A
 * signal sent to the whole group (a terminal's Ctrl-C, a service manager) and then the primary's own SIGTERM
 * would otherwise kill the worker in the middle of its drain: after the first, the process ignores them.
 */
const inWorker = <E>(app: Layer.Layer<never, E>, id: number) =>
  Layer.unwrapEffect(Effect.sync(() => {
    for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => undefined)
    return app.pipe(
      Layer.tap(() => Effect.sync(() => process.send?.(readyMessage))),
      Layer.annotateLogs("worker", id)
    )
  }))

/**
 * The service as `WORKERS` says: `app` in this process with 1, else that many processes of this same program
 * running `worker`, once `preflight` (every setting, checked in the primary) has passed; its `shutdownGrace`
 * bounds their drain.
 */
export const layer = <E1, E2, E3>(options: {
  readonly app: Layer.Layer<never, E1>
  readonly worker: Layer.Layer<never, E2>
  readonly preflight: (workers: number) => Effect.Effect<{ readonly shutdownGrace: Duration.Duration }, E3>
}): Layer.Layer<never, E1 | E2 | E3 | ConfigError.ConfigError | StartupError> =>
  Cluster.isWorker
    ? inWorker(options.worker, Cluster.worker!.id)
    : Layer.unwrapEffect(Effect.map(workersConfig, (count): Layer.Layer<never, E1 | E3 | StartupError> =>
      count === 1
        ? options.app
        : Layer.effectDiscard(Effect.flatMap(options.preflight(count), (settings) => supervise(count, settings.shutdownGrace)))
    ))
