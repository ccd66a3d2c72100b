import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DovecotServer,
  type PostfixServer,
  type RedisServer,
  startDovecot,
  startPostfix,
  startRedis,
} from '../../src/devenv/servers.js';
import { LOAD_BALANCER_IP, startTestGateway, type TestGateway } from '../support/gateway.js';
import { RawClient } from '../support/raw-client.js';
import {
  imapSubjects,
  messagesWith,
  plain,
  replyAt,
  smtpCommand,
  smtpSession,
  waitForMessage,
} from '../support/smtp.js';

const run = promisify(execFile);

// Client placement, as in imap-gateway.test.ts (geo.overrides of the test gateway):
const JAPAN = '49.96.0.1';
const JAPAN_OVERRIDE = '203.0.113.5';
const ABROAD = '8.8.8.8';
const ABROAD_OVERRIDE = '198.51.100.7';

const PRIMARY = 'Primary pw "with" \\ quirks';
const MAX_MESSAGE_BYTES = 200_000;

let redis: RedisServer;
let dovecot: DovecotServer;
let postfix: PostfixServer;
let t: TestGateway;
let imapOnly: string; // alice's IMAP-only password

const marker = () => `mg-${randomBytes(5).toString('hex')}`;

function message(
  subject: string,
  from = 'alice@example.jp',
  to = 'alice@example.jp',
  body = 'hello',
): string {
  return `From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\n\r\n${body}\r\n`;
}

/** AUTH from a client address (PROXY header from the trusted balancer); returns the AUTH reply. */
async function authFrom(ip: string, user: string, pass: string, v: 1 | 2 = 2): Promise<string> {
  const c = await smtpSession(t.smtpPort('implicit'), { tls: true, from: ip, v });
  try {
    return await smtpCommand(c, plain(user, pass));
  } finally {
    c.close();
  }
}

/** An authenticated raw session as alice over implicit TLS. */
async function aliceSession(): Promise<RawClient> {
  const c = await smtpSession(t.smtpPort('implicit'), { tls: true });
  const r = await smtpCommand(c, plain('alice@example.jp', imapOnly));
  if (!r.startsWith('235 ')) throw new Error(`AUTH failed: ${r}`);
  return c;
}

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis(),
    startDovecot({
      users: ['alice', 'bob', 'carol'].map((user) => ({ user, password: 'store-only-password' })),
      lmtp: true,
    }),
  ]);
  postfix = await startPostfix({ deliverTo: dovecot, users: ['alice', 'bob', 'carol'] });
  t = await startTestGateway({
    redis,
    dovecot,
    smtp: { postfix },
    configure: (raw) => {
      raw.smtp.limits = { maxMessageBytes: MAX_MESSAGE_BYTES };
    },
  });
  await t.ops.addAccount({
    login: 'alice@example.jp',
    aliases: ['alice', 'a.li@example.jp'],
    primaryPassword: PRIMARY,
    upstreamUser: 'alice',
  });
  await t.ops.addAccount({ login: 'bob@example.jp', primaryPassword: PRIMARY, upstreamUser: 'bob' });
  await t.ops.addAccount({ login: 'carol@example.jp', primaryPassword: PRIMARY, upstreamUser: 'carol' });
  imapOnly = await issueForSwaks('alice@example.jp');
});

/**
 * Issues an IMAP-only password that swaks can take on its command line: swaks reads a value
 * starting with "-" as another option (even as --auth-password=VALUE), and "-" is in the
 * alphabet. Mail clients have no such problem, so only this test skips those passwords.
 */
async function issueForSwaks(login: string): Promise<string> {
  for (;;) {
    const pw = (await t.ops.issueImapPassword(login, { ifAbsent: false })).password!;
    if (!pw.startsWith('-')) return pw;
  }
}

afterAll(async () => {
  await t?.close();
  await postfix?.stop();
  await Promise.all([dovecot?.stop(), redis?.stop()]);
});

