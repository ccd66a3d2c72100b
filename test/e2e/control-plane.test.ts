import { hash as argon2HashOf } from '@node-rs/argon2';
import { hash as bcryptHashOf } from '@node-rs/bcrypt';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';
import { bucketOf, inWave } from '../../src/rollout/engine.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { loginFrom } from '../support/raw-client.js';

const JAPAN = '49.96.0.1';
const ABROAD = '8.8.8.8';
const PRIMARY = 'primary-password-1';

let redis: RedisServer;
let dovecot: DovecotServer;
let t: TestGateway;
/** A second gateway on the same Redis and Dovecot with strict lockout thresholds. */
let strict: TestGateway;

function imapflow(gw: TestGateway, user: string, pass: string): ImapFlow {
  return new ImapFlow({
    host: '127.0.0.1',
    port: gw.port('implicit'),
    secure: true,
    tls: { rejectUnauthorized: false },
    auth: { user, pass },
    logger: false,
    disableAutoIdle: true,
  });
}

async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

const users = Array.from({ length: 40 }, (_, i) => `wave${i}`);

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis(),
    startDovecot({
      users: ['kenji', 'yumi', 'sprayed', 'wave9', ...users].map((user) => ({
        user,
        password: 'store-secret',
      })),
    }),
  ]);
  t = await startTestGateway({ redis, dovecot, keyPrefix: 'cp:' });
  strict = await startTestGateway({
    redis,
    dovecot,
    keyPrefix: 'cp:',
    configure: (raw) => {
      raw.lockout = {
        sourceMaxFailures: 12,
        tarpitAfter: 100,
        pairMaxFailures: 4,
        accountMaxFailures: 6,
        lockMs: 60_000,
      };
    },
  });
  for (const u of ['kenji', 'yumi', 'sprayed', ...users]) {
    await t.ops.addAccount({ login: `${u}@example.jp`, primaryPassword: PRIMARY, upstreamUser: u });
  }
});

afterAll(async () => {
  await Promise.all([t?.close(), strict?.close()]);
  await Promise.all([dovecot?.stop(), redis?.stop()]);
});

describe('IMAP-only password lifecycle ends stale sessions (rules.md R4)', () => {
  it('a reissue ends the session opened with the old password; one opened with the new password stays', async () => {
    const first = (await t.ops.issueImapPassword('kenji@example.jp', { ifAbsent: false })).password!;
    const old = imapflow(t, 'kenji@example.jp', first);
    await old.connect();
    const oldClosed = new Promise<void>((r) => old.once('close', () => r()));

    const second = (await t.ops.issueImapPassword('kenji@example.jp', { ifAbsent: false })).password!;
    await oldClosed; // ended by the announcement, within the test's timeout
    expect(await loginFrom(t.port('none'), JAPAN, 'kenji@example.jp', first)).toMatch(
      /^a NO \[AUTHENTICATIONFAILED\]/,
    );

    const fresh = imapflow(t, 'kenji@example.jp', second);
    await fresh.connect();
    // An unrelated change to another account and a sweep leave it alone.
    await t.ops.issueImapPassword('yumi@example.jp', { ifAbsent: false });
    await t.gateway.credentialSweep();
    await fresh.noop();
    expect(fresh.usable).toBe(true);
    await fresh.logout();
  });

  it('issuing a first IMAP-only password ends sessions opened with the primary password (rules.md R1)', async () => {
    const s = imapflow(t, 'sprayed@example.jp', PRIMARY);
    await s.connect();
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    await t.ops.issueImapPassword('sprayed@example.jp', { ifAbsent: false });
    await closed;
    await t.ops.revokeImapPassword('sprayed@example.jp');
  });

  it('a session whose announcement was missed is found by the sweep', async () => {
    const pw = (await t.ops.issueImapPassword('yumi@example.jp', { ifAbsent: false })).password!;
    const s = imapflow(t, 'yumi@example.jp', pw);
    await s.connect();
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    // Change the version behind the gateway's back, as if the announcement had been lost.
    await t.redis.hincrby('cp:account:yumi@example.jp', 'imapVersion', 1);
    expect(await t.gateway.credentialSweep()).toBe(1);
    await closed;
  });
});

