import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { LockoutFacts } from '../auth/lockout.js';
import { parseRolloutDoc, parseRule, type RolloutDoc, type Rule } from '../rollout/engine.js';
import { NotFoundError, RefusedError, StoreUnavailableError, UsageError } from '../util/errors.js';
import type { ImportOutcome, ImportRecord } from './import.js';

/**
 * Accounts, aliases, IMAP-only passwords and rollout flags in Redis.
 *
 * Keys (all under the configured prefix):
 *   account:<login>   hash: one account (fields below)
 *   alias:<alias>     string: the login an alias belongs to
 *   logins            set: every login, for counting and bulk work
 *   import:<run>      hash: login -> file line, while an account import runs (expires in a day)
 *   rollout:doc       string: the rollout rules (JSON, see rollout/engine.ts)
 *   rollout:seq       counter: sequence number of the next rollout rule
 *   fail:src:<src>    zset: failure times per client source (IPv4, or IPv6 /64)
 *   fail:pair:<login>:<src>, fail:acct:<login>   zsets: failure times
 *   lock:pair:<login>:<src>, lock:acct:<login>   strings with expiry: locks (rules.md R13)
 *   known:<login>     zset: sources with a successful login, by time
 *   seen:<login>, notify:*   login-notification state and the SMS outbox (notify/outbox.ts)
 *   events            pub/sub channel: credential changes, so gateways end stale sessions
 *
 * Login names and aliases are case-insensitive (stored lower-cased, NFC). The per-login read
 * is one Lua script, so a login costs one round trip whatever it needs.
 */

export interface Account {
  login: string;
  aliases: string[];
  /** PHC string of the primary (account-site) password; the gateway only verifies it (rules.md R14). */
  primaryHash: string | null;
  /** PHC string of the IMAP-only password (rules.md R1); the password itself is never stored. */
  imapHash: string | null;
  imapIssuedAt: number | null;
  /** User name at the mail store, if it differs from the login. */
  upstreamUser: string | null;
  /** HOST:PORT of this account's mail store, if not the configured servers. */
  upstream: string | null;
  msisdn: string | null;
  /** Language of SMS notices (ja | en); absent: notify.defaults.lang. */
  lang?: 'ja' | 'en';
  /** IANA time zone for quiet hours and dates in SMS notices; absent: notify.defaults.tz. */
  tz?: string;
  /** Domestic restriction rule set for this account by login or file (rules.md R8); waves are global. */
  domestic: Rule | null;
  /** Restrictions do not apply until this time (a travelling subscriber without a password). */
  exemptUntil: number | null;
  /**
   * Bumped on every change of the IMAP-only password (issue, revoke), so caches and live sessions
   * opened with an older one can tell they are stale (rules.md R4).
   */
  imapVersion: number;
  /** Bumped when the primary password changes (rules.md R14). */
  primaryVersion: number;
  createdAt: number;
}

export interface LoginLookup {
  account: Account | null;
  rollout: RolloutDoc;
  lockout: LockoutFacts;
}

/** A message on the events channel: this credential of this account changed. */
export interface CredentialEvent {
  type: 'credential';
  login: string;
  credential: 'imap-only' | 'primary' | 'all';
  version: number;
}

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

// Everything one login needs, in one round trip: the account (by login or alias), the rollout
// rules, and the failure counts and locks for this client source.
const LOOKUP_SCRIPT = `
local p, name, src = ARGV[1], ARGV[2], ARGV[3]
local since = tonumber(ARGV[4])
local login = name
local acct = redis.call('HGETALL', p .. 'account:' .. name)
if #acct == 0 then
  local l = redis.call('GET', p .. 'alias:' .. name)
  if l then
    login = l
    acct = redis.call('HGETALL', p .. 'account:' .. l)
  end
end
local srcFails = redis.call('ZCOUNT', p .. 'fail:src:' .. src, since, '+inf')
local pairLocked, acctLocked, known, pairFails = 0, 0, false, 0
if #acct > 0 then
  pairLocked = redis.call('EXISTS', p .. 'lock:pair:' .. login .. ':' .. src)
  acctLocked = redis.call('EXISTS', p .. 'lock:acct:' .. login)
  known = redis.call('ZSCORE', p .. 'known:' .. login, src)
  pairFails = redis.call('EXISTS', p .. 'fail:pair:' .. login .. ':' .. src)
end
return { acct, redis.call('GET', p .. 'rollout:doc') or '', srcFails, pairLocked, acctLocked, known or '', pairFails }
`;

