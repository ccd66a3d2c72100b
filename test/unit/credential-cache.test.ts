import { describe, expect, it } from 'vitest';
import type { Account } from '../../src/accounts/store.js';
import { createAuthenticator } from '../../src/auth/authenticator.js';
import {
  CredentialCache,
  type CredentialCacheConfig,
  type CredentialState,
  credentialStateOf,
} from '../../src/auth/credential-cache.js';
import { parseConfig } from '../../src/config/load.js';
import type { LockoutConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/observability/logger.js';
import { EMPTY_ROLLOUT } from '../../src/rollout/engine.js';

const CONFIG: CredentialCacheConfig = {
  ttlMs: 3_600_000,
  maxEntries: 100,
  negativeTtlMs: 60_000,
  maxNegativeEntries: 100,
};

function fakeClock(start = 1_000_000) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

const pw = (s: string) => Buffer.from(s, 'utf8');

const ALICE: CredentialState = {
  login: 'alice@example.jp',
  imap: { version: 3, hash: '$argon2id$v=19$m=64,t=1,p=1$aW1hcA$aW1hcC1oYXNo' },
  primary: { version: 1, hash: '$argon2id$v=19$m=64,t=1,p=1$cHJp$cHJpbWFyeS1oYXNo' },
};

describe('CredentialCache', () => {
  it('answers a remembered match until the TTL has passed, then misses', () => {
    const clock = fakeClock();
    const cache = new CredentialCache(CONFIG, clock.now);
    expect(cache.get(ALICE, pw('imap-pass'))).toBeUndefined();
    cache.set(ALICE, pw('imap-pass'), 'imap-only');
    expect(cache.get(ALICE, pw('imap-pass'))).toBe('imap-only');
    clock.advance(CONFIG.ttlMs - 1);
    expect(cache.get(ALICE, pw('imap-pass'))).toBe('imap-only');
    clock.advance(1);
    expect(cache.get(ALICE, pw('imap-pass'))).toBeUndefined();
    expect(cache.stats).toMatchObject({ hits: 2, misses: 2, entries: 0 });
  });

  it('misses once a credential version moves on (issue, revoke, set-primary)', () => {
    const cache = new CredentialCache(CONFIG, fakeClock().now);
    cache.set(ALICE, pw('imap-pass'), 'imap-only');
    cache.set(ALICE, pw('primary-pass'), 'primary');
    const reissued = { ...ALICE, imap: { ...ALICE.imap!, version: 4 } };
    expect(cache.get(reissued, pw('imap-pass'))).toBeUndefined();
    const newPrimary = { ...ALICE, primary: { ...ALICE.primary!, version: 2 } };
    expect(cache.get(newPrimary, pw('primary-pass'))).toBeUndefined();
    const revoked = { ...ALICE, imap: null };
    expect(cache.get(revoked, pw('imap-pass'))).toBeUndefined();
    expect(cache.get(ALICE, pw('imap-pass'))).toBe('imap-only');
  });

  it('misses when the stored hash differs at the same version (account removed and created again)', () => {
    const cache = new CredentialCache(CONFIG, fakeClock().now);
    cache.set(ALICE, pw('primary-pass'), 'primary');
    const recreated = {
      ...ALICE,
      primary: { version: 1, hash: '$argon2id$v=19$m=64,t=1,p=1$b3RoZXI$b3RoZXI' },
    };
    expect(cache.get(recreated, pw('primary-pass'))).toBeUndefined();
  });

  it('misses for another password', () => {
    const cache = new CredentialCache(CONFIG, fakeClock().now);
    cache.set(ALICE, pw('imap-pass'), 'imap-only');
    expect(cache.get(ALICE, pw('imap-pasS'))).toBeUndefined();
    expect(cache.get(ALICE, pw('imap-pass\0'))).toBeUndefined();
    expect(cache.get(ALICE, pw(''))).toBeUndefined();
  });

  it('is never shared across accounts, even with equal credentials and passwords', () => {
    const cache = new CredentialCache(CONFIG, fakeClock().now);
    cache.set(ALICE, pw('same-pass'), 'primary');
    expect(cache.get({ ...ALICE, login: 'bob@example.jp' }, pw('same-pass'))).toBeUndefined();
    // Length-prefixed fields: moving bytes between login and password cannot collide.
    cache.set({ ...ALICE, login: 'ab' }, pw('c'), 'primary');
    expect(cache.get({ ...ALICE, login: 'a' }, pw('bc'))).toBeUndefined();
  });

  it('holds at most maxEntries, dropping the least recently used first', () => {
    const cache = new CredentialCache({ ...CONFIG, maxEntries: 3 }, fakeClock().now);
    const user = (i: number): CredentialState => ({ ...ALICE, login: `user${i}` });
    for (let i = 0; i < 3; i++) cache.set(user(i), pw('p'), 'primary');
    expect(cache.get(user(0), pw('p'))).toBe('primary'); // user0 is now the most recent
    cache.set(user(3), pw('p'), 'primary');
    expect(cache.stats.entries).toBe(3);
    expect(cache.get(user(1), pw('p'))).toBeUndefined();
    expect(cache.get(user(0), pw('p'))).toBe('primary');
    expect(cache.get(user(3), pw('p'))).toBe('primary');
    for (let i = 4; i < 1000; i++) cache.set(user(i), pw('p'), 'primary');
    expect(cache.stats.entries).toBe(3);
  });

  it('remembers a wrong password for negativeTtlMs only, in its own bounded map', () => {
    const clock = fakeClock();
    const cache = new CredentialCache({ ...CONFIG, maxNegativeEntries: 2 }, clock.now);
    cache.set(ALICE, pw('good'), 'imap-only');
    cache.set(ALICE, pw('wrong'), 'none');
    expect(cache.get(ALICE, pw('wrong'))).toBe('none');
    expect(cache.stats.negativeHits).toBe(1);
    // A flood of wrong passwords pushes out only negative entries.
    for (let i = 0; i < 50; i++) cache.set(ALICE, pw(`guess${i}`), 'none');
    expect(cache.stats.negativeEntries).toBe(2);
    expect(cache.get(ALICE, pw('good'))).toBe('imap-only');
    cache.set(ALICE, pw('wrong'), 'none');
    clock.advance(CONFIG.negativeTtlMs);
    expect(cache.get(ALICE, pw('wrong'))).toBeUndefined();
    expect(cache.get(ALICE, pw('good'))).toBe('imap-only');
  });

  it('caches unknown accounts exactly as known ones (no hint that an account exists)', () => {
    const cache = new CredentialCache(CONFIG, fakeClock().now);
    const nobody = credentialStateOf(null, '  Nobody@Example.JP ');
    expect(nobody).toEqual({ login: 'nobody@example.jp', imap: null, primary: null });
    cache.set(nobody, pw('guess'), 'none');
    expect(cache.get(credentialStateOf(null, 'nobody@example.jp'), pw('guess'))).toBe('none');
  });

  it('does nothing with ttlMs 0, and keeps no negative entries with negativeTtlMs 0', () => {
    const off = new CredentialCache({ ...CONFIG, ttlMs: 0 }, fakeClock().now);
    off.set(ALICE, pw('p'), 'primary');
    expect(off.enabled).toBe(false);
    expect(off.get(ALICE, pw('p'))).toBeUndefined();
    const noNegative = new CredentialCache({ ...CONFIG, negativeTtlMs: 0 }, fakeClock().now);
    noNegative.set(ALICE, pw('wrong'), 'none');
    expect(noNegative.get(ALICE, pw('wrong'))).toBeUndefined();
  });

  it('keys depend on the per-process secret: two processes never share a key', () => {
    const a = new CredentialCache(CONFIG, fakeClock().now);
    const b = new CredentialCache(CONFIG, fakeClock().now);
    a.set(ALICE, pw('p'), 'primary');
    expect(a.get(ALICE, pw('p'))).toBe('primary');
    expect(b.get(ALICE, pw('p'))).toBeUndefined();
  });
});

/** The authenticator with in-memory stores and a hasher that counts verifications. */
function harness(opts: { cache?: Partial<CredentialCacheConfig> } = {}) {
  const clock = fakeClock(Date.UTC(2026, 0, 1));
  const account: Account = {
    login: 'alice@example.jp',
    aliases: [],
    primaryHash: 'H:primary-pass:1',
    imapHash: null,
    imapIssuedAt: null,
    upstreamUser: null,
    upstream: null,
    msisdn: null,
    domestic: null,
    exemptUntil: null,
    imapVersion: 0,
    primaryVersion: 0,
    createdAt: 0,
  };
  const accounts = new Map([[account.login, account]]);
  let verifications = 0;
  let failures = 0;
  let successRecords = 0;
  let knownAt: number | null = null;
  const hasher = {
    async verify(hash: string, password: string | Uint8Array) {
      verifications++;
      return hash.split(':')[1] === Buffer.from(password).toString('utf8');
    },
    async verifyDummy() {
      verifications++;
      return false as const;
    },
    async hash(password: string | Uint8Array) {
      return `H:${Buffer.from(password).toString('utf8')}:x`;
    },
    needsRehash: () => false,
  };
  const lockoutConfig: LockoutConfig = parseConfig({
    redis: { url: 'redis://127.0.0.1:1' },
    geo: { domesticCountries: ['JP'] },
  }).lockout;
  const cache = new CredentialCache({ ...CONFIG, ...opts.cache }, clock.now);
  const auth = createAuthenticator({
    accounts: {
      async lookupForLogin(name: string) {
        const a = accounts.get(name) ?? null;
        return {
          account: a ? structuredClone(a) : null,
          rollout: EMPTY_ROLLOUT,
          lockout: {
            sourceFailures: failures,
            pairLocked: false,
            accountLocked: false,
            knownSource: knownAt !== null,
            knownAt,
            pairFailures: failures > 0,
          },
        };
      },
      async replacePrimaryHash() {
        return false;
      },
    },
    lockout: {
      async recordFailure() {
        return ++failures;
      },
      async recordSuccess(_login: string, _src: string, now: number) {
        successRecords++;
        knownAt = now;
        failures = 0;
      },
    },
    lockoutConfig,
    rollout: { async record() {} },
    geo: { lookup: () => ({ country: 'JP', location: 'domestic', source: 'override' }) },
    hasher,
    notices: { queue() {} },
    log: createLogger('silent'),
    clock: clock.now,
    credentialCache: cache,
  });
  const login = (name: string, password: string) =>
    auth.authenticate({
      login: name,
      password: Buffer.from(password),
      protocol: 'imap',
      clientIp: '49.96.0.1',
      sessionId: 's',
    });
  return {
    account,
    clock,
    login,
    get verifications() {
      return verifications;
    },
    get failures() {
      return failures;
    },
    get successRecords() {
      return successRecords;
    },
    lockoutConfig,
    /** As the store's issue script does: a new hash and a bumped version. */
    issue(password: string) {
      account.imapHash = `H:${password}:${account.imapVersion + 1}`;
      account.imapVersion++;
    },
  };
}

describe('authenticator with the credential cache', () => {
  it('verifies a working password once per TTL, and decides exactly as without the cache', async () => {
    const h = harness();
    expect((await h.login('alice@example.jp', 'primary-pass')).kind).toBe('allow');
    expect(h.verifications).toBe(1);
    for (let i = 0; i < 5; i++) {
      const r = await h.login('alice@example.jp', 'primary-pass');
      expect(r).toMatchObject({ kind: 'allow', credential: 'primary', version: 0 });
    }
    expect(h.verifications).toBe(1);
    h.clock.advance(CONFIG.ttlMs);
    await h.login('alice@example.jp', 'primary-pass');
    expect(h.verifications).toBe(2);
  });

  it('an issued IMAP-only password makes the cached primary refused at once (rules.md R1), and the old IMAP-only one too (rules.md R4)', async () => {
    const h = harness();
    await h.login('alice@example.jp', 'primary-pass');
    h.issue('first-imap');
    expect(await h.login('alice@example.jp', 'primary-pass')).toMatchObject({
      kind: 'deny',
      reason: 'imap-password-required',
    });
    expect((await h.login('alice@example.jp', 'first-imap')).kind).toBe('allow');
    expect((await h.login('alice@example.jp', 'first-imap')).kind).toBe('allow');
    const before = h.verifications;
    h.issue('second-imap');
    expect(await h.login('alice@example.jp', 'first-imap')).toMatchObject({
      kind: 'deny',
      reason: 'bad-password',
    });
    expect(h.verifications).toBeGreaterThan(before); // a miss: verified against the new hashes
    expect((await h.login('alice@example.jp', 'second-imap')).kind).toBe('allow');
  });

  it('a repeated wrong password costs one round of verifications, yet every attempt counts toward lockout', async () => {
    const h = harness();
    for (let i = 0; i < 4; i++) {
      expect(await h.login('alice@example.jp', 'wrong')).toMatchObject({
        kind: 'deny',
        reason: 'bad-password',
      });
    }
    expect(h.verifications).toBe(2); // primary, then the dummy: match()'s cost for a refusal
    expect(h.failures).toBe(4);
    h.clock.advance(CONFIG.negativeTtlMs);
    await h.login('alice@example.jp', 'wrong');
    expect(h.verifications).toBe(4);
    expect(h.failures).toBe(5);
  });

  it('an unknown account costs the same as a known one, cached or not', async () => {
    const h = harness();
    await h.login('nobody@example.jp', 'wrong');
    expect(h.verifications).toBe(2);
    expect(await h.login('nobody@example.jp', 'wrong')).toMatchObject({ reason: 'unknown-account' });
    expect(h.verifications).toBe(2);
    expect(h.failures).toBe(2);
  });

  it('with ttlMs 0 every login verifies', async () => {
    const h = harness({ cache: { ttlMs: 0 } });
    await h.login('alice@example.jp', 'primary-pass');
    await h.login('alice@example.jp', 'primary-pass');
    expect(h.verifications).toBe(2);
  });
});

describe('authenticator: the known-source record', () => {
  it('is written on a first success, skipped while fresh and clean, written again when stale or after failures', async () => {
    const h = harness();
    const settle = () => new Promise((r) => setImmediate(r)); // the record is a background write
    await h.login('alice@example.jp', 'primary-pass');
    await settle();
    expect(h.successRecords).toBe(1);
    // A reconnecting client from a known source: one round trip (the lookup), no write.
    for (let i = 0; i < 3; i++) await h.login('alice@example.jp', 'primary-pass');
    await settle();
    expect(h.successRecords).toBe(1);
    // A failure on the pair: the next success must clear it.
    expect((await h.login('alice@example.jp', 'wrong')).kind).toBe('deny');
    await h.login('alice@example.jp', 'primary-pass');
    await settle();
    expect(h.successRecords).toBe(2);
    expect(h.failures).toBe(0);
    // Older than the refresh interval (min(1 h, knownSourceMs / 10)): refreshed.
    h.clock.advance(Math.min(3_600_000, h.lockoutConfig.knownSourceMs / 10));
    await h.login('alice@example.jp', 'primary-pass');
    await settle();
    expect(h.successRecords).toBe(3);
  });
});
