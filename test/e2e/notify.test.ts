// Subscriber notifications end to end: a real Redis, Dovecot and gateway (with its delivery
// worker), clients placed in Japan or abroad by PROXY headers, and a small real HTTP server
// standing in for the SMS gateway.
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { freePort } from '../../src/devenv/ports.js';
import {
  type DovecotServer,
  type PostfixServer,
  type RedisServer,
  startDovecot,
  startRedis,
} from '../../src/devenv/servers.js';
import { bucketOf, inWave } from '../../src/rollout/engine.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { loginFrom } from '../support/raw-client.js';
import { FakeSmsGateway } from '../support/sms-gateway.js';
import { plain, smtpCommand, smtpSession } from '../support/smtp.js';

const JAPAN = '49.96.0.1'; // JP, AS9605 NTT DOCOMO
const JAPAN_V6 = '240a:2:c90::1'; // JP, AS9605 too
const GOOGLE = '8.8.8.8'; // US, AS15169
const GOOGLE_V6 = '2001:4860:4860::8888'; // US, AS15169
const CLOUDFLARE = '1.1.1.1'; // AS13335
const PRIMARY = 'primary-password-1';

let redis: RedisServer;
let dovecot: DovecotServer;
let sms: FakeSmsGateway;
let t: TestGateway;
let n = 0;
const users = [
  'okuru',
  'tabi',
  'kaisha',
  'kenji',
  'yumi',
  'eri',
  'ken',
  ...Array.from({ length: 30 }, (_, i) => `wave${i}`),
];
const msisdnOf = (user: string) => `+8190${String(10_000_000 + users.indexOf(user)).slice(-8)}`;
const login = (user: string) => `${user}@example.jp`;

async function imapLogin(ip: string, user: string, pass = PRIMARY): Promise<string> {
  return loginFrom(t.port('none'), ip, login(user), pass);
}

/** Everything queued so far is in the outbox and the worker has had time to send it. */
async function settled(): Promise<void> {
  await t.gateway.outbox?.flush();
  const stream = `${t.config.redis.keyPrefix}notify:outbox`;
  const deadline = Date.now() + 5_000;
  while ((await t.redis.xlen(stream)) > 0) {
    if (Date.now() > deadline) throw new Error('outbox not drained');
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  [redis, dovecot, sms] = await Promise.all([
    startRedis(),
    startDovecot({ users: users.map((user) => ({ user, password: 'store-secret' })) }),
    FakeSmsGateway.start(),
  ]);
  // SMTP submission in front of a port where nothing listens: AUTH is decided (and notified)
  // before the submission server is reached, which then fails with 454.
  const nowhere = { host: '127.0.0.1', port: await freePort() } as PostfixServer;
  t = await startTestGateway({
    redis,
    dovecot,
    keyPrefix: 'nt:',
    smtp: { postfix: nowhere },
    configure: (raw) => {
      raw.notify = {
        webhook: { url: sms.url, token: 'sms-gateway-token-1', timeoutMs: 1_000 },
        worker: { concurrency: 4, backoff: { baseMs: 50, maxMs: 200 }, claimIdleMs: 2_000 },
        dailyCap: 20,
        links: { imapPassword: 'https://example.jp/imap' },
      };
    },
  });
  await t.gateway.geo.providersReady;
  for (const user of users) {
    await t.ops.addAccount({
      login: login(user),
      primaryPassword: PRIMARY,
      upstreamUser: user,
      msisdn: msisdnOf(user),
      ...(user === 'kaisha' ? { lang: 'en', tz: 'Europe/London' } : {}),
    });
  }
});

afterAll(async () => {
  await t?.close();
  await Promise.all([sms?.close(), dovecot?.stop(), redis?.stop()]);
});

beforeEach(async () => {
  // Each test starts from no restriction; rules from earlier tests are overridden.
  await t.ops.setOverseasPhase('off');
  await t.ops.setDomesticPhase({ all: true }, 'off');
  n = sms.received.length;
});

