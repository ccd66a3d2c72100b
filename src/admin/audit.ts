import type { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import { StoreUnavailableError } from '../util/errors.js';

/**
 * The audit trail: every operator action, from the CLI or the admin API, appended to the Redis
 * stream `<prefix>audit` (and logged as an `event: "admin"` line by the service layer). The
 * stream is capped at about AUDIT_STREAM_MAXLEN entries (XADD MAXLEN ~, so trimming costs
 * nothing per write); ship the pino lines somewhere durable for a longer history.
 */

/** Approximate cap of the stream; Redis trims whole macro-nodes, so it may hold a few more. */
export const AUDIT_STREAM_MAXLEN = 100_000;
/** Most entries one `audit tail` (or GET /v1/audit) returns. */
export const AUDIT_TAIL_MAX = 10_000;

export interface AuditEntry {
  /** Stream id (`<ms>-<seq>`), unique and ordered. */
  id: string;
  /** ISO 8601. */
  ts: string;
  /** `cli:<user>` or `api:<token name>`. */
  actor: string;
  /** e.g. `account.add`, `rollout.overseas`. */
  action: string;
  /** What changed (before/after, logins); never a password, hash or token. */
  details: Record<string, unknown>;
}

/** Where the service layer sends each action. */
export interface AuditSink {
  /** Never rejects: a trail that cannot be written is logged, the action itself is done. */
  record(entry: {
    at: number;
    actor: string;
    action: string;
    details: Record<string, unknown>;
  }): Promise<void>;
}

const SECRET_KEY = /password|hash|token|secret|^pin$/i;

/**
 * A second line of defence: the service never passes secrets as details, but a key that looks
 * like one is replaced before anything is stored. Booleans stay (`imapPassword: true` tells
 * whether one is set, not what it is).
 */
export function scrubDetails(value: unknown, key = ''): unknown {
  if (SECRET_KEY.test(key) && typeof value !== 'boolean' && value !== null) return '[redacted]';
  if (Array.isArray(value)) return value.map((v) => scrubDetails(v));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrubDetails(v, k)]));
  }
  return value;
}

export class RedisAuditLog implements AuditSink {
  readonly key: string;
  readonly #pending = new Set<Promise<void>>();

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly log: Logger,
  ) {
    this.key = `${prefix}audit`;
  }

  record(entry: {
    at: number;
    actor: string;
    action: string;
    details: Record<string, unknown>;
  }): Promise<void> {
    const write = this.redis
      .xadd(
        this.key,
        'MAXLEN',
        '~',
        String(AUDIT_STREAM_MAXLEN),
        '*',
        'ts',
        new Date(entry.at).toISOString(),
        'actor',
        entry.actor,
        'action',
        entry.action,
        'details',
        JSON.stringify(scrubDetails(entry.details)),
      )
      .then(
        () => {},
        (err: Error) => {
          this.log.error(
            { event: 'admin', actor: entry.actor, action: entry.action, audit: 'failed', error: err.message },
            'audit stream write failed; the action was done',
          );
        },
      )
      .finally(() => this.#pending.delete(write));
    this.#pending.add(write);
    return write;
  }

  /** Waits for writes in flight, so a short-lived process (the CLI) loses none when it exits. */
  async flush(): Promise<void> {
    await Promise.all([...this.#pending]);
  }

  /** The last `count` entries, oldest first. */
  async tail(count: number): Promise<AuditEntry[]> {
    const n = Math.max(0, Math.min(Math.trunc(count), AUDIT_TAIL_MAX));
    if (n === 0) return [];
    const rows = await storeCall(() => this.redis.xrevrange(this.key, '+', '-', 'COUNT', n));
    return rows.map(parseEntry).reverse();
  }

  /**
   * Entries added after `afterId` (`$` = from now), as they arrive, until `signal` aborts.
   * Each XREAD blocks at most `blockMs`, which must stay below the client's command timeout.
   * A Redis error after `signal` aborted (the caller hung up the client to stop) ends the
   * iteration quietly.
   */
  async *follow(afterId: string, opts: { signal: AbortSignal; blockMs: number }): AsyncGenerator<AuditEntry> {
    let last = afterId;
    if (last === '$') {
      // Resolve "now" to a concrete id, so no entry is missed between two XREADs.
      const [newest] = await storeCall(() => this.redis.xrevrange(this.key, '+', '-', 'COUNT', 1));
      last = newest ? newest[0] : '0-0';
    }
    while (!opts.signal.aborted) {
      let res: Awaited<ReturnType<typeof this.redis.xread>>;
      try {
        res = await storeCall(() =>
          this.redis.xread('COUNT', 1000, 'BLOCK', opts.blockMs, 'STREAMS', this.key, last),
        );
      } catch (err) {
        if (opts.signal.aborted) return;
        throw err;
      }
      if (!res) continue;
      for (const [, rows] of res) {
        for (const row of rows) {
          last = row[0];
          yield parseEntry(row);
        }
      }
    }
  }
}

async function storeCall<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw new StoreUnavailableError(`redis: ${(err as Error).message}`, { cause: err });
  }
}

function parseEntry([id, fields]: [string, string[]]): AuditEntry {
  const f = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
  let details: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(f.get('details') ?? '{}') as unknown;
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed))
      details = parsed as Record<string, unknown>;
  } catch {
    details = { unparsed: f.get('details') ?? '' };
  }
  return { id, ts: f.get('ts') ?? '', actor: f.get('actor') ?? '', action: f.get('action') ?? '', details };
}

/** One line of `audit tail` text output: `ts actor action details`. */
export function formatAuditLine(e: AuditEntry): string {
  return `${e.ts} ${e.actor} ${e.action} ${JSON.stringify(e.details)}`;
}
