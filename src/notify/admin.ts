/**
 * What operators see of the outbox: `notify tail`, `notify status`, `notify dlq list|retry`.
 * Nothing here prints a full msisdn: the log stream holds masked numbers, and dead letters are
 * masked on the way out.
 */
import type { Redis } from 'ioredis';
import { StoreUnavailableError, UsageError } from '../util/errors.js';
import { type NotifyLogEntry, type OutboxNotice, outboxKeys } from './outbox.js';
import { maskMsisdn } from './schedule.js';

export const NOTIFY_TAIL_MAX = 10_000;

export interface DeadLetter {
  id: string;
  ts: string;
  key: string;
  template: string;
  login: string;
  /** Masked. */
  msisdn: string;
  attempts: number;
  error: string;
}

export interface OutboxStatus {
  /** Entries in the stream: ready, or being delivered. */
  ready: number;
  /** Of those, handed to a worker and not yet settled. */
  inDelivery: number;
  /** Waiting for quiet hours to end or for a retry. */
  deferred: number;
  nextDeferredDue: string | null;
  deadLetters: number;
  consumers: Array<{ name: string; pending: number; idleMs: number }>;
}

type Entry = [id: string, fields: string[]];

function fieldsOf(fields: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) o[fields[i]!] = fields[i + 1]!;
  return o;
}

function idTime(id: string): string {
  return new Date(Number(id.split('-')[0])).toISOString();
}

export class NotifyAdmin {
  readonly #redis: Redis;
  readonly #keys: ReturnType<typeof outboxKeys>;

  constructor(redis: Redis, prefix: string) {
    this.#redis = redis;
    this.#keys = outboxKeys(prefix);
  }

  /** The latest `n` events of the notify log, oldest first. */
  async tail(n: number): Promise<NotifyLogEntry[]> {
    const count = Math.max(0, Math.min(n, NOTIFY_TAIL_MAX));
    if (count === 0) return [];
    const rows = (await this.#call(() =>
      this.#redis.xrevrange(this.#keys.log, '+', '-', 'COUNT', count),
    )) as Entry[];
    return rows.reverse().map(logEntry);
  }

  /** Events after `from` (a stream id, or '$' for new ones only), until the signal aborts. */
  async *follow(
    from: string,
    opts: { signal: AbortSignal; blockMs: number },
  ): AsyncGenerator<NotifyLogEntry> {
    let last = from;
    while (!opts.signal.aborted) {
      let r: Array<[string, Entry[]]> | null;
      try {
        r = (await this.#redis.xread(
          'COUNT',
          100,
          'BLOCK',
          opts.blockMs,
          'STREAMS',
          this.#keys.log,
          last,
        )) as Array<[string, Entry[]]> | null;
      } catch (err) {
        if (opts.signal.aborted) return;
        throw new StoreUnavailableError(`redis: ${(err as Error).message}`, { cause: err });
      }
      for (const e of r?.[0]?.[1] ?? []) {
        last = e[0];
        yield logEntry(e);
      }
    }
  }

  async status(): Promise<OutboxStatus> {
    const { outbox, deferred, dlq, group } = this.#keys;
    const [ready, deferredCount, next, dead] = await this.#call(() =>
      Promise.all([
        this.#redis.xlen(outbox),
        this.#redis.zcard(deferred),
        this.#redis.zrange(deferred, '0', '0', 'WITHSCORES'),
        this.#redis.xlen(dlq),
      ]),
    );
    let consumers: OutboxStatus['consumers'] = [];
    let inDelivery = 0;
    try {
      const info = (await this.#redis.xinfo('CONSUMERS', outbox, group)) as Array<Array<string | number>>;
      consumers = info.map((row) => {
        const o: Record<string, string | number> = {};
        for (let i = 0; i + 1 < row.length; i += 2) o[String(row[i])] = row[i + 1]!;
        return { name: String(o.name), pending: Number(o.pending), idleMs: Number(o.idle) };
      });
      inDelivery = consumers.reduce((s, c) => s + c.pending, 0);
    } catch {
      // no stream or no group yet: no worker has run
    }
    return {
      ready,
      inDelivery,
      deferred: deferredCount,
      nextDeferredDue: next[1] !== undefined ? new Date(Number(next[1])).toISOString() : null,
      deadLetters: dead,
      consumers,
    };
  }

  /** Dead letters, oldest first (at most `n`). */
  async dlqList(n: number): Promise<DeadLetter[]> {
    const rows = (await this.#call(() =>
      this.#redis.xrange(this.#keys.dlq, '-', '+', 'COUNT', Math.max(1, Math.min(n, NOTIFY_TAIL_MAX))),
    )) as Entry[];
    return rows.map(([id, raw]) => {
      const f = fieldsOf(raw);
      let n: Partial<OutboxNotice> = {};
      try {
        n = JSON.parse(f.notice ?? '') as OutboxNotice;
      } catch {
        // shown with what it has
      }
      return {
        id,
        ts: idTime(id),
        key: n.key ?? '',
        template: n.template ?? '',
        login: n.login ?? '',
        msisdn: n.msisdn ? maskMsisdn(n.msisdn) : '',
        attempts: n.attempt ?? 0,
        error: f.error ?? '',
      };
    });
  }

  /**
   * Puts dead letters back into the outbox with their attempts reset (and their idempotency
   * key kept: a webhook that did take one after all will not send it twice). `ids` empty: all.
   */
  async dlqRetry(ids: readonly string[]): Promise<{ retried: string[]; missing: string[] }> {
    const { dlq, outbox } = this.#keys;
    const rows: Entry[] = [];
    const missing: string[] = [];
    if (ids.length === 0) {
      rows.push(...((await this.#call(() => this.#redis.xrange(dlq, '-', '+'))) as Entry[]));
    } else {
      for (const id of ids) {
        if (!/^\d+-\d+$/.test(id))
          throw new UsageError(`"${id}" is not a dead-letter id (as dlq list shows)`);
        const r = (await this.#call(() => this.#redis.xrange(dlq, id, id))) as Entry[];
        if (r[0]) rows.push(r[0]);
        else missing.push(id);
      }
    }
    const retried: string[] = [];
    for (const [id, raw] of rows) {
      const f = fieldsOf(raw);
      let notice: OutboxNotice;
      try {
        notice = { ...(JSON.parse(f.notice ?? '') as OutboxNotice), attempt: 0 };
      } catch {
        missing.push(id); // unreadable: stays in the dead-letter stream
        continue;
      }
      await this.#call(() =>
        this.#redis.multi().xadd(outbox, '*', 'notice', JSON.stringify(notice)).xdel(dlq, id).exec(),
      );
      retried.push(id);
    }
    return { retried, missing };
  }

  async #call<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      throw new StoreUnavailableError(`redis: ${(err as Error).message}`, { cause: err });
    }
  }
}

function logEntry([id, raw]: Entry): NotifyLogEntry {
  const f = fieldsOf(raw);
  return {
    ...f,
    id,
    ts: idTime(id),
    event: f.event ?? '',
    key: f.key ?? '',
    template: f.template ?? '',
    login: f.login ?? '',
    msisdn: f.msisdn ?? '',
  };
}

export function formatLogLine(e: NotifyLogEntry): string {
  const extra = ['attempt', 'status', 'due', 'error']
    .filter((k) => e[k] !== undefined && e[k] !== '')
    .map((k) => `${k}=${e[k]}`)
    .join(' ');
  return `${e.ts} ${e.event.padEnd(8)} ${e.template.padEnd(19)} ${e.login} ${e.msisdn} ${e.key}${extra ? ` ${extra}` : ''}`;
}
