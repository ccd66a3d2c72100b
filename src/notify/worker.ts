/**
 * The delivery worker: takes notices from the outbox stream (consumer group `delivery`) and
 * posts each to the SMS gateway's webhook.
 *
 * At least once, and effectively once at a webhook that honours the idempotency key:
 * - an entry is acknowledged (XACK, then deleted) only after the webhook answered 2xx;
 * - a worker that dies holding entries leaves them pending; any worker takes them over with
 *   XAUTOCLAIM once they have been idle for `claimIdleMs` and sends them again, with the same key;
 * - a failed attempt moves the notice to the deferred set with a backoff (same key, attempt + 1)
 *   in the same MULTI that acknowledges the entry, so nothing is lost between the two;
 * - after `maxAttempts`, or on a permanent refusal (4xx other than 408/425/429), the notice goes to
 *   the dead-letter stream (`notify dlq list|retry`);
 * - a notice due inside the subscriber's quiet hours goes back to the deferred set until they end.
 */
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { NotifyConfig } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { type NoticeMetrics, type OutboxNotice, outboxKeys, renderNotice } from './outbox.js';
import { backoffMs, isTimeZone, maskMsisdn, quietUntil } from './schedule.js';

/** Due deferred notices moved to the stream per housekeeping pass. */
const PROMOTE_BATCH = 500;
/** Housekeeping (promote due notices, take over stale ones) at most this often. */
const HOUSEKEEPING_MS = 500;
/** Longest wait of one XREADGROUP; below the Redis command timeout. */
const MAX_BLOCK_MS = 1_000;
/** Longest error text kept with a dead letter. */
const MAX_ERROR_CHARS = 300;

// Moves due notices from the deferred set to the stream, atomically (several workers may run).
const PROMOTE_SCRIPT = `
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'notice', m)
  redis.call('ZREM', KEYS[1], m)
end
return #due
`;

export type DeliveryOutcome = 'sent' | 'retry' | 'dead' | 'deferred';

export interface WorkerStats {
  sent: number;
  retried: number;
  dead: number;
  deferred: number;
  claimed: number;
}

export interface DeliveryWorkerDeps {
  /** For acknowledgements and housekeeping; the worker adds its own connection for blocking reads. */
  redis: Redis;
  prefix: string;
  config: NotifyConfig & { webhook: NonNullable<NotifyConfig['webhook']> };
  log: Logger;
  clock?: () => number;
  /** Longest blocking read; keep it below the Redis command timeout. */
  blockMs?: number;
  /** Consumer name in the group; default host-pid-random. */
  consumer?: string;
  /**
   * How often due deferred notices (retries, quiet hours) are moved to the stream and stale
   * ones taken over: the precision of backoff and deferral. Default 500.
   */
  housekeepingMs?: number;
  random?: () => number;
  /** Counts sent, retry, dead and quiet (deferred) notices (mailgate_notices_total). */
  metrics?: NoticeMetrics;
}

/** The webhook's body (see README "Notifications"). */
export interface WebhookPayload {
  idempotencyKey: string;
  msisdn: string;
  template: string;
  language: string;
  text: string;
  queuedAt: string;
}

type StreamEntry = [id: string, fields: string[]];

export class DeliveryWorker {
  readonly stats: WorkerStats = { sent: 0, retried: 0, dead: 0, deferred: 0, claimed: 0 };
  readonly consumer: string;
  readonly #redis: Redis;
  readonly #reader: Redis;
  readonly #keys: ReturnType<typeof outboxKeys>;
  readonly #config: DeliveryWorkerDeps['config'];
  readonly #log: Logger;
  readonly #clock: () => number;
  readonly #random: () => number;
  readonly #blockMs: number;
  readonly #housekeepingMs: number;
  readonly #metrics: NoticeMetrics | undefined;
  readonly #inFlight = new Set<Promise<void>>();
  #running: Promise<void> | null = null;
  #stopping = false;
  #nextHousekeeping = 0;