describe('real clients submit through the gateway, and the message is read back through it', () => {
  it('swaks over 465 (implicit TLS) from a client behind the load balancer: Postfix sees its address and login', async () => {
    const m = marker();
    const from = (await postfix.readLog()).length;
    const { stdout } = await run('swaks', [
      ...['--server', `127.0.0.1:${t.smtpPort('implicit')}`, '--tls-on-connect'],
      ...['--local-interface', LOAD_BALANCER_IP, '--proxy', `TCP4 ${JAPAN_OVERRIDE} 127.0.0.1 40000 465`],
      ...['--auth', 'PLAIN', '--auth-user', 'alice@example.jp', '--auth-password', imapOnly],
      ...['--from', 'alice@example.jp', '--to', 'bob@example.jp', '--header', `Subject: swaks 465 ${m}`],
    ]);
    expect(stdout).toMatch(/<~ {2}235 /);
    expect(stdout).toMatch(/<~ {2}250 2\.0\.0 Ok: queued as [0-9A-F]+/);
    const line = await postfix.waitForLog(
      /client=unknown\[203\.0\.113\.5\]:40000, sasl_method=XCLIENT, sasl_username=alice/,
      {
        from,
      },
    );
    expect(line).toBeTruthy();
    const stored = await waitForMessage(dovecot, 'bob', m);
    // Postfix's Received header names the real client and the SASL login.
    expect(stored).toMatch(
      /^Received: from \S+ \(unknown \[203\.0\.113\.5\]\)\r?\n\s+\(Authenticated sender: alice\)/m,
    );
    // bob reads it through the IMAP gateway.
    expect(await imapSubjects(t.port('implicit'), 'bob@example.jp', PRIMARY, m)).toEqual([`swaks 465 ${m}`]);
    const sub = await t.logs.waitFor(
      (l) => l.event === 'submission' && l.result === 'accepted' && l.ip === JAPAN_OVERRIDE,
    );
    expect(sub).toMatchObject({ login: 'alice@example.jp', rcpts: 1, code: 250 });
    expect(sub.queueId).toMatch(/^[0-9A-F]+$/);
    expect(sub.size).toBeGreaterThan(0);
  });

  it('an IPv6 client reaches Postfix as ADDR=IPV6:... and is logged with its address', async () => {
    const m = marker();
    const from = (await postfix.readLog()).length;
    const c = await smtpSession(t.smtpPort('implicit'), { tls: true, from: '2001:db8::5' });
    try {
      expect(await smtpCommand(c, plain('bob@example.jp', PRIMARY))).toMatch(/^235 /);
      expect(await smtpCommand(c, 'MAIL FROM:<bob@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'RCPT TO:<bob@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'DATA')).toMatch(/^354 /);
      expect(await smtpCommand(c, `${message(m, 'bob@example.jp', 'bob@example.jp')}.`)).toMatch(/^250 /);
    } finally {
      c.close();
    }
    await postfix.waitForLog(/client=unknown\[2001:db8::5\]:40000, sasl_method=XCLIENT, sasl_username=bob/, {
      from,
    });
  });

  it('swaks over 587 with STARTTLS', async () => {
    const m = marker();
    const { stdout } = await run('swaks', [
      ...['--server', `127.0.0.1:${t.smtpPort('starttls')}`, '--tls'],
      ...['--auth', 'LOGIN', '--auth-user', 'alice', '--auth-password', imapOnly],
      ...['--from', 'a.li@example.jp', '--to', 'alice@example.jp', '--header', `Subject: swaks 587 ${m}`],
    ]);
    expect(stdout).toMatch(/<~ {2}250 2\.0\.0 Ok: queued as/);
    expect(await imapSubjects(t.port('implicit'), 'alice', imapOnly, m)).toEqual([`swaks 587 ${m}`]);
  });

  it('nodemailer over 465 and over 587 with STARTTLS', async () => {
    const m = marker();
    for (const [port, secure] of [
      [t.smtpPort('implicit'), true],
      [t.smtpPort('starttls'), false],
    ] as const) {
      const transport = nodemailer.createTransport({
        host: '127.0.0.1',
        port,
        secure,
        requireTLS: !secure,
        tls: { rejectUnauthorized: false },
        auth: { user: 'bob@example.jp', pass: PRIMARY },
      });
      const info = await transport.sendMail({
        from: 'bob@example.jp',
        to: 'carol@example.jp',
        subject: `nodemailer ${port} ${m}`,
        text: 'Über 8-bit text, and\n.a line starting with a dot\n',
      });
      expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as/);
      expect(info.accepted).toEqual(['carol@example.jp']);
      transport.close();
    }
    const subjects = await imapSubjects(t.port('implicit'), 'carol@example.jp', PRIMARY, m);
    expect(subjects.sort()).toEqual(
      [`nodemailer ${t.smtpPort('implicit')} ${m}`, `nodemailer ${t.smtpPort('starttls')} ${m}`].sort(),
    );
    // The dot-stuffed line arrives intact.
    const [stored] = await messagesWith(dovecot, 'carol', m);
    expect(stored).toMatch(/\n\.a line starting with a dot/);
  });
});

