import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { loginFrom } from '../support/raw-client.js';

const JAPAN = '49.96.0.1';

let redis: RedisServer;
let dovecot: DovecotServer;
/** Two gateways on one Redis: the cache is per process, invalidation must reach both. */
let a: TestGateway;
let b: TestGateway;

/** The credential cache's counters of one gateway, from its metrics registry. */
async function cacheLookups(t: TestGateway): Promise<Record<string, number>> {
  const metric = await t.gateway.metrics.registry
    .getSingleMetric('mailgate_credential_cache_lookups_total')
    ?.get();
  return Object.fromEntries((metric?.values ?? []).map((v) => [String(v.labels.result), v.value]));
}

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis({ appendOnly: false }),
    startDovecot({ users: [{ user: 'haruka', password: 'store-secret' }] }),
  ]);
  a = await startTestGateway({ redis, dovecot, keyPrefix: 'cc:' });
  b = await startTestGateway({ redis, dovecot, keyPrefix: 'cc:' });
  await a.ops.addAccount({
    login: 'haruka@example.jp',
    primaryPassword: 'primary-1',
    upstreamUser: 'haruka',
  });
});

afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await Promise.all([dovecot?.stop(), redis?.stop()]);
});

describe('credential cache (passwords.cache)', () => {
  it('answers a repeated login from the cache', async () => {
    const before = await cacheLookups(a);
    expect(await loginFrom(a.port('none'), JAPAN, 'haruka@example.jp', 'primary-1')).toMatch(/^a OK/);
    expect(await loginFrom(a.port('none'), JAPAN, 'haruka@example.jp', 'primary-1')).toMatch(/^a OK/);
    const after = await cacheLookups(a);
    expect((after.hit ?? 0) - (before.hit ?? 0)).toBe(1);
    expect((after.miss ?? 0) - (before.miss ?? 0)).toBe(1);
  });

  it('a reissued IMAP-only password refuses the cached old one at once, on every gateway (rules.md R4)', async () => {
    const old = (await a.ops.issueImapPassword('haruka@example.jp', { ifAbsent: false })).password!;
    for (const gw of [a, b]) {
      // Twice each: the second is answered from the cache.
      expect(await loginFrom(gw.port('none'), JAPAN, 'haruka@example.jp', old)).toMatch(/^a OK/);
      expect(await loginFrom(gw.port('none'), JAPAN, 'haruka@example.jp', old)).toMatch(/^a OK/);
    }
    const cachedHits = (await cacheLookups(b)).hit ?? 0;
    expect(cachedHits).toBeGreaterThanOrEqual(1);

    const fresh = (await a.ops.issueImapPassword('haruka@example.jp', { ifAbsent: false })).password!;
    for (const gw of [a, b]) {
      expect(await loginFrom(gw.port('none'), JAPAN, 'haruka@example.jp', old)).toMatch(
        /^a NO \[AUTHENTICATIONFAILED\]/,
      );
      expect(await loginFrom(gw.port('none'), JAPAN, 'haruka@example.jp', fresh)).toMatch(/^a OK/);
    }
    // The primary password, cached before, is now refused with the IMAP-only explanation (rules.md R1).
    expect(await loginFrom(a.port('none'), JAPAN, 'haruka@example.jp', 'primary-1')).toMatch(
      /^a NO \[ALERT\] This account requires its IMAP-only password/,
    );
  });

  it('a revoked IMAP-only password is refused at once although it was cached', async () => {
    const pw = (await a.ops.issueImapPassword('haruka@example.jp', { ifAbsent: false })).password!;
    expect(await loginFrom(a.port('none'), JAPAN, 'haruka@example.jp', pw)).toMatch(/^a OK/);
    expect(await loginFrom(a.port('none'), JAPAN, 'haruka@example.jp', pw)).toMatch(/^a OK/);
    await a.ops.revokeImapPassword('haruka@example.jp');
    expect(await loginFrom(a.port('none'), JAPAN, 'haruka@example.jp', pw)).toMatch(
      /^a NO \[AUTHENTICATIONFAILED\]/,
    );
  });

  it('a changed primary password refuses the cached old one at once (rules.md R14)', async () => {
    expect(await loginFrom(a.port('none'), JAPAN, 'haruka@example.jp', 'primary-1')).toMatch(/^a OK/);
    await a.ops.setPrimary('haruka@example.jp', { password: 'primary-2' });
    expect(await loginFrom(a.port('none'), JAPAN, 'haruka@example.jp', 'primary-1')).toMatch(
      /^a NO \[AUTHENTICATIONFAILED\]/,
    );
    expect(await loginFrom(a.port('none'), JAPAN, 'haruka@example.jp', 'primary-2')).toMatch(/^a OK/);
  });
});