describe('restriction SMS', () => {
  it('rules.md R7: a refused login from abroad sends the overseas-restriction SMS once, however often the client retries', async () => {
    await t.ops.setOverseasPhase('enforce');
    for (let i = 0; i < 5; i++) {
      expect(await imapLogin(GOOGLE, 'tabi')).toMatch(/^a NO \[[A-Z-]+\] Access from abroad/);
    }
    await settled();
    const got = sms.to(msisdnOf('tabi'));
    expect(got.map((p) => p.template)).toEqual(['overseas-restricted']);
    expect(got[0]).toMatchObject({ language: 'ja', msisdn: msisdnOf('tabi') });
    expect(got[0]!.text).toContain('海外からのアクセスを制限しました');
    expect(got[0]!.text).toContain('接続元：アメリカ合衆国');
    expect(got[0]!.text).toContain('IMAP専用パスワードの発行：https://example.jp/imap');
    // The request as the SMS gateway saw it.
    const req = sms.received.slice(n).find((r) => r.payload.msisdn === msisdnOf('tabi'))!;
    expect(req.authorization).toBe('Bearer sms-gateway-token-1');
    expect(req.idempotencyHeader).toBe(got[0]!.idempotencyKey);
    expect(Object.keys(req.payload).sort()).toEqual(
      ['idempotencyKey', 'language', 'msisdn', 'queuedAt', 'template', 'text'].sort(),
    );
    // The log has the number masked; the notify log stream too.
    const lines = t.logs.raw.filter((l) => l.includes('"event":"notify"'));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.join('\n')).not.toContain(msisdnOf('tabi'));
    const { body } = await t.gateway.metrics.expose();
    expect(body).toContain('mailgate_notices_total{template="overseas-restricted",result="queued"} 1');
    expect(body).toContain('mailgate_notices_total{template="overseas-restricted",result="duplicate"} 4');
    expect(body).toMatch(/mailgate_notices_total\{template="overseas-restricted",result="sent"\} 1/);
    expect(lines.join('\n')).toContain(`${msisdnOf('tabi').slice(0, 5)}****${msisdnOf('tabi').slice(-4)}`);
  });

  it('an English account gets the English text, dated in its own time zone', async () => {
    await t.ops.setOverseasPhase('enforce');
    expect(await imapLogin(GOOGLE, 'kaisha')).toMatch(/^a NO /);
    await settled();
    const [p] = sms.to(msisdnOf('kaisha'));
    expect(p).toMatchObject({ template: 'overseas-restricted', language: 'en' });
    expect(p!.text).toMatch(/^\[Mail service\] Access from abroad has been restricted/);
    expect(p!.text).toMatch(/Time: .* (GMT|BST)/);
  });

  it('rules.md R8 + R12: enforcing named accounts notifies those without an IMAP-only password; a refused login sends one connection-error SMS', async () => {
    await t.ops.issueImapPassword(login('yumi'), { ifAbsent: false });
    const r = await t.ops.setDomesticPhase({ logins: [login('kenji'), login('yumi')] }, 'enforce');
    expect(r.notices).toEqual({ accounts: 1, queued: 1, deferred: 0, noMsisdn: 0, suppressed: 0 });
    await settled();
    expect(sms.to(msisdnOf('kenji')).map((p) => p.template)).toEqual(['domestic-restricted']);
    expect(sms.to(msisdnOf('kenji'))[0]!.text).toContain('本日より、メールアプリ（IMAP/SMTP）からの接続は');
    expect(sms.to(msisdnOf('yumi'))).toEqual([]); // has an IMAP-only password: not affected

    for (let i = 0; i < 3; i++) {
      expect(await imapLogin(JAPAN, 'kenji')).toMatch(/^a NO \[[A-Z-]+\] Mail app access/);
    }
    await settled();
    expect(sms.to(msisdnOf('kenji')).map((p) => p.template)).toEqual([
      'domestic-restricted',
      'connection-error',
    ]);
    // Applying the same rule again changes nobody's phase: no second rules.md R8 SMS.
    const again = await t.ops.setDomesticPhase({ logins: [login('kenji')] }, 'enforce');
    expect(again.notices?.accounts).toBe(0);
  });

  it('rules.md R8: a wave scheduled with --at names the date; widening it notifies only the accounts it adds', async () => {
    const at = Date.parse('2030-12-01T00:00:00+09:00');
    const waveUsers = users.filter((u) => u.startsWith('wave'));
    const inPercent = (p: number) => waveUsers.filter((u) => inWave(bucketOf(login(u)), p));
    const first = await t.ops.setDomesticPhase({ percent: 30 }, 'enforce', at);
    await settled();
    const notified = () =>
      waveUsers.filter((u) => sms.to(msisdnOf(u), 'domestic-restricted').length > 0).sort();
    expect(notified()).toEqual(inPercent(30).sort());
    // Accounts outside the wave users (tabi, kenji, ...) may be in the 30% too; count only these.
    expect(first.notices!.queued).toBeGreaterThanOrEqual(inPercent(30).length);
    for (const u of inPercent(30)) {
      expect(sms.to(msisdnOf(u), 'domestic-restricted')[0]!.text).toContain('2030年12月1日より');
    }
    const before = sms.sms.size;
    await t.ops.setDomesticPhase({ percent: 60 }, 'enforce', at);
    await settled();
    expect(notified()).toEqual(inPercent(60).sort());
    for (const u of inPercent(60)) expect(sms.to(msisdnOf(u), 'domestic-restricted')).toHaveLength(1);
    expect(sms.sms.size - before).toBeGreaterThanOrEqual(inPercent(60).length - inPercent(30).length);
  });

  it('warn: the login gets in, and the subscriber is told from when it will be refused', async () => {
    const at = Date.parse('2031-05-01T00:00:00+09:00');
    await t.ops.setOverseasPhase('warn');
    await t.ops.setOverseasPhase('enforce', at);
    expect(await imapLogin(GOOGLE, 'eri')).toMatch(/^a OK/);
    expect(await imapLogin(GOOGLE, 'eri')).toMatch(/^a OK/);
    await settled();
    const warnings = sms.to(msisdnOf('eri'), 'restriction-warning');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.text).toContain('2031年5月1日から、IMAP専用パスワードが未設定の場合、海外から');
  });
});

