import { lookup } from 'node:dns/promises';
import { setMaxListeners } from 'node:events';
import { isIP } from 'node:net';
import { UsageError } from '../util/errors.js';
import type { LoadtestAccount } from './accounts.js';
import { proxyHeader, type Target } from './connect.js';
import { ArrivalSchedule, rampDelayMs } from './rate.js';
import {
  type LoadtestReport,
  type ProgressSnapshot,
  Recorder,
  type Scenario,
  timelineIntervalMs,
} from './report.js';
import { SCENARIOS, type SessionEnv } from './scenarios.js';
import { type SourceMix, seededRandom } from './source-mix.js';

/**
 * runLoadtest(): one scenario against one target, bounded by duration and/or count, returning
 * the report. This is the programmatic interface (bin/mailgate loadtest is its command line;
 * scripts/bench can call it directly). Nothing here prints.
 */

export interface LoadtestOptions {
  scenario: Scenario;
  target: Target;
  accounts: LoadtestAccount[];
  /** Sessions at once (fixed concurrency), or the most at once under a fixed rate. */
  concurrency: number;
  /** Iterations started per second (open loop); null: fixed concurrency (closed loop). */
  ratePerSec: number | null;
  /** Stop after this long; null: only --count bounds the run. */
  durationMs: number | null;
  /** Stop after this many iterations; null: only the duration bounds the run. */
  count: number | null;
  rampUpMs: number;
  /** Each network step (connect, login, command) must finish within this. */
  timeoutMs: number;
  /** PROXY protocol header per connection, with client addresses from the mix. */
  proxy: { version: 1 | 2; mix: SourceMix } | null;
  /** smtp: size of each message. */
  messageBytes: number;
  /** Seed of the source-address draws (reproducible runs). */
  seed: number;
  /** Refuse targets that are not loopback unless true. */
  allowRemote: boolean;
}

export interface LoadtestHooks {
  onProgress?: (p: ProgressSnapshot) => void;
  progressIntervalMs?: number;
  /** Aborting ends the run early (as Ctrl-C does); the report covers what was done. */
  signal?: AbortSignal;
  clock?: () => number;
}

/** Hard limits, so that a typo cannot turn a load test into a flood. */
export const MAX_CONCURRENCY = 10_000;
export const MAX_RATE_PER_SEC = 100_000;
export const MAX_DURATION_MS = 24 * 3_600_000;
/** After the end, in-flight iterations get this long beyond their own timeout before they are cut. */
const DRAIN_GRACE_MS = 1_000;

export function checkOptions(o: LoadtestOptions): void {
  const bad = (m: string): never => {
    throw new UsageError(m);
  };
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1 || o.concurrency > MAX_CONCURRENCY)
    bad(`--concurrency must be 1-${MAX_CONCURRENCY}`);
  if (o.ratePerSec !== null && !(o.ratePerSec > 0 && o.ratePerSec <= MAX_RATE_PER_SEC))
    bad(`--rate must be above 0 and at most ${MAX_RATE_PER_SEC} per second`);
  if (o.durationMs === null && o.count === null)
    bad('give --duration or --count: a load test must end by itself');
  if (o.durationMs !== null && !(o.durationMs > 0 && o.durationMs <= MAX_DURATION_MS))
    bad('--duration must be above 0 and at most 24h');
  if (o.count !== null && !(Number.isInteger(o.count) && o.count >= 1))
    bad('--count must be a positive number');
  if (o.scenario === 'idle' && o.durationMs === null)
    bad('the idle scenario holds sessions for --duration; give one');
  if (o.scenario === 'idle' && o.ratePerSec !== null)
    bad('the idle scenario opens --concurrency sessions; --rate does not apply');
  if (o.accounts.length === 0) bad('no accounts');
  if (!(o.timeoutMs >= 100)) bad('--timeout must be at least 100ms');
}

/** Loopback: 127.0.0.0/8, ::1, and IPv4-mapped loopback. */
export function isLoopback(address: string): boolean {
  const a = address.toLowerCase().replace(/^::ffff:/, '');
  return a === '::1' || (isIP(a) === 4 && a.startsWith('127.'));
}

/**
 * Refuses a target that is not on this machine, unless allowed: a load test is a flood, and
 * pointing it at someone else's server by mistake must not be one flag away. Every address the
 * name resolves to must be loopback.
 */