// Every credential change announces itself in the same atomic step (see CredentialEvent).
const PUBLISH_LUA = `
local function announce(p, login, credential, version)
  redis.call('PUBLISH', p .. 'events', cjson.encode({ type = 'credential', login = login, credential = credential, version = version }))
end
`;

const ISSUE_SCRIPT = `${PUBLISH_LUA}
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return -1 end
if ARGV[3] == '1' and redis.call('HEXISTS', key, 'imapHash') == 1 then return 0 end
redis.call('HSET', key, 'imapHash', ARGV[1], 'imapIssuedAt', ARGV[2])
local v = redis.call('HINCRBY', key, 'imapVersion', 1)
-- 'all': sessions on the old IMAP-only password and, now that one exists, on the primary (rules.md R1)
announce(ARGV[4], ARGV[5], 'all', v)
return v
`;

const REVOKE_SCRIPT = `${PUBLISH_LUA}
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return -1 end
local n = redis.call('HDEL', key, 'imapHash', 'imapIssuedAt')
if n > 0 then announce(ARGV[1], ARGV[2], 'imap-only', redis.call('HINCRBY', key, 'imapVersion', 1)) end
return n
`;

// Sets (or with an empty value removes) one field of an existing account; 0 if there is none.
const SET_FIELD_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
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

// One account of an import (see accounts/import.ts). Every check comes before the first write,
// so a refused line writes nothing (a Redis script is atomic but has no rollback). ARGV: prefix,
// run key, line, now, login, aliases (JSON array, '' = not given), primary hash ('' = not
// given), then name/value pairs of the text fields ('' clears). Touches no other field.
const IMPORT_SCRIPT = `${PUBLISH_LUA}
local p, run, line, now, login, aliasesJson, primary = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local key = p .. 'account:' .. login
local earlier = redis.call('HGET', run, login)
if earlier then return { 'rejected', 'duplicate', earlier } end
local owner = redis.call('GET', p .. 'alias:' .. login)
if owner then return { 'rejected', 'login-taken', owner } end
local aliases, owned = nil, {}
if aliasesJson ~= '' then
  aliases = cjson.decode(aliasesJson)
  for _, a in ipairs(aliases) do
    if redis.call('EXISTS', p .. 'account:' .. a) == 1 then return { 'rejected', 'alias-taken', a, a } end
    local o = redis.call('GET', p .. 'alias:' .. a)
    if o and o ~= login then return { 'rejected', 'alias-taken', a, o } end
    owned[a] = o == login
  end
end
redis.call('HSET', run, login, line)
-- One read of everything the line may change: login (present in every account), aliases,
-- primaryHash, then the text fields given.
local fields = { 'login', 'aliases', 'primaryHash' }
for i = 8, #ARGV, 2 do fields[#fields + 1] = ARGV[i] end
local cur = redis.call('HMGET', key, unpack(fields))
if not cur[1] then
  local f = { 'login', login, 'aliases', aliasesJson ~= '' and aliasesJson or '[]', 'imapVersion', '0',
    'primaryVersion', '0', 'createdAt', now }
  if primary ~= '' then f[#f + 1] = 'primaryHash'; f[#f + 1] = primary end
  for i = 8, #ARGV, 2 do
    if ARGV[i + 1] ~= '' then f[#f + 1] = ARGV[i]; f[#f + 1] = ARGV[i + 1] end
  end
  redis.call('HSET', key, unpack(f))
  redis.call('SADD', p .. 'logins', login)
  for _, a in ipairs(aliases or {}) do redis.call('SET', p .. 'alias:' .. a, login) end
  return { 'created' }
end
local changed = {}
for i = 8, #ARGV, 2 do
  local old = cur[4 + (i - 8) / 2]
  if ARGV[i + 1] == '' then
    if old then redis.call('HDEL', key, ARGV[i]); changed[#changed + 1] = ARGV[i] end
  elseif old ~= ARGV[i + 1] then
    redis.call('HSET', key, ARGV[i], ARGV[i + 1]); changed[#changed + 1] = ARGV[i]
  end
end
if aliases then
  local ok, old = pcall(cjson.decode, cur[2] or '[]')
  if not ok or type(old) ~= 'table' then old = {} end
  local want, had, moved = {}, {}, false
  for _, a in ipairs(aliases) do want[a] = true end
  for _, a in ipairs(old) do
    had[a] = true
    if not want[a] then
      moved = true
      if redis.call('GET', p .. 'alias:' .. a) == login then redis.call('DEL', p .. 'alias:' .. a) end
    end
  end
  for _, a in ipairs(aliases) do
    if not had[a] then moved = true end
    if not owned[a] then redis.call('SET', p .. 'alias:' .. a, login); moved = true end
  end
  if moved then redis.call('HSET', key, 'aliases', aliasesJson); changed[#changed + 1] = 'aliases' end
end
if primary ~= '' and cur[3] ~= primary then
  redis.call('HSET', key, 'primaryHash', primary)
  announce(p, login, 'primary', redis.call('HINCRBY', key, 'primaryVersion', 1))
  changed[#changed + 1] = 'primaryHash'
end
redis.call('SADD', p .. 'logins', login)
if #changed == 0 then return { 'unchanged' } end
return { 'updated', unpack(changed) }
`;

