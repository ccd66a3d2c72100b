import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { pino } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import type { Config } from './config/schema.js';
import { startGateway } from './main.js';
import { createLogger, type Logger } from './observability/logger.js';
import { RefusedError } from './util/errors.js';

/**
 * `serve` on every core (README, Workers): a supervisor process forks one worker per core with
 * node:cluster; each worker is a whole gateway (its own Redis connection, hasher with its own
 * passwords.maxConcurrentVerifies bound, credential cache, session registry) and the listening
 * sockets are shared through the supervisor, which hands out connections round-robin (Node's
 * default scheduling on Linux). Workers hold no state that another needs: everything shared
 * lives in Redis, as between gateways on different hosts.
 *
 * Like nginx's master process, the supervisor serves no client itself. It restarts a worker
 * that dies (with backoff, so a worker that cannot start does not spin), forwards SIGHUP
 * (reload) and SIGTERM/SIGINT (graceful stop) to the workers, and exits once they are gone.
 * The admin API runs in worker slot 0 only (one listener, one audit trail); its /metrics sums
 * the registries of all workers, fetched over the cluster IPC channel.
 */

/** A restart waits RESTART_BASE_MS, doubling for each quick death in a row, up to RESTART_MAX_MS. */
export const RESTART_BASE_MS = 100;
export const RESTART_MAX_MS = 30_000;
/** A worker that ran this long before dying counts as healthy: the next restart is immediate again. */
export const HEALTHY_UPTIME_MS = 60_000;
/** After SIGTERM, workers get this long to finish; then they are killed. */
export const STOP_TIMEOUT_MS = 30_000;
/** Slot 0's /metrics waits this long for the other workers' registries. */
export const METRICS_TIMEOUT_MS = 2_000;

const SLOT_ENV = 'MAILGATE_WORKER_SLOT';

/** One worker's registry as getMetricsAsJSON() gives it: plain data, so it crosses the IPC channel. */
type metric = object;

/** `workers` from the command line or the config: a count, or "auto" for one per core. */
export function resolveWorkers(value: number | 'auto'): number {
  return value === 'auto' ? availableParallelism() : value;
}

/** Messages on the cluster IPC channel, all tagged so that nothing else is mistaken for them. */
type Message =
  | { mailgate: 'ready' }
  | { mailgate: 'metrics-request'; id: number }
  | { mailgate: 'metrics-collect'; id: number }
  | { mailgate: 'metrics'; id: number; metrics: metric[] }
  | { mailgate: 'metrics-response'; id: number; workers: metric[][] };

function isMessage(m: unknown): m is Message {
  return typeof m === 'object' && m !== null && typeof (m as { mailgate?: unknown }).mailgate === 'string';
}

/**
 * Log lines of several processes share one stdout. A write of at most PIPE_BUF (4096) bytes to
 * a pipe is atomic (POSIX), as is any append to a file opened O_APPEND, so the destination
 * hands the kernel whole lines in chunks of at most 4 KiB and lines never interleave.
 */
export function clusterLogDestination(): pino.DestinationStream {
  return pino.destination({ dest: 1, sync: false, minLength: 0, maxWrite: 4096 });
}

// ---------------------------------------------------------------------------------------------
// Worker side

export interface WorkerRole {
  slot: number;
  /** Serve the admin API (slot 0 only). */
  admin: boolean;
  /** /metrics for the whole cluster: every worker's registry, summed. */
  exposeMetrics(): Promise<{ contentType: string; body: string }>;
}

/** This process's role under the supervisor, or null when it is not a cluster worker. */
export function workerRole(): WorkerRole | null {
  if (!cluster.isWorker) return null;
  const slot = Number(process.env[SLOT_ENV] ?? 0);
  let next = 0;
  const waiting = new Map<number, (workers: metric[][]) => void>();
  process.on('message', (m: unknown) => {
    if (isMessage(m) && m.mailgate === 'metrics-response') {
      waiting.get(m.id)?.(m.workers);
      waiting.delete(m.id);
    }
  });
  return {
    slot,
    admin: slot === 0,
    async exposeMetrics() {
      const id = next++;
      const workers = await new Promise<metric[][]>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error('cluster metrics: the supervisor did not answer'));
        }, METRICS_TIMEOUT_MS * 2);
        waiting.set(id, (w) => {
          clearTimeout(timer);
          resolve(w);
        });
        process.send?.({ mailgate: 'metrics-request', id } satisfies Message);
      });
      const registry = AggregatorRegistry.aggregate(workers);
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}