describe('rollout engine end to end', () => {
  it('percentage waves are stable and monotone, and off undoes them', async () => {
    const logins = users.map((u) => `${u}@example.jp`);
    const inside = (pct: number) => logins.filter((l) => inWave(bucketOf(l), pct));
    const refused = async () => {
      const out: string[] = [];
      for (const l of logins)
        if (/^a NO \[ALERT\] Mail app access/.test(await loginFrom(t.port('none'), JAPAN, l, PRIMARY)))
          out.push(l);
      return out;
    };
    await t.ops.setDomesticPhase({ percent: 10 }, 'enforce');
    const ten = await refused();
    expect(ten).toEqual(inside(10));
    await t.ops.setDomesticPhase({ percent: 50 }, 'enforce');
    const fifty = await refused();
    expect(fifty).toEqual(inside(50));
    for (const l of ten) expect(fifty).toContain(l);
    expect(fifty.length).toBeGreaterThan(ten.length);
    await t.ops.setDomesticPhase({ percent: 50 }, 'off');
    expect(await refused()).toEqual([]);
  });

  it('warn records without refusing; enforce refuses; status counts both by cohort', async () => {
    await t.ops.setDomesticPhase({ logins: ['wave1@example.jp'] }, 'warn');
    expect(await loginFrom(t.port('none'), JAPAN, 'wave1@example.jp', PRIMARY)).toMatch(/^a OK/);
    await t.ops.setDomesticPhase({ logins: ['wave1@example.jp'] }, 'enforce');
    expect(await loginFrom(t.port('none'), JAPAN, 'wave1@example.jp', PRIMARY)).toMatch(/^a NO \[ALERT\]/);
    await waitUntil(async () => {
      const s = await t.ops.rolloutStatus();
      return (
        (s.refusals.lastHour['refused|domestic|explicit'] ?? 0) >= 1 &&
        (s.refusals.lastHour['would-refuse|domestic|explicit'] ?? 0) >= 1
      );
    });
    const status = await t.ops.rolloutStatus();
    expect(status.domesticCohorts).toContainEqual({
      phase: 'enforce',
      cohort: 'explicit',
      accounts: 1,
      withoutImapPassword: 1,
    });
    await t.ops.setDomesticPhase({ logins: ['wave1@example.jp'] }, 'off');
  });

  it('a scheduled phase starts at its time', async () => {
    await t.ops.setOverseasPhase('enforce', Date.now() + 1_500);
    expect(await loginFrom(t.port('none'), ABROAD, 'wave2@example.jp', PRIMARY)).toMatch(/^a OK/);
    await new Promise((r) => setTimeout(r, 1_600));
    expect(await loginFrom(t.port('none'), ABROAD, 'wave2@example.jp', PRIMARY)).toMatch(
      /^a NO \[ALERT\] Access from abroad/,
    );
    await t.ops.setOverseasPhase('off');
  });

  it('an exemption lets a travelling subscriber in until it expires', async () => {
    await t.ops.setOverseasPhase('enforce');
    try {
      await t.ops.exempt('wave3@example.jp', Date.now() + 1_500);
      expect(await loginFrom(t.port('none'), ABROAD, 'wave3@example.jp', PRIMARY)).toMatch(/^a OK/);
      await new Promise((r) => setTimeout(r, 1_600));
      expect(await loginFrom(t.port('none'), ABROAD, 'wave3@example.jp', PRIMARY)).toMatch(
        /^a NO \[ALERT\] Access from abroad/,
      );
    } finally {
      await t.ops.setOverseasPhase('off');
    }
  });

  it('a change reaches a second gateway on the same Redis at once', async () => {
    // Both gateways read the rules on every login: no cache, no restart.
    await t.ops.setOverseasPhase('enforce');
    const changed = Date.now();
    expect(await loginFrom(strict.port('none'), ABROAD, 'wave4@example.jp', PRIMARY)).toMatch(
      /^a NO \[ALERT\]/,
    );
    expect(Date.now() - changed).toBeLessThan(1_000 + 5_000); // bounded by the login itself
    await strict.ops.setOverseasPhase('off');
    expect(await loginFrom(t.port('none'), ABROAD, 'wave4@example.jp', PRIMARY)).toMatch(/^a OK/);
  });
});

