import type { Redis } from 'ioredis';
import type { LockoutConfig } from '../config/schema.js';
import { RefusedError, StoreUnavailableError } from '../util/errors.js';
import { normalizeLogin } from './store.js';

/**
 * Failure windows and locks (rules.md R13) in Redis; the key layout is in accounts/store.ts. Windows
 * are sorted sets of failure times, trimmed on every write and capped in size, so a flood
 * cannot grow them without bound.
 */

/** Entries kept per failure window: more than any threshold needs. */
const MAX_WINDOW_ENTRIES = 1_000;

const FAILURE_SCRIPT = `
local p, login, src = ARGV[1], ARGV[2], ARGV[3]
local now, window, member = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local pairMax, acctMax, lockMs, cap = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local function bump(key)
  redis.call('ZADD', key, now, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  redis.call('ZREMRANGEBYRANK', key, 0, -cap - 1)
  redis.call('PEXPIRE', key, window)
  return redis.call('ZCARD', key)
end
local n = bump(p .. 'fail:src:' .. src)
if login ~= '' then
  if bump(p .. 'fail:pair:' .. login .. ':' .. src) >= pairMax then
    redis.call('SET', p .. 'lock:pair:' .. login .. ':' .. src, now, 'PX', lockMs)
  end
  if bump(p .. 'fail:acct:' .. login) >= acctMax then
    redis.call('SET', p .. 'lock:acct:' .. login, now, 'PX', lockMs)
  end
end
return n
`;

const SUCCESS_SCRIPT = `
local p, login, src, now, keep = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local known = p .. 'known:' .. login
redis.call('ZADD', known, now, src)
redis.call('ZREMRANGEBYSCORE', known, '-inf', now - keep)
redis.call('ZREMRANGEBYRANK', known, 0, -201)
redis.call('PEXPIRE', known, keep)
redis.call('DEL', p .. 'fail:pair:' .. login .. ':' .. src)
return 1
`;

type RedisWithScripts = Redis & {
  mgRecordFailure(...args: Array<string | number>): Promise<number>;
  mgRecordSuccess(...args: Array<string | number>): Promise<number>;
};

export class LockoutStore {
  #seq = 0;
  readonly #scripts: RedisWithScripts;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly cfg: LockoutConfig,
  ) {
    // Defined commands go as EVALSHA (the script body is sent once, not on every login).
    if (!('mgRecordSuccess' in redis)) {
      redis.defineCommand('mgRecordFailure', { numberOfKeys: 0, lua: FAILURE_SCRIPT });
      redis.defineCommand('mgRecordSuccess', { numberOfKeys: 0, lua: SUCCESS_SCRIPT });
    }
    this.#scripts = redis as RedisWithScripts;
  }

  /** Records a failure; returns the source's failures in the window, this one included. */
  async recordFailure(login: string | null, src: string, now: number): Promise<number> {
    const member = `${now}:${process.pid}:${this.#seq++}`;
    const c = this.cfg;
    const n = await this.#call(() =>
      this.#scripts.mgRecordFailure(
        this.prefix,
        login ?? '',
        src,
        now,
        c.windowMs,
        member,
        c.pairMaxFailures,
        c.accountMaxFailures,
        c.lockMs,
        MAX_WINDOW_ENTRIES,
      ),
    );
    return Number(n);
  }

  /** Remembers the source as known to the account, and forgets its failures on it. */
  async recordSuccess(login: string, src: string, now: number): Promise<void> {
    await this.#call(() =>
      this.#scripts.mgRecordSuccess(this.prefix, login, src, now, this.cfg.knownSourceMs),
    );
  }

  /** Clears every lock and failure window of the account (bin/mailgate unlock). */
  async unlock(login: string): Promise<{ login: string; cleared: number }> {
    const l = normalizeLogin(login);
    const exists = await this.#call(() => this.redis.exists(`${this.prefix}account:${l}`));
    if (!exists) throw new RefusedError(`no account "${login}"`);
    const keys = [`${this.prefix}lock:acct:${l}`, `${this.prefix}fail:acct:${l}`];
    for (const pattern of [`${this.prefix}lock:pair:${l}:*`, `${this.prefix}fail:pair:${l}:*`]) {
      const glob = pattern.replace(/[?[\]\\]/g, '\\$&').replace(/\*(?!$)/g, '\\*');
      let cursor = '0';
      do {
        const [next, found] = await this.#call(() => this.redis.scan(cursor, 'MATCH', glob, 'COUNT', 1000));
        keys.push(...found);
        cursor = next;
      } while (cursor !== '0');
    }
    const cleared = await this.#call(() => this.redis.del(...keys));
    return { login: l, cleared };
  }

  async #call<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof RefusedError) throw err;
      throw new StoreUnavailableError(`redis: ${(err as Error).message}`, { cause: err });
    }
  }
}