/**
 * Once the gateway listens: answer the supervisor's requests for this worker's metrics and
 * tell it that this worker is ready.
 */
export function announceWorker(registry: { getMetricsAsJSON(): Promise<object[]> }): void {
  process.on('message', (m: unknown) => {
    if (!isMessage(m) || m.mailgate !== 'metrics-collect') return;
    registry.getMetricsAsJSON().then(
      (metrics) => process.send?.({ mailgate: 'metrics', id: m.id, metrics } satisfies Message),
      () => process.send?.({ mailgate: 'metrics', id: m.id, metrics: [] } satisfies Message),
    );
  });
  process.send?.({ mailgate: 'ready' } satisfies Message);
}

// ---------------------------------------------------------------------------------------------
// Supervisor side

export interface SupervisorOptions {
  workers: number;
  log: Logger;
  restartBaseMs?: number;
  restartMaxMs?: number;
  stopTimeoutMs?: number;
}

interface Slot {
  index: number;
  worker: Worker | null;
  startedAt: number;
  ready: boolean;
  /** Deaths in a row, each soon after its start; resets after HEALTHY_UPTIME_MS of uptime. */
  quickDeaths: number;
  restartTimer: NodeJS.Timeout | null;
}

/**
 * Runs in the primary process: forks the workers (re-running this program with the same
 * arguments), keeps them running, and resolves with the exit code once they have all stopped:
 * 0 after SIGTERM/SIGINT, 1 when the first start failed (a worker died before every worker
 * was ready: the same error would only repeat, so stop and let the operator see it).
 */
export function runSupervisor(opts: SupervisorOptions): Promise<number> {
  const { log } = opts;
  const baseMs = opts.restartBaseMs ?? RESTART_BASE_MS;
  const maxMs = opts.restartMaxMs ?? RESTART_MAX_MS;
  const stopTimeoutMs = opts.stopTimeoutMs ?? STOP_TIMEOUT_MS;
  const slots: Slot[] = Array.from({ length: opts.workers }, (_, index) => ({
    index,
    worker: null,
    startedAt: 0,
    ready: false,
    quickDeaths: 0,
    restartTimer: null,
  }));
  let stopping = false;
  let startedAll = false;
  let exitCode = 0;
  let nextMetricsId = 0;
  const collecting = new Map<number, { workers: metric[][]; pending: number; finish: () => void }>();

  return new Promise<number>((resolve) => {
    const live = () => slots.filter((s) => s.worker !== null);

    const fork = (slot: Slot) => {
      slot.restartTimer = null;
      slot.ready = false;
      slot.startedAt = Date.now();
      const worker = cluster.fork({ [SLOT_ENV]: String(slot.index) });
      slot.worker = worker;
      log.info({ event: 'worker', slot: slot.index, worker: worker.process.pid }, 'worker started');
      worker.on('message', (m: unknown) => onMessage(slot, worker, m));
      worker.on('exit', (code, signal) => onExit(slot, worker, code, signal));
    };

    const onMessage = (slot: Slot, worker: Worker, m: unknown) => {
      if (!isMessage(m)) return;
      switch (m.mailgate) {
        case 'ready':
          slot.ready = true;
          log.info({ event: 'worker', slot: slot.index, worker: worker.process.pid }, 'worker ready');
          if (!startedAll && slots.every((s) => s.ready)) {
            startedAll = true;
            log.info({ event: 'worker', workers: slots.length }, 'all workers ready');
          }
          break;
        case 'metrics-request':
          collectMetrics(worker, m.id);
          break;
        case 'metrics': {
          const c = collecting.get(m.id);
          if (!c) break;
          c.workers.push(m.metrics);
          if (--c.pending === 0) c.finish();
          break;
        }
        case 'metrics-collect':
        case 'metrics-response':
          break;
      }
    };

    /** Asks every ready worker for its registry; answers `asker` with what came in time. */
    const collectMetrics = (asker: Worker, askerId: number) => {
      const id = nextMetricsId++;
      const targets = slots.filter((s) => s.ready && s.worker?.isConnected()).map((s) => s.worker!);
      const entry = {
        workers: [] as metric[][],
        pending: targets.length,
        finish: () => {
          clearTimeout(timer);
          collecting.delete(id);
          if (asker.isConnected()) {
            asker.send({
              mailgate: 'metrics-response',
              id: askerId,
              workers: entry.workers,
            } satisfies Message);
          }
        },
      };
      const timer = setTimeout(entry.finish, METRICS_TIMEOUT_MS);
      collecting.set(id, entry);
      if (targets.length === 0) entry.finish();
      for (const w of targets) w.send({ mailgate: 'metrics-collect', id } satisfies Message);
    };

    const onExit = (slot: Slot, worker: Worker, code: number | null, signal: string | null) => {
      if (slot.worker !== worker) return;
      slot.worker = null;
      const wasReady = slot.ready;
      slot.ready = false;
      const fields = { event: 'worker', slot: slot.index, worker: worker.process.pid, code, signal };
      if (stopping) {
        log.info(fields, 'worker stopped');
        if (live().length === 0) finish();
        return;
      }
      if (!startedAll && !wasReady) {
        // The first start failed; the worker has said why on stderr.
        log.error(fields, 'worker failed to start; stopping');
        exitCode = 1;
        stop();
        return;
      }
      const uptime = Date.now() - slot.startedAt;
      slot.quickDeaths = uptime >= HEALTHY_UPTIME_MS ? 0 : slot.quickDeaths + 1;
      const delay = slot.quickDeaths === 0 ? 0 : Math.min(maxMs, baseMs * 2 ** (slot.quickDeaths - 1));
      log.warn({ ...fields, uptimeMs: uptime, restartInMs: delay }, 'worker exited; restarting');
      slot.restartTimer = setTimeout(() => fork(slot), delay);
    };

    let killTimer: NodeJS.Timeout | null = null;
    const stop = () => {
      if (stopping) return;
      stopping = true;
      for (const s of slots) {
        if (s.restartTimer) clearTimeout(s.restartTimer);
        s.restartTimer = null;
      }
      const running = live();
      log.info({ event: 'shutdown', workers: running.length }, 'stopping workers');
      if (running.length === 0) return finish();
      for (const s of running) s.worker?.process.kill('SIGTERM');
      killTimer = setTimeout(() => {
        for (const s of live()) {
          log.warn(
            { event: 'worker', slot: s.index, worker: s.worker?.process.pid },
            'worker did not stop; killing',
          );
          s.worker?.process.kill('SIGKILL');
        }
      }, stopTimeoutMs);
      killTimer.unref();
    };

    const onStop = () => stop();
    // Only to workers that are ready: one still starting reads the files anyway, and has no
    // SIGHUP handler yet (the signal would kill it).
    const onHup = () => {
      const ready = live().filter((s) => s.ready);
      log.info({ event: 'reload', workers: ready.length }, 'forwarding SIGHUP to workers');
      for (const s of ready) s.worker?.process.kill('SIGHUP');
    };
    const finish = () => {
      if (killTimer) clearTimeout(killTimer);
      process.off('SIGTERM', onStop);
      process.off('SIGINT', onStop);
      process.off('SIGHUP', onHup);
      log.info({ event: 'shutdown', code: exitCode }, 'all workers stopped');
      resolve(exitCode);
    };

    process.on('SIGTERM', onStop);
    process.on('SIGINT', onStop);
    process.on('SIGHUP', onHup);
    log.info({ event: 'supervisor', workers: slots.length }, `starting ${slots.length} workers`);
    for (const s of slots) fork(s);
  });
}