describe('the login decision for SMTP (docs/rules.md, the login decision; same placements as IMAP)', () => {
  it('IMAP-only password from abroad, everything enforced: 235', async () => {
    await t.ops.setOverseasPhase('enforce');
    await t.ops.setDomesticPhase({ logins: ['alice@example.jp'] }, 'enforce');
    try {
      expect(await authFrom(ABROAD, 'alice@example.jp', imapOnly, 2)).toMatch(/^235 /);
      expect(await authFrom(ABROAD_OVERRIDE, 'ALICE', imapOnly, 1)).toMatch(/^235 /);
    } finally {
      await t.ops.setOverseasPhase('off');
      await t.ops.setDomesticPhase({ logins: ['alice@example.jp'] }, 'off');
    }
  });

  it('primary password while an IMAP-only password is set: 535 saying the IMAP-only password is required', async () => {
    expect(await authFrom(JAPAN, 'alice@example.jp', PRIMARY)).toMatch(/^535 5\.7\.8 .*IMAP-only password/);
  });

  it('overseas restriction enforced: refused from abroad with the reason, let in at home', async () => {
    await t.ops.setOverseasPhase('enforce');
    try {
      expect(await authFrom(ABROAD, 'bob@example.jp', PRIMARY, 1)).toMatch(
        /^535 5\.7\.8 Access from abroad is restricted/,
      );
      expect(await authFrom(ABROAD_OVERRIDE, 'bob@example.jp', PRIMARY, 2)).toMatch(
        /^535 5\.7\.8 Access from abroad/,
      );
      // A private address has no country: it counts as overseas.
      expect(await authFrom('10.1.2.3', 'bob@example.jp', PRIMARY)).toMatch(
        /^535 5\.7\.8 Access from abroad/,
      );
      expect(await authFrom(JAPAN, 'bob@example.jp', PRIMARY, 2)).toMatch(/^235 /);
      expect(await authFrom(JAPAN_OVERRIDE, 'bob@example.jp', PRIMARY, 1)).toMatch(/^235 /);
    } finally {
      await t.ops.setOverseasPhase('off');
    }
  });

  it('domestic restriction enforced for one login: refused at home; another login still gets in', async () => {
    await t.ops.setDomesticPhase({ logins: ['bob@example.jp'] }, 'enforce');
    try {
      expect(await authFrom(JAPAN, 'bob@example.jp', PRIMARY)).toMatch(
        /^535 5\.7\.8 Mail app access with the account password has ended/,
      );
      expect(await authFrom(JAPAN, 'carol@example.jp', PRIMARY)).toMatch(/^235 /);
    } finally {
      await t.ops.setDomesticPhase({ logins: ['bob@example.jp'] }, 'off');
    }
  });

  it('warn phase lets the login in and records what enforce would refuse', async () => {
    await t.ops.setOverseasPhase('warn');
    try {
      expect(await authFrom(ABROAD, 'carol@example.jp', PRIMARY)).toMatch(/^235 /);
      const line = await t.logs.waitFor(
        (l) =>
          l.event === 'auth' && l.protocol === 'smtp' && l.ip === ABROAD && l.login === 'carol@example.jp',
      );
      expect(line).toMatchObject({ result: 'allow', wouldRefuse: ['overseas'] });
    } finally {
      await t.ops.setOverseasPhase('off');
    }
  });

  it('unknown account and wrong password: 535 5.7.8 Authentication failed., AUTH LOGIN too', async () => {
    expect(await authFrom(JAPAN, 'nobody@example.jp', 'whatever')).toBe('535 5.7.8 Authentication failed.');
    expect(await authFrom(JAPAN, 'bob@example.jp', 'wrong')).toBe('535 5.7.8 Authentication failed.');
    const c = await smtpSession(t.smtpPort('implicit'), { tls: true, from: JAPAN });
    try {
      expect(await smtpCommand(c, 'AUTH LOGIN')).toMatch(/^334 /);
      expect(await smtpCommand(c, Buffer.from('alice').toString('base64'))).toMatch(/^334 /);
      expect(await smtpCommand(c, Buffer.from('wrong').toString('base64'))).toBe(
        '535 5.7.8 Authentication failed.',
      );
    } finally {
      c.close();
    }
  });

  it('an authzid naming someone else is refused, even with the right password', async () => {
    const c = await smtpSession(t.smtpPort('implicit'), { tls: true });
    try {
      const blob = Buffer.from(`bob@example.jp\0alice@example.jp\0${imapOnly}`).toString('base64');
      expect(await smtpCommand(c, `AUTH PLAIN ${blob}`)).toMatch(/^535 5\.7\.8 .*another user/);
    } finally {
      c.close();
    }
  });

  it('writes auth lines with protocol smtp and the facts, never a secret', async () => {
    await authFrom(JAPAN_OVERRIDE, 'bob@example.jp', 'a-wrong-secret-xyz');
    const line = await t.logs.waitFor(
      (l) =>
        l.event === 'auth' && l.ip === JAPAN_OVERRIDE && l.reason === 'bad-password' && l.protocol === 'smtp',
    );
    expect(line).toMatchObject({ login: 'bob@example.jp', country: 'JP', asn: 9605, result: 'deny' });
    const all = t.logs.raw.join('\n');
    for (const secret of ['a-wrong-secret-xyz', imapOnly, 'Primary pw', '$argon2', 'AGFsaWNl']) {
      expect(all).not.toContain(secret);
    }
  });

  it('Redis down: 454 4.7.0, and logins work again once it is back', async () => {
    await redis.kill();
    try {
      expect(await authFrom(JAPAN, 'bob@example.jp', PRIMARY)).toMatch(/^454 4\.7\.0 /);
    } finally {
      await redis.restart();
    }
    // The gateway's client reconnects with a back-off of up to 2 s; allow for a loaded machine.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await authFrom(JAPAN, 'bob@example.jp', PRIMARY);
      if (r.startsWith('235 ')) break;
      if (Date.now() > deadline) {
        const recent = t.logs.lines.filter((l) => l.event === 'auth' || l.event === 'upstream').slice(-3);
        throw new Error(`still ${r} after Redis came back; last lines: ${JSON.stringify(recent)}`);
      }
      await new Promise((res) => setTimeout(res, 200));
    }
  });
});

