import type { Redis } from 'ioredis';
import type { Phase } from '../auth/policy.js';
import { NotFoundError, RefusedError, StoreUnavailableError, UsageError } from '../util/errors.js';

/**
 * Accounts, aliases, IMAP-only passwords and rollout flags in Redis.
 *
 * Keys (all under the configured prefix):
 *   account:<login>   hash: one account (fields below)
 *   alias:<alias>     string: the login an alias belongs to
 *   logins            set: every login, for counting and bulk work
 *   rollout           hash: overseas = phase, domesticAll = phase
 *
 * Login names and aliases are case-insensitive (stored lower-cased, NFC). The per-login read
 * is one Lua script, so a login costs one round trip whatever it needs.
 */

export interface Account {
  login: string;
  aliases: string[];
  /** PHC string of the primary (account-site) password; the gateway only verifies it (S14). */
  primaryHash: string | null;
  /** PHC string of the IMAP-only password (S1); the password itself is never stored. */
  imapHash: string | null;
  imapIssuedAt: number | null;
  /** User name at the mail store, if it differs from the login. */
  upstreamUser: string | null;
  /** HOST:PORT of this account's mail store, if not the configured servers. */
  upstream: string | null;
  msisdn: string | null;
  /** Domestic restriction phase set for this account (S8). */
  domesticPhase: Phase;
  /**
   * Bumped on every change of the IMAP-only password (issue, revoke), so caches and live sessions
   * opened with an older one can tell they are stale (S4).
   */
  imapVersion: number;
  /** Bumped when the primary password changes (S14). */
  primaryVersion: number;
  createdAt: number;
}

export interface RolloutState {
  overseas: Phase;
  /** Phase applied to every account (rollout domestic --all). */
  domesticAll: Phase;
}

export interface LoginLookup {
  account: Account | null;
  rollout: RolloutState;
}

const PHASES: readonly Phase[] = ['off', 'warn', 'enforce'];

export function normalizeLogin(name: string): string {
  return name.normalize('NFC').trim().toLowerCase();
}

