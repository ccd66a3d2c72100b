// The login lookup's lockout facts against a real Redis: what it reports about a source before
// and after a failure and a success (the one round trip a reconnecting client costs).
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LockoutStore } from '../../src/accounts/lockout-store.js';
import { AccountStore } from '../../src/accounts/store.js';
import { parseConfig } from '../../src/config/load.js';
import { type RedisServer, startRedis } from '../../src/devenv/servers.js';

let redis: RedisServer;
let client: Redis;
let accounts: AccountStore;
let lockout: LockoutStore;
const cfg = parseConfig({
  redis: { url: 'redis://127.0.0.1:1' },
  geo: { domesticCountries: ['JP'] },
}).lockout;

beforeAll(async () => {
  redis = await startRedis({ appendOnly: false });
  client = new Redis(redis.url);
  accounts = new AccountStore(client, 'mg:');
  lockout = new LockoutStore(client, 'mg:', cfg);
  await accounts.create({ login: 'sora@example.jp', now: Date.now() });
});

afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});

describe('login lookup: lockout facts', () => {
  it('reports the source unknown, then its failures, then known and clean after a success', async () => {
    const src = '49.96.0.1';
    const now = Date.now();
    const look = async (at: number) =>
      (await accounts.lookupForLogin('sora@example.jp', src, at - cfg.windowMs, at - cfg.knownSourceMs))
        .lockout;

    expect(await look(now)).toMatchObject({ knownSource: false, knownAt: null, pairFailures: false });

    await lockout.recordFailure('sora@example.jp', src, now);
    expect(await look(now)).toMatchObject({ sourceFailures: 1, pairFailures: true, knownAt: null });

    await lockout.recordSuccess('sora@example.jp', src, now + 1);
    expect(await look(now + 2)).toMatchObject({ knownSource: true, knownAt: now + 1, pairFailures: false });

    // Known counts within lockout.knownSourceMs, not within the failure window.
    const later = now + 1 + cfg.windowMs * 2;
    expect(later - (now + 1)).toBeLessThan(cfg.knownSourceMs);
    expect(await look(later)).toMatchObject({ knownSource: true });
    expect(await look(now + 1 + cfg.knownSourceMs + 1)).toMatchObject({
      knownSource: false,
      knownAt: now + 1,
    });
  });

  it('reports nothing about a source for an unknown login', async () => {
    expect((await accounts.lookupForLogin('nobody@example.jp', '49.96.0.2', 0, 0)).lockout).toMatchObject({
      knownAt: null,
      pairFailures: false,
    });
  });
});