// Deletes an account, the aliases it owns and its place in the logins set; announces it so
// that gateways end its sessions. Refuses an alias (returns its owner): removal takes a login.
const REMOVE_SCRIPT = `${PUBLISH_LUA}
local p, login = ARGV[1], ARGV[2]
local key = p .. 'account:' .. login
if redis.call('EXISTS', key) == 0 then return { 'missing', redis.call('GET', p .. 'alias:' .. login) or '' } end
local ok, aliases = pcall(cjson.decode, redis.call('HGET', key, 'aliases') or '[]')
if not ok or type(aliases) ~= 'table' then aliases = {} end
local freed = {}
for _, a in ipairs(aliases) do
  if redis.call('GET', p .. 'alias:' .. a) == login then
    redis.call('DEL', p .. 'alias:' .. a)
    freed[#freed + 1] = a
  end
end
redis.call('DEL', key)
redis.call('SREM', p .. 'logins', login)
-- A login created again later starts without this one's known sources and account lock
-- (per-source pair keys expire with their window).
redis.call('DEL', p .. 'known:' .. login, p .. 'lock:acct:' .. login, p .. 'fail:acct:' .. login, p .. 'seen:' .. login)
announce(p, login, 'all', 0)
return { 'removed', unpack(freed) }
`;

// set-primary (rules.md R14): a new primary hash, effective from the next login; bumps primaryVersion
// and announces it. Returns -1 for no account, 0 when the hash is the stored one.
const SET_PRIMARY_SCRIPT = `${PUBLISH_LUA}
local p, login, hash = ARGV[1], ARGV[2], ARGV[3]
local key = p .. 'account:' .. login
if redis.call('EXISTS', key) == 0 then return -1 end
if redis.call('HGET', key, 'primaryHash') == hash then return 0 end
redis.call('HSET', key, 'primaryHash', hash)
local v = redis.call('HINCRBY', key, 'primaryVersion', 1)
announce(p, login, 'primary', v)
return v
`;

// Rehash after a login (same password, better hash): only if the stored hash is still the one
// that was verified, so that a concurrent set-primary wins. No version bump, no announcement:
// the password did not change.
const REPLACE_PRIMARY_SCRIPT = `
if redis.call('HGET', KEYS[1], 'primaryHash') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'primaryHash', ARGV[2])
return 1
`;

