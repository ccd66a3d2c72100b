import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DovecotServer,
  type PostfixServer,
  type RedisServer,
  startDovecot,
  startPostfix,
  startRedis,
} from '../../src/devenv/servers.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { RawClient } from '../support/raw-client.js';
import { messagesWith, plain, smtpCommand, smtpSession, waitForMessage } from '../support/smtp.js';

/**
 * The SMTP front's limits (issue #4 §4), requireSenderMatch: false, and the other way of
 * identifying the user to the store: master AUTH (SASL PLAIN with authzid) through Postfix's
 * Dovecot SASL.
 */

const PW = 'limits-test-password';
const IDLE_MS = 1_500;

let redis: RedisServer;
let dovecot: DovecotServer;
let postfix: PostfixServer;
let t: TestGateway;

async function authed(): Promise<RawClient> {
  const c = await smtpSession(t.smtpPort('none'));
  const r = await smtpCommand(c, plain('alice@example.jp', PW));
  if (!r.startsWith('235 ')) throw new Error(`AUTH failed: ${r}`);
  return c;
}

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis(),
    startDovecot({
      users: ['alice', 'bob'].map((user) => ({ user, password: 'store-only-password' })),
      lmtp: true,
    }),
  ]);
  postfix = await startPostfix({ deliverTo: dovecot, users: ['alice', 'bob'] });
  t = await startTestGateway({
    redis,
    dovecot,
    smtp: { postfix },
    configure: (raw) => {
      raw.smtp.upstream.login = {
        style: 'master',
        user: dovecot.masterUser,
        password: dovecot.masterPassword,
      };
      raw.smtp.requireSenderMatch = false;
      raw.smtp.limits = {
        maxRecipientsPerMessage: 2,
        maxMessagesPerSession: 2,
        maxUnauthenticatedCommands: 4,
        maxAuthFailures: 2,
        idleTimeoutMs: IDLE_MS,
        maxConnectionsPerIp: 4,
      };
    },
  });
  await t.ops.addAccount({ login: 'alice@example.jp', primaryPassword: PW, upstreamUser: 'alice' });
});

afterAll(async () => {
  await t?.close();
  await postfix?.stop();
  await Promise.all([dovecot?.stop(), redis?.stop()]);
});

describe('master AUTH to the store', () => {
  it('logs in as the user with the master credential; Postfix shows the user and the client', async () => {
    const m = `mg-${randomBytes(4).toString('hex')}`;
    const from = (await postfix.readLog()).length;
    const c = await authed();
    try {
      expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'RCPT TO:<bob@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'DATA')).toMatch(/^354 /);
      expect(await smtpCommand(c, `Subject: ${m}\r\n\r\nvia master AUTH\r\n.`)).toMatch(
        /^250 2\.0\.0 Ok: queued as/,
      );
    } finally {
      c.close();
    }
    expect(await postfix.waitForLog(/sasl_method=PLAIN, sasl_username=alice\b/, { from })).toBeTruthy();
    expect(await waitForMessage(dovecot, 'bob', m)).toMatch(/\(Authenticated sender: alice\)/);
    // Never the master password in our logs.
    expect(t.logs.raw.join('\n')).not.toContain(dovecot.masterPassword);
  });
});

describe('requireSenderMatch: false', () => {
  it('relays an envelope sender that is not one of the account addresses', async () => {
    const c = await authed();
    try {
      expect(await smtpCommand(c, 'MAIL FROM:<newsletter@other.example>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'RCPT TO:<bob@example.jp>')).toMatch(/^250 /);
    } finally {
      c.close();
    }
  });
});

describe('limits', () => {
  it('recipients per message: the one over the limit gets 452', async () => {
    const c = await authed();
    try {
      await smtpCommand(c, 'MAIL FROM:<alice@example.jp>');
      expect(await smtpCommand(c, 'RCPT TO:<alice@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'RCPT TO:<bob@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'RCPT TO:<carol@example.jp>')).toMatch(/^452 /);
    } finally {
      c.close();
    }
  });

  it('messages per session: the one over the limit gets 421 and the connection closes', async () => {
    const c = await authed();
    try {
      for (let i = 0; i < 2; i++) {
        await smtpCommand(c, 'MAIL FROM:<alice@example.jp>');
        await smtpCommand(c, 'RCPT TO:<alice@example.jp>');
        await smtpCommand(c, 'DATA');
        expect(await smtpCommand(c, `Subject: limit ${i}\r\n\r\nx\r\n.`)).toMatch(/^250 /);
      }
      expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp>')).toMatch(/^421 4\.7\.0 Too many messages/);
      await c.waitClosed();
    } finally {
      c.close();
    }
  });

  it('commands before AUTH: after the limit, 421 and close', async () => {
    const c = await smtpSession(t.smtpPort('none')); // EHLO was the first
    try {
      expect(await smtpCommand(c, 'NOOP')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'NOOP')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'NOOP')).toMatch(/^421 /);
      await c.waitClosed();
    } finally {
      c.close();
    }
  });

  it('refused logins on one connection: after the limit, 421 and close', async () => {
    const c = await smtpSession(t.smtpPort('none'));
    try {
      expect(await smtpCommand(c, plain('alice@example.jp', 'wrong'))).toMatch(/^535 5\.7\.8 /);
      expect(await smtpCommand(c, plain('alice@example.jp', 'wrong'))).toMatch(
        /^421 4\.7\.0 Too many failed logins/,
      );
      await c.waitClosed();
    } finally {
      c.close();
    }
  });

  it('idle time: a silent client gets 421 and is disconnected', async () => {
    const c = await smtpSession(t.smtpPort('none'));
    const started = Date.now();
    await c.waitFor(/^421 /, { timeoutMs: IDLE_MS * 3 });
    await c.waitClosed();
    expect(Date.now() - started).toBeGreaterThanOrEqual(IDLE_MS - 100);
  });

  it('connections per client address: the one over the limit gets 421 before the greeting', async () => {
    const open = await Promise.all(Array.from({ length: 4 }, () => smtpSession(t.smtpPort('none'))));
    try {
      const extra = await RawClient.connect(t.smtpPort('none'));
      await extra.waitClosed();
      expect(extra.lines).toEqual(['421 4.7.0 Too many connections from your address.']);
    } finally {
      for (const c of open) c.close();
    }
    // The gateway sees the closes a moment later; then the address may connect again.
    const deadline = Date.now() + 5_000;
    for (;;) {
      const probe = await RawClient.connect(t.smtpPort('none'));
      const greeted = await probe.waitFor(/^\d{3} /).catch(() => '');
      probe.close();
      if (greeted.startsWith('220 ')) break;
      if (Date.now() > deadline) throw new Error(`still refused: ${greeted}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });
});

describe('shutdown', () => {
  it('a client mid-transaction hears 421 and the message is not delivered', async () => {
    const c = await authed();
    await smtpCommand(c, 'MAIL FROM:<alice@example.jp>');
    await smtpCommand(c, 'RCPT TO:<bob@example.jp>');
    await smtpCommand(c, 'DATA');
    c.write('Subject: never\r\n\r\ncut by shutdown\r\n');
    await t.close();
    await c.waitClosed();
    expect(c.lines.at(-1)).toMatch(/^421 4\.3\.2 /);
    await new Promise((r) => setTimeout(r, 300));
    expect(await messagesWith(dovecot, 'bob', 'cut by shutdown')).toEqual([]);
  });
});