  constructor(deps: DeliveryWorkerDeps) {
    this.#redis = deps.redis;
    this.#reader = deps.redis.duplicate();
    this.#reader.on('error', () => {});
    this.#keys = outboxKeys(deps.prefix);
    this.#config = deps.config;
    this.#log = deps.log;
    this.#clock = deps.clock ?? Date.now;
    this.#random = deps.random ?? Math.random;
    this.#blockMs = Math.max(1, Math.min(MAX_BLOCK_MS, deps.blockMs ?? MAX_BLOCK_MS));
    this.#housekeepingMs = deps.housekeepingMs ?? HOUSEKEEPING_MS;
    this.#metrics = deps.metrics;
    this.consumer = deps.consumer ?? `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  }

  start(): void {
    this.#running ??= this.#loop().catch((err: Error) => {
      this.#log.error(
        { event: 'notify', result: 'worker-stopped', error: err.message },
        'delivery worker stopped',
      );
    });
  }

  /** Stops reading, lets the requests in flight finish (and be acknowledged), closes its connection. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#reader.disconnect(); // ends a blocking read at once
    await this.#running;
    await Promise.allSettled([...this.#inFlight]);
  }

  async #loop(): Promise<void> {
    this.#log.info({ event: 'notify', consumer: this.consumer }, 'delivery worker started');
    while (!this.#stopping) {
      try {
        if (this.#reader.status === 'wait') await this.#reader.connect();
        await this.#ensureGroup();
        break;
      } catch (err) {
        await this.#pause(err as Error);
      }
    }
    while (!this.#stopping) {
      try {
        // Paced by the monotonic clock: `clock` is business time (due dates), which tests move.
        if (performance.now() >= this.#nextHousekeeping) {
          this.#nextHousekeeping = performance.now() + this.#housekeepingMs;
          await this.#promote();
          for (const e of await this.#claim()) this.#dispatch(e);
        }
        const room = this.#config.worker.concurrency - this.#inFlight.size;
        // Read in batches (half the concurrency at least): a read per finished request would
        // add a Redis round trip to every notice.
        if (room < Math.ceil(this.#config.worker.concurrency / 2)) {
          await Promise.race(this.#inFlight);
          continue;
        }
        const block = Math.max(
          1,
          Math.min(this.#blockMs, Math.ceil(this.#nextHousekeeping - performance.now())),
        );
        for (const e of await this.#read(room, block)) this.#dispatch(e);
      } catch (err) {
        if (this.#stopping) break;
        await this.#pause(err as Error);
        // The stream or its group is gone (Redis restarted without persistence, FLUSHDB).
        if (/NOGROUP/.test((err as Error).message)) await this.#ensureGroup().catch(() => {});
      }
    }
  }

  async #pause(err: Error): Promise<void> {
    this.#log.warn(
      { event: 'notify', result: 'worker-error', error: err.message },
      'delivery worker: Redis error',
    );
    await new Promise((r) => setTimeout(r, 500));
  }

  async #ensureGroup(): Promise<void> {
    try {
      // From 0: notices queued before any worker ever ran are delivered too.
      await this.#redis.xgroup('CREATE', this.#keys.outbox, this.#keys.group, '0', 'MKSTREAM');
    } catch (err) {
      if (!/BUSYGROUP/.test((err as Error).message)) throw err;
    }
  }

  async #promote(): Promise<void> {
    const { deferred, outbox } = this.#keys;
    await this.#redis.eval(PROMOTE_SCRIPT, 2, deferred, outbox, String(this.#clock()), String(PROMOTE_BATCH));
  }

  /** Entries another worker (or this one, before a restart) was given and never finished. */
  async #claim(): Promise<StreamEntry[]> {
    const { outbox, group } = this.#keys;
    const r = (await this.#redis.xautoclaim(
      outbox,
      group,
      this.consumer,
      this.#config.worker.claimIdleMs,
      '0-0',
      'COUNT',
      this.#config.worker.concurrency * 4,
    )) as [string, Array<StreamEntry | null>, string[]?];
    const entries = (r[1] ?? []).filter((e): e is StreamEntry => e !== null);
    this.stats.claimed += entries.length;
    if (entries.length > 0)
      this.#log.info(
        { event: 'notify', result: 'claimed', count: entries.length },
        'took over pending notices',
      );
    return entries;
  }

  async #read(count: number, blockMs: number): Promise<StreamEntry[]> {
    const { outbox, group } = this.#keys;
    const r = (await this.#reader.xreadgroup(
      'GROUP',
      group,
      this.consumer,
      'COUNT',
      count,
      'BLOCK',
      blockMs,
      'STREAMS',
      outbox,
      '>',
    )) as Array<[string, StreamEntry[]]> | null;
    return r?.[0]?.[1] ?? [];
  }

  #dispatch([id, fields]: StreamEntry): void {
    const json = fields[fields.indexOf('notice') + 1];
    const p = this.#deliver(id, json).catch((err: Error) =>
      // Redis failed while settling it: the entry stays pending and is taken over later.
      this.#log.warn({ event: 'notify', result: 'error', id, error: err.message }, 'notice left pending'),
    );
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  }

  async #deliver(id: string, json: string | undefined): Promise<void> {
    let n: OutboxNotice;
    try {
      n = JSON.parse(json ?? '') as OutboxNotice;
      if (typeof n.key !== 'string' || typeof n.msisdn !== 'string') throw new Error('not a notice');
    } catch (err) {
      await this.#deadRaw(id, json ?? '', `unreadable entry: ${(err as Error).message}`);
      return;
    }
    const now = this.#clock();
    const quiet = isTimeZone(n.tz) ? quietUntil(now, n.tz, this.#config.quietHours) : null;
    if (quiet !== null) {
      await this.#reschedule(id, n, quiet, 'deferred');
      return;
    }
    let text: string;
    try {
      text = renderNotice(n, this.#config);
    } catch (err) {
      // A notice this version cannot render (unknown template, bad time zone) never will be.
      await this.#dead(id, n, `cannot render: ${(err as Error).message}`);
      return;
    }
    const started = performance.now();
    const result = await this.#post(n, text);
    const ms = Math.round(performance.now() - started);
    const line = {
      event: 'notify',
      key: n.key,
      template: n.template,
      login: n.login,
      msisdn: maskMsisdn(n.msisdn),
      attempt: n.attempt + 1,
      status: result.status,
      ms,
    };
    if (result.ok) {
      await this.#settle(id, this.#redis.multi(), { ...line, event: 'sent' });
      this.stats.sent++;
      this.#metrics?.notice(n.template, 'sent');
      this.#log.info({ ...line, result: 'sent' }, 'notice delivered');
      return;
    }
    const attempts = n.attempt + 1;
    if (result.permanent || attempts >= this.#config.worker.maxAttempts) {
      await this.#dead(id, { ...n, attempt: attempts }, result.error);
      this.#log.warn({ ...line, result: 'dead', error: result.error }, 'notice dead-lettered');
      return;
    }
    const { baseMs, maxMs } = this.#config.worker.backoff;
    const delay = Math.max(result.retryAfterMs ?? 0, backoffMs(attempts, baseMs, maxMs, this.#random()));
    await this.#reschedule(id, { ...n, attempt: attempts }, this.#clock() + delay, 'retry', result.error);
    this.#log.info(
      { ...line, result: 'retry', error: result.error, delayMs: delay },
      'notice will be retried',
    );
  }

  async #post(
    n: OutboxNotice,
    text: string,
  ): Promise<{
    ok: boolean;
    permanent: boolean;
    status: number | null;
    error: string;
    retryAfterMs?: number;
  }> {
    const hook = this.#config.webhook;
    const payload: WebhookPayload = {
      idempotencyKey: n.key,
      msisdn: n.msisdn,
      template: n.template,
      language: n.lang,
      text,
      queuedAt: new Date(n.queuedAt).toISOString(),
    };
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'idempotency-key': n.key,
    };
    if (hook.token) headers.authorization = `Bearer ${hook.token}`;
    try {
      const res = await fetch(hook.url, {
        method: 'POST',
        headers,
        body: JSON.stringify(payload),
        signal: AbortSignal.timeout(hook.timeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined); // drain, so the connection is reused
      if (res.ok) return { ok: true, permanent: false, status: res.status, error: '' };
      const transient = res.status === 408 || res.status === 425 || res.status === 429 || res.status >= 500;
      const retryAfter = Number(res.headers.get('retry-after'));
      return {
        ok: false,
        permanent: !transient,
        status: res.status,
        error: `HTTP ${res.status}`,
        ...(Number.isFinite(retryAfter) && retryAfter > 0
          ? { retryAfterMs: Math.min(retryAfter * 1000, this.#config.worker.backoff.maxMs) }
          : {}),
      };
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      const why =
        e.name === 'TimeoutError' ? `timeout after ${hook.timeoutMs} ms` : (e.cause?.code ?? e.message);
      return { ok: false, permanent: false, status: null, error: why };
    }
  }

  /** Acknowledges and deletes the entry, with whatever else `tx` carries, and a log event. */
  async #settle(id: string, tx: ReturnType<Redis['multi']>, event: Record<string, unknown>): Promise<void> {
    const { outbox, group, log } = this.#keys;
    const fields = Object.entries({ ...event, at: this.#clock() }).flatMap(([k, v]) => [k, String(v ?? '')]);
    const r = await tx
      .xack(outbox, group, id)
      .xdel(outbox, id)
      .xadd(log, 'MAXLEN', '~', 10_000, '*', ...fields)
      .exec();
    const failed = r?.find(([err]) => err);
    if (!r || failed) throw failed?.[0] ?? new Error('transaction aborted');
  }

  async #reschedule(
    id: string,
    n: OutboxNotice,
    due: number,
    kind: 'retry' | 'deferred',
    error?: string,
  ): Promise<void> {
    const tx = this.#redis.multi().zadd(this.#keys.deferred, due, JSON.stringify(n));
    await this.#settle(id, tx, {
      event: kind,
      key: n.key,
      template: n.template,
      login: n.login,
      msisdn: maskMsisdn(n.msisdn),
      attempt: n.attempt,
      due: new Date(due).toISOString(),
      ...(error ? { error } : {}),
    });
    if (kind === 'retry') this.stats.retried++;
    else this.stats.deferred++;
    this.#metrics?.notice(n.template, kind === 'retry' ? 'retry' : 'quiet');
  }

  async #dead(id: string, n: OutboxNotice, error: string): Promise<void> {
    const err = error.slice(0, MAX_ERROR_CHARS);
    const tx = this.#redis
      .multi()
      .xadd(this.#keys.dlq, '*', 'notice', JSON.stringify(n), 'error', err, 'at', String(this.#clock()));
    await this.#settle(id, tx, {
      event: 'dead',
      key: n.key,
      template: n.template,
      login: n.login,
      msisdn: maskMsisdn(n.msisdn),
      attempt: n.attempt,
      error: err,
    });
    this.stats.dead++;
    this.#metrics?.notice(n.template, 'dead');
  }

  async #deadRaw(id: string, raw: string, error: string): Promise<void> {
    const tx = this.#redis
      .multi()
      .xadd(this.#keys.dlq, '*', 'notice', raw, 'error', error, 'at', String(this.#clock()));
    await this.#settle(id, tx, { event: 'dead', key: '', template: '', login: '', msisdn: '', error });
    this.stats.dead++;
  }
}