/** What the CLI and the API accept as a login or alias: printable, no spaces, bounded. */
export function checkLoginName(name: string, what = 'login'): string {
  const n = normalizeLogin(name);
  if (n.length === 0 || n.length > 255 || /[\s\p{Cc}"\\]/u.test(n)) {
    throw new UsageError(
      `${what} "${name}" is not valid: 1-255 characters, no spaces, quotes or control characters`,
    );
  }
  return n;
}

const LOOKUP_SCRIPT = `
local p = ARGV[1]
local name = ARGV[2]
local acct = redis.call('HGETALL', p .. 'account:' .. name)
if #acct == 0 then
  local login = redis.call('GET', p .. 'alias:' .. name)
  if login then acct = redis.call('HGETALL', p .. 'account:' .. login) end
end
return { acct, redis.call('HGETALL', p .. 'rollout') }
`;

const ISSUE_SCRIPT = `
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return -1 end
if ARGV[3] == '1' and redis.call('HEXISTS', key, 'imapHash') == 1 then return 0 end
redis.call('HSET', key, 'imapHash', ARGV[1], 'imapIssuedAt', ARGV[2])
return redis.call('HINCRBY', key, 'imapVersion', 1)
`;

const REVOKE_SCRIPT = `
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return -1 end
local n = redis.call('HDEL', key, 'imapHash', 'imapIssuedAt')
if n > 0 then redis.call('HINCRBY', key, 'imapVersion', 1) end
return n
`;

// Claims the login and every alias atomically, or nothing.
const CREATE_SCRIPT = `
local p = ARGV[1]
local login = ARGV[2]
local aliases = cjson.decode(ARGV[3])
if redis.call('EXISTS', p .. 'account:' .. login) == 1 then return 'exists' end
if redis.call('EXISTS', p .. 'alias:' .. login) == 1 then return 'taken' end
for _, a in ipairs(aliases) do
  if redis.call('EXISTS', p .. 'alias:' .. a) == 1 or redis.call('EXISTS', p .. 'account:' .. a) == 1 then
    return 'taken'
  end
end
redis.call('HSET', p .. 'account:' .. login, unpack(ARGV, 4))
redis.call('SADD', p .. 'logins', login)
for _, a in ipairs(aliases) do redis.call('SET', p .. 'alias:' .. a, login) end
return 'ok'
`;

type RedisWithScripts = Redis & {
  mgRevoke(key: string): Promise<number>;
  mgCreate(
    prefix: string,
    login: string,
    aliases: string,
    ...fields: string[]
  ): Promise<'ok' | 'exists' | 'taken'>;
  mgLookup(prefix: string, name: string): Promise<[string[], string[]]>;
  mgIssue(key: string, hash: string, at: string, ifAbsent: string): Promise<number>;
};

export class AccountStore {
  readonly #redis: RedisWithScripts;
  readonly #p: string;

  constructor(redis: Redis, prefix: string) {
    this.#p = prefix;
    if (!('mgLookup' in redis)) {
      redis.defineCommand('mgLookup', { numberOfKeys: 0, lua: LOOKUP_SCRIPT });
      redis.defineCommand('mgIssue', { numberOfKeys: 1, lua: ISSUE_SCRIPT });
      redis.defineCommand('mgRevoke', { numberOfKeys: 1, lua: REVOKE_SCRIPT });
      redis.defineCommand('mgCreate', { numberOfKeys: 0, lua: CREATE_SCRIPT });
    }
    this.#redis = redis as RedisWithScripts;
  }

  #key(login: string): string {
    return `${this.#p}account:${login}`;
  }

  /** The account a login name or alias belongs to, and the rollout state, in one round trip. */
  async lookupForLogin(name: string): Promise<LoginLookup> {
    const [acct, rollout] = await this.#call(() => this.#redis.mgLookup(this.#p, normalizeLogin(name)));
    return { account: acct.length ? parseAccount(pairs(acct)) : null, rollout: parseRollout(pairs(rollout)) };
  }

  async get(name: string): Promise<Account | null> {
    return (await this.lookupForLogin(name)).account;
  }

  async require(name: string): Promise<Account> {
    const account = await this.get(name);
    if (!account) throw new NotFoundError(`no account "${name}"`);
    return account;
  }

  async create(input: {
    login: string;
    aliases?: readonly string[];
    primaryHash?: string | null;
    msisdn?: string | null;
    upstreamUser?: string | null;
    upstream?: string | null;
    now: number;
  }): Promise<Account> {
    const login = checkLoginName(input.login);
    const aliases = [...new Set((input.aliases ?? []).map((a) => checkLoginName(a, 'alias')))].filter(
      (a) => a !== login,
    );
    const account: Account = {
      login,
      aliases,
      primaryHash: input.primaryHash ?? null,
      imapHash: null,
      imapIssuedAt: null,
      upstreamUser: input.upstreamUser ?? null,
      upstream: input.upstream ?? null,
      msisdn: input.msisdn ?? null,
      domesticPhase: 'off',
      imapVersion: 0,
      primaryVersion: 0,
      createdAt: input.now,
    };
    const fields = Object.entries(serializeAccount(account)).flat();
    const r = await this.#call(() =>
      this.#redis.mgCreate(this.#p, login, JSON.stringify(aliases), ...fields),
    );
    if (r === 'exists') throw new RefusedError(`account "${login}" already exists`);
    if (r === 'taken') throw new RefusedError('the login or an alias is already used by another account');
    return account;
  }

  /**
   * Stores a new IMAP-only password hash (S3, S4). With ifAbsent, does nothing when one
   * exists (S5). Returns false when nothing was stored.
   */
  async setImapHash(login: string, hash: string, now: number, ifAbsent: boolean): Promise<boolean> {
    const r = await this.#call(() =>
      this.#redis.mgIssue(this.#key(normalizeLogin(login)), hash, String(now), ifAbsent ? '1' : '0'),
    );
    if (r === -1) throw new NotFoundError(`no account "${login}"`);
    return r > 0;
  }

  /** Returns false when the account had no IMAP-only password. */
  async revokeImapHash(login: string): Promise<boolean> {
    const r = await this.#call(() => this.#redis.mgRevoke(this.#key(normalizeLogin(login))));
    if (r === -1) throw new NotFoundError(`no account "${login}"`);
    return r > 0;
  }

  async setDomesticPhase(
    logins: readonly string[],
    phase: Phase,
  ): Promise<{ changed: string[]; missing: string[] }> {
    const names = logins.map((l) => normalizeLogin(l));
    const existing = await this.#call(() => {
      const tx = this.#redis.pipeline();
      for (const n of names) tx.exists(this.#key(n));
      return tx.exec();
    });
    const missing = names.filter((_, i) => existing?.[i]?.[1] !== 1);
    if (missing.length) return { changed: [], missing };
    await this.#call(() => {
      const tx = this.#redis.multi();
      for (const n of names) tx.hset(this.#key(n), 'domesticPhase', phase);
      return tx.exec();
    });
    return { changed: names, missing: [] };
  }

  async getRollout(): Promise<RolloutState> {
    return parseRollout(
      pairs(await this.#call(() => this.#redis.hgetall(`${this.#p}rollout`).then(flatten))),
    );
  }

  async setRollout(patch: Partial<RolloutState>): Promise<RolloutState> {
    await this.#call(() => this.#redis.hset(`${this.#p}rollout`, patch));
    return this.getRollout();
  }

  async countAccounts(): Promise<number> {
    return this.#call(() => this.#redis.scard(`${this.#p}logins`));
  }

  async #call<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof UsageError || err instanceof RefusedError) throw err;
      throw new StoreUnavailableError(`redis: ${(err as Error).message}`, { cause: err });
    }
  }
}

