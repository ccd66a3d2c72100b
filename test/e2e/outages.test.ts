import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { RawClient } from '../support/raw-client.js';

/**
 * Redis outages (an outage never lets a login through unchecked): a login during one gets a temporary failure at once instead of
 * hanging, the gateway recovers by itself when Redis is back, and no account data is lost.
 * This file has its own Redis, so killing it disturbs no other test.
 */

const USER = 'bob@example.jp';
const PRIMARY = 'Primary pw "with" \\ quirks';
const TEMP_FAILED = 'a NO [UNAVAILABLE] Temporary authentication failure, please try again later.';
const LOGGED_IN = /^a OK \[CAPABILITY IMAP4rev1 [^\]]*\] Logged in$/;
/** How long the gateway's Redis client may take to reconnect (its retry delay grows to 2 s). */
const RECOVERY_MS = 10_000;

let redis: RedisServer;
let dovecot: DovecotServer;
let t: TestGateway;

function quote(s: string): string {
  return `"${s.replace(/[\\"]/g, (ch) => `\\${ch}`)}"`;
}

/** One LOGIN on a fresh connection; resolves with the tagged reply. */
async function login(user: string, pass: string): Promise<string> {
  const c = await RawClient.connect(t.port('none'));
  try {
    await c.waitFor(/^\* OK /);
    return await c.command('a', `LOGIN ${quote(user)} ${quote(pass)}`);
  } finally {
    c.close();
  }
}

/** Retries a login until it is let in or `RECOVERY_MS` have passed; resolves with the last reply. */
async function loginOnceRecovered(user: string, pass: string): Promise<string> {
  const deadline = Date.now() + RECOVERY_MS;
  for (;;) {
    const reply = await login(user, pass);
    if (LOGGED_IN.test(reply) || Date.now() > deadline) return reply;
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis({ appendOnly: true }),
    startDovecot({ users: ['alice', 'bob'].map((user) => ({ user, password: 'store-only-password' })) }),
  ]);
  t = await startTestGateway({ redis, dovecot });
  // The test's own client reconnects by itself too; its connection errors are expected here.
  t.redis.on('error', () => {});
  await t.ops.addAccount({ login: USER, primaryPassword: PRIMARY, upstreamUser: 'bob' });
});

afterAll(async () => {
  await t?.close();
  await Promise.all([dovecot?.stop(), redis?.stop()]);
});

describe('Redis outages', () => {
  it('Redis down: LOGIN gets NO [UNAVAILABLE] at once; once it is back, the same login succeeds', async () => {
    expect(await login(USER, PRIMARY)).toMatch(LOGGED_IN);

    await redis.kill();
    // RawClient.command gives up after 5 s: the reply must not wait for Redis to come back.
    expect(await login(USER, PRIMARY)).toBe(TEMP_FAILED);
    const line = await t.logs.waitFor((l) => l.event === 'auth' && l.result === 'tempfail');
    expect(line).toMatchObject({ login: USER, reason: 'store-unavailable' });

    // A crash loses nothing acknowledged (appendonly): the account is there after the restart.
    await redis.restart();
    expect(await loginOnceRecovered(USER, PRIMARY)).toMatch(LOGGED_IN);
  });

  it("operators' data survives a Redis restart: the account and its IMAP-only password", async () => {
    const dave = 'dave@example.jp';
    await t.ops.addAccount({
      login: dave,
      primaryPassword: PRIMARY,
      upstreamUser: 'alice',
      aliases: ['dave'],
    });
    const issued = await t.ops.issueImapPassword(dave, { ifAbsent: false });
    const before = await t.ops.showAccount(dave);

    await redis.restart();

    expect(await t.ops.showAccount(dave)).toEqual(before);
    expect(before.imapPassword).not.toBeNull();
    expect(await loginOnceRecovered('dave', issued.password!)).toMatch(LOGGED_IN);
  });
});