export async function checkTarget(host: string, allowRemote: boolean): Promise<void> {
  if (allowRemote) return;
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
  } catch (err) {
    throw new UsageError(
      `cannot resolve ${host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const remote = addresses.filter((a) => !isLoopback(a));
  if (remote.length > 0 || addresses.length === 0) {
    throw new UsageError(
      `refusing to load-test ${host} (${remote.join(', ') || 'no address'}): not loopback. ` +
        'Pass --allow-remote to test a server on another machine, one you are responsible for.',
    );
  }
}

export async function runLoadtest(o: LoadtestOptions, hooks: LoadtestHooks = {}): Promise<LoadtestReport> {
  checkOptions(o);
  await checkTarget(o.target.host, o.allowRemote);
  const clock = hooks.clock ?? (() => performance.timeOrigin + performance.now());
  const recorder = new Recorder(clock, timelineIntervalMs(o.durationMs));
  const stop = new AbortController();
  // Every session waits on it (ramp-up, rate schedule, idle): one listener each.
  setMaxListeners(o.concurrency + 16, stop.signal);
  let stoppedBy: LoadtestReport['stoppedBy'] = 'duration';
  const end = (why: LoadtestReport['stoppedBy']) => {
    if (stop.signal.aborted) return;
    stoppedBy = why;
    stop.abort();
  };
  const onSignal = () => end('signal');
  hooks.signal?.addEventListener('abort', onSignal, { once: true });
  if (hooks.signal?.aborted) end('signal');
  const deadline = o.durationMs === null ? null : setTimeout(() => end('duration'), o.durationMs);

  const schedule = o.ratePerSec === null ? null : new ArrivalSchedule(o.ratePerSec, o.rampUpMs);
  let issued = 0;
  const elapsed = () => clock() - recorder.startedAt;
  const wait = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        stop.signal.removeEventListener('abort', done);
        resolve();
      }
      stop.signal.addEventListener('abort', done, { once: true });
    });
  const permit = async (): Promise<boolean> => {
    if (stop.signal.aborted) return false;
    // The count is used up: this session ends; the run ends when the last one has.
    if (o.count !== null && issued >= o.count) return false;
    issued++;
    if (schedule) {
      const { waitMs } = schedule.claim(elapsed());
      if (waitMs > 0) await wait(waitMs);
      if (stop.signal.aborted) return false;
    }
    return true;
  };

  const random = seededRandom(o.seed);
  const header = (): Buffer | null => {
    if (!o.proxy) return null;
    const source = o.proxy.mix.pick(random);
    recorder.source(source.label);
    return proxyHeader(o.proxy.version, source, o.target, 1024 + Math.floor(random() * 64_000));
  };
  let nextAccount = 0;
  const open = new Set<{ close(): void }>();
  const perSession = o.scenario === 'fetch' || o.scenario === 'idle';

  const sessions = Array.from({ length: o.concurrency }, async (_, index) => {
    const env: SessionEnv = {
      index,
      target: o.target,
      timeoutMs: o.timeoutMs,
      recorder,
      account: () =>
        perSession ? o.accounts[index % o.accounts.length]! : o.accounts[nextAccount++ % o.accounts.length]!,
      header,
      permit,
      stop: stop.signal,
      open,
      messageBytes: o.messageBytes,
      now: clock,
    };
    if (schedule === null) await wait(rampDelayMs(index, o.concurrency, o.rampUpMs));
    if (stop.signal.aborted) return;
    await SCENARIOS[o.scenario](env);
  });

  const progress =
    hooks.onProgress &&
    setInterval(() => hooks.onProgress!(recorder.progress()), hooks.progressIntervalMs ?? 1_000);
  try {
    const all = Promise.allSettled(sessions);
    // Sessions end by themselves once stopped; bound the wait for the last iterations.
    await Promise.race([
      all,
      new Promise<void>((resolve) => {
        stop.signal.addEventListener(
          'abort',
          () => setTimeout(resolve, o.timeoutMs + DRAIN_GRACE_MS).unref(),
          { once: true },
        );
      }),
    ]);
    end('count'); // every session ended: the count is used up (or the duration passed first)
    for (const c of open) c.close();
    await all;
  } finally {
    if (deadline) clearTimeout(deadline);
    if (progress) clearInterval(progress);
    hooks.signal?.removeEventListener('abort', onSignal);
  }
  hooks.onProgress?.(recorder.progress());
  return recorder.report({
    scenario: o.scenario,
    target: { host: o.target.host, port: o.target.port, tls: o.target.tls },
    options: {
      concurrency: o.concurrency,
      ratePerSec: o.ratePerSec,
      durationMs: o.durationMs,
      count: o.count,
      rampUpMs: o.rampUpMs,
      timeoutMs: o.timeoutMs,
      proxy: o.proxy ? (`v${o.proxy.version}` as const) : null,
      sourceMix: o.proxy ? [...o.proxy.mix.entries] : null,
      accounts: o.accounts.length,
    },
    stoppedBy,
    dropped: schedule?.dropped ?? 0,
  });
}