type RedisWithScripts = Redis & {
  mgRevoke(key: string, prefix: string, login: string): Promise<number>;
  mgCreate(
    prefix: string,
    login: string,
    aliases: string,
    ...fields: string[]
  ): Promise<'ok' | 'exists' | 'taken'>;
  mgLookup(
    prefix: string,
    name: string,
    src: string,
    since: number,
  ): Promise<[string[], string, number, number, number, string, number]>;
  mgIssue(
    key: string,
    hash: string,
    at: string,
    ifAbsent: string,
    prefix: string,
    login: string,
  ): Promise<number>;
  mgRemove(prefix: string, login: string): Promise<string[]>;
  mgSetPrimary(prefix: string, login: string, hash: string): Promise<number>;
  mgReplacePrimary(key: string, expected: string, hash: string): Promise<number>;
};

/** The pipeline form of the import script (ioredis adds defined commands to pipelines too). */
type ImportPipeline = { mgImport(...args: string[]): unknown };

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
      redis.defineCommand('mgImport', { numberOfKeys: 0, lua: IMPORT_SCRIPT });
      redis.defineCommand('mgRemove', { numberOfKeys: 0, lua: REMOVE_SCRIPT });
      redis.defineCommand('mgSetPrimary', { numberOfKeys: 0, lua: SET_PRIMARY_SCRIPT });
      redis.defineCommand('mgReplacePrimary', { numberOfKeys: 1, lua: REPLACE_PRIMARY_SCRIPT });
    }
    this.#redis = redis as RedisWithScripts;
  }

  #key(login: string): string {
    return `${this.#p}account:${login}`;
  }

  /**
   * The account a login name or alias belongs to, the rollout rules and the lockout facts for
   * this client source, in one round trip. `since`: start of the failure-counting window;
   * `knownSince`: a source whose last recorded success is older is not known (knownSourceMs).
   */
  async lookupForLogin(name: string, src = '-', since = 0, knownSince = 0): Promise<LoginLookup> {
    const [acct, rollout, srcFails, pairLocked, acctLocked, known, pairFails] = await this.#call(() =>
      this.#redis.mgLookup(this.#p, normalizeLogin(name), src, since),
    );
    const knownAt = known === '' ? null : Number(known);
    return {
      account: acct.length ? parseAccount(pairs(acct)) : null,
      rollout: parseRolloutDoc(rollout),
      lockout: {
        sourceFailures: Number(srcFails),
        pairLocked: pairLocked === 1,
        accountLocked: acctLocked === 1,
        knownSource: knownAt !== null && knownAt >= knownSince,
        knownAt,
        pairFailures: pairFails === 1,
      },
    };
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
    lang?: 'ja' | 'en' | null;
    tz?: string | null;
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
      ...(input.lang ? { lang: input.lang } : {}),
      ...(input.tz ? { tz: input.tz } : {}),
      domestic: null,
      exemptUntil: null,
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
   * Stores a new IMAP-only password hash (rules.md R3, R4). With ifAbsent, does nothing when one
   * exists (rules.md R5). Returns false when nothing was stored.
   */
  async setImapHash(login: string, hash: string, now: number, ifAbsent: boolean): Promise<boolean> {
    const r = await this.#call(() =>
      this.#redis.mgIssue(
        this.#key(normalizeLogin(login)),
        hash,
        String(now),
        ifAbsent ? '1' : '0',
        this.#p,
        normalizeLogin(login),
      ),
    );
    if (r === -1) throw new NotFoundError(`no account "${login}"`);
    return r > 0;
  }

  /** Returns false when the account had no IMAP-only password. */
  async revokeImapHash(login: string): Promise<boolean> {
    const r = await this.#call(() =>
      this.#redis.mgRevoke(this.#key(normalizeLogin(login)), this.#p, normalizeLogin(login)),
    );
    if (r === -1) throw new NotFoundError(`no account "${login}"`);
    return r > 0;
  }

  /**
   * Sets the explicit domestic rule of each account (rollout domestic --login/--users). All or
   * nothing: an unknown login changes no account.
   */
  async setDomesticRule(
    logins: readonly string[],
    rule: Rule,
  ): Promise<{ changed: string[]; missing: string[] }> {
    const names = [...new Set(logins.map((l) => normalizeLogin(l)))];
    const existing = await this.#call(() => {
      const tx = this.#redis.pipeline();
      for (const n of names) tx.exists(this.#key(n));
      return tx.exec();
    });
    const missing = names.filter((_, i) => existing?.[i]?.[1] !== 1);
    if (missing.length) return { changed: [], missing };
    const value = JSON.stringify(rule);
    await this.#call(() => {
      const tx = this.#redis.multi();
      for (const n of names) tx.hset(this.#key(n), 'domestic', value);
      return tx.exec();
    });
    return { changed: names, missing: [] };
  }

  /** Exempts an account from the restrictions until `until` (epoch ms); 0 ends the exemption. */
  async setExemptUntil(login: string, until: number): Promise<void> {
    const r = await this.#call(() =>
      this.#redis.eval(
        SET_FIELD_SCRIPT,
        1,
        this.#key(normalizeLogin(login)),
        'exemptUntil',
        until > 0 ? String(until) : '',
      ),
    );
    if (r === 0) throw new NotFoundError(`no account "${login}"`);
  }

  /** Calls `fn` for every account, reading them in pipelined batches (for status and audits). */
  async forEachAccount(fn: (a: Account) => void, batch = 1_000): Promise<void> {
    let cursor = '0';
    do {
      const [next, logins] = await this.#call(() =>
        this.#redis.sscan(`${this.#p}logins`, cursor, 'COUNT', batch),
      );
      cursor = next;
      const rows = await this.#call(() => {
        const p = this.#redis.pipeline();
        for (const l of logins) p.hgetall(this.#key(l));
        return p.exec();
      });
      for (const [, value] of rows ?? []) {
        const fields = value as Record<string, string> | null;
        if (fields && Object.keys(fields).length) parseAccountRecord(fields, fn);
      }
    } while (cursor !== '0');
  }

  /**
   * Calls `fn` with every account, a batch at a time, awaiting it before reading the next batch:
   * memory stays bounded by one batch however many accounts there are.
   */
  async forEachAccountBatch(fn: (accounts: Account[]) => Promise<void>, batch = 1_000): Promise<void> {
    let cursor = '0';
    do {
      const [next, logins] = await this.#call(() =>
        this.#redis.sscan(`${this.#p}logins`, cursor, 'COUNT', batch),
      );
      cursor = next;
      const accounts = (await this.getMany(logins)).filter((a): a is Account => a !== null);
      if (accounts.length) await fn(accounts);
    } while (cursor !== '0');
  }

  /** Accounts by login (not alias), in one pipeline; null where there is none. */
  async getMany(logins: readonly string[]): Promise<Array<Account | null>> {
    if (logins.length === 0) return [];
    const rows = await this.#call(() => {
      const p = this.#redis.pipeline();
      for (const l of logins) p.hgetall(this.#key(normalizeLogin(l)));
      return p.exec();
    });
    return logins.map((_, i) => {
      const fields = rows?.[i]?.[1] as Record<string, string> | null | undefined;
      return fields && Object.keys(fields).length ? parseAccount(new Map(Object.entries(fields))) : null;
    });
  }

  /** Starts an import run; its key remembers the line that imported each login (duplicates). */
  async beginImport(): Promise<string> {
    const run = `${this.#p}import:${randomUUID()}`;
    await this.#call(() => this.#redis.multi().hset(run, '', '').expire(run, IMPORT_RUN_TTL_S).exec());
    return run;
  }

  async endImport(run: string): Promise<void> {
    await this.#call(() => this.#redis.unlink(run));
  }

  /** Applies a batch of import records in one pipeline, one atomic script each, in order. */
  async importBatch(run: string, records: readonly ImportRecord[], now: number): Promise<ImportOutcome[]> {
    const replies = await this.#call(() => {
      const pipe = this.#redis.pipeline();
      const scripts = pipe as unknown as ImportPipeline;
      for (const r of records) {
        const args = [
          this.#p,
          run,
          String(r.line),
          String(now),
          r.login,
          r.aliases ? JSON.stringify(r.aliases) : '',
          r.primaryHash ?? '',
        ];
        for (const f of ['msisdn', 'upstreamUser', 'upstream', 'lang', 'tz'] as const) {
          const v = r[f];
          if (v !== undefined) args.push(f, v ?? '');
        }
        scripts.mgImport(...args);
      }
      return pipe.exec();
    });
    return records.map((rec, i) => {
      const [err, reply] = replies?.[i] ?? [new Error('no reply')];
      if (err) throw new StoreUnavailableError(`redis: line ${rec.line}: ${err.message}`, { cause: err });
      return importOutcome(reply as string[]);
    });
  }

  /** Deletes an account and frees its aliases. Takes the login itself, not an alias. */
  async remove(name: string): Promise<{ login: string; aliases: string[] }> {
    const login = normalizeLogin(name);
    const [status, ...rest] = await this.#call(() => this.#redis.mgRemove(this.#p, login));
    if (status !== 'removed') {
      const owner = rest[0];
      throw new NotFoundError(
        owner ? `"${login}" is an alias of "${owner}"; remove takes the login` : `no account "${login}"`,
      );
    }
    return { login, aliases: rest };
  }

  /** Sets the primary hash (rules.md R14). Returns the new primaryVersion, or null when it was the stored hash. */
  async setPrimaryHash(name: string, hash: string): Promise<number | null> {
    const login = normalizeLogin(name);
    const r = await this.#call(() => this.#redis.mgSetPrimary(this.#p, login, hash));
    if (r === -1) throw new NotFoundError(`no account "${login}"`);
    return r === 0 ? null : r;
  }

  /**
   * Replaces the primary hash by a rehash of the same password (PasswordHasher.needsRehash),
   * if it is still `expectedOldHash`. False when it changed meanwhile or the account is gone.
   */
  async replacePrimaryHash(login: string, expectedOldHash: string, newHash: string): Promise<boolean> {
    const r = await this.#call(() =>
      this.#redis.mgReplacePrimary(this.#key(normalizeLogin(login)), expectedOldHash, newHash),
    );
    return r === 1;
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