describe('rehash on login', () => {
  it('a bcrypt or differently tuned argon2 primary hash is upgraded on the first successful login', async () => {
    const bcryptHash = await bcryptHashOf('old-system-pw', 4);
    const argonHash = await argon2HashOf('old-argon-pw', {
      memoryCost: 128,
      timeCost: 1,
      parallelism: 1,
      algorithm: 2,
    });
    await t.ops.addAccount({ login: 'legacy1@example.jp', primaryHash: bcryptHash, upstreamUser: 'wave9' });
    await t.ops.addAccount({ login: 'legacy2@example.jp', primaryHash: argonHash, upstreamUser: 'wave9' });
    expect(await loginFrom(t.port('none'), JAPAN, 'legacy1@example.jp', 'old-system-pw')).toMatch(/^a OK/);
    expect(await loginFrom(t.port('none'), JAPAN, 'legacy2@example.jp', 'old-argon-pw')).toMatch(/^a OK/);
    const configured = /^\$argon2id\$v=19\$m=64,t=1,p=1\$/;
    await waitUntil(async () =>
      configured.test((await t.redis.hget('cp:account:legacy1@example.jp', 'primaryHash')) ?? ''),
    );
    await waitUntil(async () =>
      configured.test((await t.redis.hget('cp:account:legacy2@example.jp', 'primaryHash')) ?? ''),
    );
    // Same password, new hash: the login still works, and no session was ended for it.
    expect(await loginFrom(t.port('none'), JAPAN, 'legacy1@example.jp', 'old-system-pw')).toMatch(/^a OK/);
    expect(await t.redis.hget('cp:account:legacy1@example.jp', 'primaryVersion')).toBe('0');
  });
});

describe('lockout (rules.md R13)', () => {
  it('repeated failures lock the (account, source) pair; unlock clears it; the reply is not a wrong-password reply', async () => {
    const ip = '49.96.0.10';
    for (let i = 0; i < 4; i++) {
      expect(await loginFrom(strict.port('none'), ip, 'wave5@example.jp', 'wrong')).toMatch(
        /AUTHENTICATIONFAILED/,
      );
    }
    const locked = await loginFrom(strict.port('none'), ip, 'wave5@example.jp', PRIMARY);
    expect(locked).toMatch(/^a NO \[ALERT\] This account is temporarily locked/);
    expect(locked).not.toMatch(/AUTHENTICATIONFAILED/);
    // The same account from another source is not locked by this pair.
    expect(await loginFrom(strict.port('none'), '49.96.0.11', 'wave5@example.jp', PRIMARY)).toMatch(/^a OK/);
    await strict.ops.unlock('wave5@example.jp');
    expect(await loginFrom(strict.port('none'), ip, 'wave5@example.jp', PRIMARY)).toMatch(/^a OK/);
  });

  it('a spray from elsewhere locks the account for strangers but not for the subscriber', async () => {
    const home = '49.96.1.1';
    const pw = (await t.ops.issueImapPassword('wave6@example.jp', { ifAbsent: false })).password!;
    expect(await loginFrom(strict.port('none'), home, 'wave6@example.jp', pw)).toMatch(/^a OK/); // a known source now
    for (let i = 0; i < 8; i++) {
      await loginFrom(strict.port('none'), `203.0.113.${10 + i}`, 'wave6@example.jp', `guess-${i}`);
    }
    expect(await loginFrom(strict.port('none'), '203.0.113.99', 'wave6@example.jp', pw)).toMatch(
      /^a NO \[ALERT\] This account is temporarily locked/,
    );
    expect(await loginFrom(strict.port('none'), home, 'wave6@example.jp', pw)).toMatch(/^a OK/);
    await strict.ops.unlock('wave6@example.jp');
  });

  it('a source that keeps failing is throttled, whatever account it names (IPv6 counted per /64)', async () => {
    for (let i = 0; i < 12; i++)
      await loginFrom(strict.port('none'), '8.8.4.4', `nobody${i}@example.jp`, 'x');
    expect(await loginFrom(strict.port('none'), '8.8.4.4', 'wave7@example.jp', PRIMARY)).toMatch(
      /^a NO \[ALERT\] Too many failed logins from your network/,
    );
    expect(await loginFrom(strict.port('none'), '8.8.4.5', 'wave7@example.jp', PRIMARY)).toMatch(/^a OK/);
  });

  it('IPv6 failures count per /64: rotating addresses inside it does not help', async () => {
    for (let i = 0; i < 12; i++)
      await loginFrom(
        strict.port('none'),
        `2400:4050:1:2::${(i + 1).toString(16)}`,
        `nobody${i}@example.jp`,
        'x',
      );
    expect(
      await loginFrom(strict.port('none'), '2400:4050:1:2:ffff::1', 'wave8@example.jp', PRIMARY),
    ).toMatch(/^a NO \[ALERT\] Too many failed/);
    expect(await loginFrom(strict.port('none'), '2400:4050:1:3::1', 'wave8@example.jp', PRIMARY)).toMatch(
      /^a OK/,
    );
  });
});