describe('login notification (rules.md R11)', () => {
  it('the first login is recorded silently; a second provider notifies; the same provider again (IPv6 too) does not', async () => {
    const to = () => sms.to(msisdnOf('ken'), 'login-notification');
    expect(await imapLogin(JAPAN, 'ken')).toMatch(/^a OK/);
    await settled();
    expect(to()).toEqual([]); // first login ever: recorded, not notified
    expect(await imapLogin(JAPAN_V6, 'ken')).toMatch(/^a OK/); // IPv6 of the same provider
    expect(await imapLogin(JAPAN, 'ken')).toMatch(/^a OK/);
    await settled();
    expect(to()).toEqual([]);

    expect(await imapLogin(GOOGLE, 'ken')).toMatch(/^a OK/); // another provider and country
    await settled();
    expect(to()).toHaveLength(1);
    expect(to()[0]!.text).toContain('接続方法：IMAP');
    expect(to()[0]!.text).toContain('場所：アメリカ合衆国');
    expect(to()[0]!.text).toContain('プロバイダ：Google LLC (AS15169)');

    expect(await imapLogin(GOOGLE, 'ken')).toMatch(/^a OK/);
    expect(await imapLogin(GOOGLE_V6, 'ken')).toMatch(/^a OK/);
    await settled();
    expect(to()).toHaveLength(1);

    expect(await imapLogin(CLOUDFLARE, 'ken')).toMatch(/^a OK/); // a third provider
    await settled();
    expect(to()).toHaveLength(2);
    expect(to()[1]!.text).toContain('(AS13335)');

    const seen = await t.redis.hgetall('nt:seen:ken@example.jp');
    expect(Object.keys(seen).sort()).toEqual(
      ['a:13335', 'a:15169', 'a:9605', 'c:JP', 'c:US', 'first', ...(seen['c:AU'] ? ['c:AU'] : [])].sort(),
    );
    // The auth log line names the provider.
    const auth = t.logs.events('auth').filter((l) => l.login === login('ken') && l.ip === GOOGLE);
    expect(auth[0]).toMatchObject({ asn: 15169, country: 'US' });
  });

  it('an SMTP login from a new provider notifies too, naming SMTP', async () => {
    expect(await imapLogin(JAPAN, 'okuru')).toMatch(/^a OK/); // the usual place
    const c = await smtpSession(t.smtpPort('none'), { from: GOOGLE });
    try {
      // Allowed, then the (absent) submission server fails: 454, after the decision.
      expect(await smtpCommand(c, plain(login('okuru'), PRIMARY))).toMatch(/^454 4\.7\.0/);
    } finally {
      c.close();
    }
    await settled();
    const got = sms.to(msisdnOf('okuru'), 'login-notification');
    expect(got).toHaveLength(1);
    expect(got[0]!.text).toContain('接続方法：SMTP');
  });
});

describe('account language and time zone', () => {
  it('account import sets and clears lang and tz; account show has them', async () => {
    const lines = async (...rows: string[]) => {
      const s = await t.ops.importAccounts(Readable.from([`${rows.join('\n')}\n`]), { name: 'x.jsonl' });
      expect(s.rejected).toBe(0);
    };
    await lines(
      '{"login":"imported@example.jp","msisdn":"+819099990000","lang":"en","tz":"America/New_York"}',
    );
    expect(await t.ops.showAccount('imported@example.jp')).toMatchObject({
      lang: 'en',
      tz: 'America/New_York',
    });
    await lines('{"login":"imported@example.jp","lang":null,"tz":""}');
    const view = await t.ops.showAccount('imported@example.jp');
    expect(view.lang).toBeUndefined();
    expect(view.tz).toBeUndefined();
  });
});