// ---------------------------------------------------------------------------------------------
// serve

/**
 * `bin/mailgate serve`: with more than one worker, this process becomes the supervisor and
 * each worker (this same program, forked) runs the gateway; with one, the gateway runs here.
 * Resolves once everything has stopped after SIGTERM/SIGINT.
 */
export async function serve(config: Config, opts: { workers?: number } = {}): Promise<void> {
  const workers = opts.workers ?? resolveWorkers(config.workers);
  const role = workerRole();
  if (role === null && workers > 1) {
    const log = createLogger(config.log.level, clusterLogDestination());
    const code = await runSupervisor({ workers, log });
    log.flush();
    if (code !== 0)
      throw new RefusedError('a worker failed to start (its error is above); stopped', 'MG_WORKER_START');
    return;
  }
  try {
    const gateway = await startGateway(config, {
      ...(role ? { log: createLogger(config.log.level, clusterLogDestination()) } : {}),
      worker: role,
    });
    const onHup = () => {
      gateway
        .reload()
        .catch((err: Error) => gateway.log.error({ event: 'reload', error: err.message }, 'reload failed'));
    };
    process.on('SIGHUP', onHup);
    if (role) announceWorker(gateway.metrics.registry);
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    process.off('SIGHUP', onHup);
    gateway.log.info({ event: 'shutdown' }, 'stopping');
    await gateway.close();
    gateway.log.flush();
  } finally {
    // A worker's IPC channel would keep it alive after the gateway has stopped (or failed to start).
    if (role && process.connected) process.disconnect();
  }
}