/** An import run key outlives a crashed import by this much, then Redis drops it. */
const IMPORT_RUN_TTL_S = 86_400;

function importOutcome(reply: string[]): ImportOutcome {
  const [kind, reason = '', a = '', b = ''] = reply;
  switch (kind) {
    case 'created':
    case 'unchanged':
      return { kind };
    case 'updated':
      return { kind, fields: reply.slice(1) };
    case 'rejected':
      if (reason === 'duplicate') return { kind, reason, message: `the login is already on line ${a}` };
      if (reason === 'login-taken') return { kind, reason, message: `the login is an alias of "${a}"` };
      return {
        kind,
        reason: 'alias-taken',
        message: a === b ? `alias "${a}" is the login of another account` : `alias "${a}" belongs to "${b}"`,
      };
    default:
      throw new StoreUnavailableError(`redis: unexpected import reply ${JSON.stringify(reply)}`);
  }
}

function pairs(flat: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) m.set(flat[i]!, flat[i + 1]!);
  return m;
}

function num(v: string | undefined): number | null {
  if (v === undefined || v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

function parseAccountRecord(fields: Record<string, string>, fn: (a: Account) => void): void {
  fn(parseAccount(new Map(Object.entries(fields))));
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
    ...(f.get('lang') === 'ja' || f.get('lang') === 'en' ? { lang: f.get('lang') as 'ja' | 'en' } : {}),
    ...(f.get('tz') ? { tz: f.get('tz')! } : {}),
    domestic: parseRule(f.get('domestic')),
    exemptUntil: num(f.get('exemptUntil')),
    imapVersion: num(f.get('imapVersion')) ?? 0,
    primaryVersion: num(f.get('primaryVersion')) ?? 0,
    createdAt: num(f.get('createdAt')) ?? 0,
  };
}

function serializeAccount(a: Account): Record<string, string> {
  const out: Record<string, string> = {
    login: a.login,
    aliases: JSON.stringify(a.aliases),
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
  if (a.lang) out.lang = a.lang;
  if (a.tz) out.tz = a.tz;
  if (a.domestic) out.domestic = JSON.stringify(a.domestic);
  if (a.exemptUntil !== null) out.exemptUntil = String(a.exemptUntil);
  return out;
}