describe('relay: the store decides, the client hears it, nothing is lost or doubled', () => {
  it('a recipient the store refuses gets the store 5xx; the others are delivered', async () => {
    const m = marker();
    const c = await aliceSession();
    try {
      const from = c.lines.length;
      // Pipelined (RFC 2920): replies come back in order.
      c.write(
        'MAIL FROM:<alice@example.jp>\r\nRCPT TO:<nobody@example.jp>\r\nRCPT TO:<bob@example.jp>\r\nDATA\r\n',
      );
      await c.waitFor(/^354 /, { from });
      const replies = c.lines.slice(from).filter((l) => /^\d{3} /.test(l));
      expect(replies[0]).toMatch(/^250 /);
      expect(replies[1]).toMatch(/^550 5\.1\.1 <nobody@example\.jp>: Recipient address rejected/);
      expect(replies[2]).toMatch(/^250 /);
      expect(await smtpCommand(c, `${message(m, 'alice@example.jp', 'bob@example.jp')}.`)).toMatch(
        /^250 2\.0\.0 Ok/,
      );
      await waitForMessage(dovecot, 'bob', m);
    } finally {
      c.close();
    }
  });

  it('the store goes down mid-DATA: 4xx, nothing in any mailbox; resubmitted, it lands exactly once', async () => {
    const m = marker();
    const before = t.logs.lines.length;
    const c = await aliceSession();
    try {
      expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'RCPT TO:<carol@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'DATA')).toMatch(/^354 /);
      c.write(`From: alice@example.jp\r\nSubject: ${m}\r\n\r\nfirst half\r\n`);
      await postfix.waitForLog(/sasl_username=alice/, { from: 0 });
      await new Promise((r) => setTimeout(r, 100));
      await postfix.kill();
      const from = c.lines.length;
      c.write('second half\r\n.\r\n');
      expect(await replyAt(c, from)).toMatch(/^451 4\.4\.1 Connection to the mail server was lost/);
      // The client keeps the message; the store never got a final dot.
      expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp>')).toMatch(/^451 4\.4\.1 /);
    } finally {
      c.close();
      await postfix.restart();
    }
    // Postfix would have delivered it by now if it had accepted it.
    await new Promise((r) => setTimeout(r, 500));
    expect(await messagesWith(dovecot, 'carol', m)).toEqual([]);
    const aborted = await t.logs.waitFor(
      (l) => t.logs.lines.indexOf(l) >= before && l.event === 'submission' && l.result === 'deferred',
    );
    expect(aborted.code).toBe('MG_SMTP_UPSTREAM_CLOSED');

    const c2 = await aliceSession();
    try {
      expect(await smtpCommand(c2, 'MAIL FROM:<alice@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c2, 'RCPT TO:<carol@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c2, 'DATA')).toMatch(/^354 /);
      expect(await smtpCommand(c2, `${message(m, 'alice@example.jp', 'carol@example.jp')}.`)).toMatch(
        /^250 2\.0\.0 Ok/,
      );
    } finally {
      c2.close();
    }
    await waitForMessage(dovecot, 'carol', m);
    await new Promise((r) => setTimeout(r, 300));
    expect(await messagesWith(dovecot, 'carol', m)).toHaveLength(1);
  });

  it('the store is down at AUTH: 454 4.7.0, not a password prompt', async () => {
    await postfix.kill();
    const before = t.logs.lines.length;
    try {
      expect(await authFrom(JAPAN, 'bob@example.jp', PRIMARY)).toMatch(/^454 4\.7\.0 /);
      const up = await t.logs.waitFor(
        (l) => t.logs.lines.indexOf(l) >= before && l.event === 'upstream' && l.protocol === 'smtp',
      );
      expect(up.code).toBe('MG_SMTP_UPSTREAM_CONNECT');
    } finally {
      await postfix.restart();
    }
  });

  it('the client goes away mid-DATA: the store transaction is abandoned, nothing delivered', async () => {
    const m = marker();
    const c = await aliceSession();
    expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp>')).toMatch(/^250 /);
    expect(await smtpCommand(c, 'RCPT TO:<bob@example.jp>')).toMatch(/^250 /);
    expect(await smtpCommand(c, 'DATA')).toMatch(/^354 /);
    c.write(`Subject: ${m}\r\n\r\nalmost\r\n`);
    await new Promise((r) => setTimeout(r, 100));
    c.close();
    const line = await t.logs.waitFor((l) => l.event === 'submission' && l.result === 'aborted');
    expect(line.login).toBe('alice@example.jp');
    await postfix.waitForLog(/lost connection after DATA/);
    await new Promise((r) => setTimeout(r, 300));
    expect(await messagesWith(dovecot, 'bob', m)).toEqual([]);
  });

  it("an envelope sender that is not one of the account's addresses is refused; an alias is fine", async () => {
    const c = await aliceSession();
    try {
      expect(await smtpCommand(c, 'MAIL FROM:<bob@example.jp>')).toMatch(
        /^553 5\.7\.1 <bob@example\.jp>: Sender address rejected/,
      );
      expect(await smtpCommand(c, 'MAIL FROM:<A.Li@Example.JP>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'RSET')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'MAIL FROM:<>')).toMatch(/^250 /); // read receipts (RFC 8098)
    } finally {
      c.close();
    }
  });

  it('oversize: SIZE= over the limit gets 552 at MAIL; a message over it gets 552 and is not delivered', async () => {
    const m = marker();
    const c = await aliceSession();
    try {
      expect(await smtpCommand(c, `MAIL FROM:<alice@example.jp> SIZE=${MAX_MESSAGE_BYTES + 1}`)).toMatch(
        /^552 /,
      );
      expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'RCPT TO:<bob@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'DATA')).toMatch(/^354 /);
      const line = `${'x'.repeat(998)}\r\n`;
      c.write(`Subject: ${m}\r\n\r\n${line.repeat(Math.ceil(MAX_MESSAGE_BYTES / line.length) + 10)}`);
      expect(await smtpCommand(c, '.')).toMatch(/^552 /);
      // The session goes on.
      expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp>')).toMatch(/^250 /);
    } finally {
      c.close();
    }
    await t.logs.waitFor((l) => l.event === 'submission' && l.result === 'too-large');
    await new Promise((r) => setTimeout(r, 300));
    expect(await messagesWith(dovecot, 'bob', m)).toEqual([]);
  });

  it('8BITMIME and SMTPUTF8 are passed through to the store', async () => {
    const m = marker();
    const c = await aliceSession();
    try {
      expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp> BODY=8BITMIME SMTPUTF8')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'RCPT TO:<bob@example.jp>')).toMatch(/^250 /);
      expect(await smtpCommand(c, 'DATA')).toMatch(/^354 /);
      expect(await smtpCommand(c, `Subject: ${m}\r\n\r\nこんにちは\r\n.`)).toMatch(/^250 /);
    } finally {
      c.close();
    }
    expect(await waitForMessage(dovecot, 'bob', m)).toContain('こんにちは');
  });

  it('587: AUTH before STARTTLS is refused', async () => {
    const c = await smtpSession(t.smtpPort('starttls'));
    try {
      expect(c.lines.join('\n')).toMatch(/250-STARTTLS|250 STARTTLS/);
      expect(await smtpCommand(c, plain('alice@example.jp', imapOnly))).toMatch(/^538 /);
      expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp>')).toMatch(/^530 5\.7\.0 /);
      expect(await smtpCommand(c, 'STARTTLS')).toMatch(/^220 /);
      await c.startTls();
      expect(await smtpCommand(c, 'EHLO client.example')).toMatch(/^250 /);
      expect(await smtpCommand(c, plain('alice@example.jp', imapOnly))).toMatch(/^235 /);
    } finally {
      c.close();
    }
  });

  it('a replaced IMAP-only password ends the open SMTP session (rules.md R4); the new one works', async () => {
    const c = await aliceSession();
    try {
      expect(await smtpCommand(c, 'MAIL FROM:<alice@example.jp>')).toMatch(/^250 /);
      imapOnly = await issueForSwaks('alice@example.jp');
      expect(await c.waitFor(/^421 /, { timeoutMs: 5_000 })).toMatch(/^421 4\.7\.0 .*password was changed/);
      await c.waitClosed();
    } finally {
      c.close();
    }
    (await aliceSession()).close();
  });

  it('a PROXY header from a peer that is not trusted is refused, not read as commands', async () => {
    const c = await RawClient.connect(t.smtpPort('none'), {
      prefix: 'PROXY TCP4 8.8.8.8 127.0.0.1 1 25\r\n',
    });
    await c.waitClosed();
    expect(c.lines.join('\n')).toMatch(/^421 4\.7\.0 PROXY protocol header not accepted/m);
    await t.logs.waitFor((l) => l.event === 'connection' && l.reason === 'untrusted-proxy-header');
  });
});