function flatten(obj: Record<string, string>): string[] {
  return Object.entries(obj).flat();
}

function pairs(flat: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) m.set(flat[i]!, flat[i + 1]!);
  return m;
}

function phase(v: string | undefined): Phase {
  return PHASES.includes(v as Phase) ? (v as Phase) : 'off';
}

function num(v: string | undefined): number | null {
  if (v === undefined || v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

function parseAccount(f: Map<string, string>): Account {
  return {
    login: f.get('login') ?? '',
    aliases: f.get('aliases') ? (JSON.parse(f.get('aliases')!) as string[]) : [],
    primaryHash: f.get('primaryHash') || null,
    imapHash: f.get('imapHash') || null,
    imapIssuedAt: num(f.get('imapIssuedAt')),
    upstreamUser: f.get('upstreamUser') || null,
    upstream: f.get('upstream') || null,
    msisdn: f.get('msisdn') || null,
    domesticPhase: phase(f.get('domesticPhase')),
    imapVersion: num(f.get('imapVersion')) ?? 0,
    primaryVersion: num(f.get('primaryVersion')) ?? 0,
    createdAt: num(f.get('createdAt')) ?? 0,
  };
}

function serializeAccount(a: Account): Record<string, string> {
  const out: Record<string, string> = {
    login: a.login,
    aliases: JSON.stringify(a.aliases),
    domesticPhase: a.domesticPhase,
    imapVersion: String(a.imapVersion),
    primaryVersion: String(a.primaryVersion),
    createdAt: String(a.createdAt),
  };
  if (a.primaryHash) out.primaryHash = a.primaryHash;
  if (a.imapHash) out.imapHash = a.imapHash;
  if (a.imapIssuedAt !== null) out.imapIssuedAt = String(a.imapIssuedAt);
  if (a.upstreamUser) out.upstreamUser = a.upstreamUser;
  if (a.upstream) out.upstream = a.upstream;
  if (a.msisdn) out.msisdn = a.msisdn;
  return out;
}

function parseRollout(f: Map<string, string>): RolloutState {
  return { overseas: phase(f.get('overseas')), domesticAll: phase(f.get('domesticAll')) };
}
