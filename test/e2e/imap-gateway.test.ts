import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { loginFrom } from '../support/raw-client.js';

const run = promisify(execFile);

// Client placement (geo.overrides in the test gateway and the bundled database):
const JAPAN = '49.96.0.1'; // NTT DOCOMO, JP in the database
const JAPAN_OVERRIDE = '203.0.113.5'; // carrier range pinned to JP by geo.overrides
const ABROAD = '8.8.8.8'; // US
const ABROAD_OVERRIDE = '198.51.100.7'; // VPN exit pinned to US by geo.overrides

const PRIMARY = 'Primary pw "with" \\ quirks';

let redis: RedisServer;
let dovecot: DovecotServer;
let t: TestGateway;
let imapOnly: string; // alice's IMAP-only password

/** One LOGIN from `ip`, by a PROXY v1 or v2 header, over the plain or the implicit-TLS listener. */
function loginAt(ip: string, user: string, pass: string, v: 1 | 2 = 2, tls = false): Promise<string> {
  return loginFrom(t.port(tls ? 'implicit' : 'none'), ip, user, pass, { proxyVersion: v, tls });
}

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis(),
    startDovecot({
      users: ['alice', 'bob', 'carol'].map((user) => ({ user, password: 'store-only-password' })),
    }),
  ]);
  t = await startTestGateway({ redis, dovecot });
  await t.ops.addAccount({
    login: 'alice@example.jp',
    aliases: ['alice'],
    primaryPassword: PRIMARY,
    upstreamUser: 'alice',
  });
  await t.ops.addAccount({ login: 'bob@example.jp', primaryPassword: PRIMARY, upstreamUser: 'bob' });
  await t.ops.addAccount({ login: 'carol@example.jp', primaryPassword: PRIMARY, upstreamUser: 'carol' });
  imapOnly = (await t.ops.issueImapPassword('alice@example.jp', { ifAbsent: false })).password!;
  await dovecot.deliver(
    'alice',
    'From: a@example.jp\r\nTo: alice@example.jp\r\nSubject: hello through the gateway\r\n\r\nbody text 12345\r\n',
  );
});

afterAll(async () => {
  await t?.close();
  await Promise.all([dovecot?.stop(), redis?.stop()]);
});

describe('real clients through the gateway', () => {
  it('imapflow over implicit TLS: login, list, fetch a stored message, IDLE sees a new message', async () => {
    const client = new ImapFlow({
      host: '127.0.0.1',
      port: t.port('implicit'),
      secure: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'alice', pass: imapOnly },
      logger: false,
    });
    await client.connect();
    const boxes = await client.list();
    expect(boxes.map((b) => b.path)).toContain('INBOX');
    const lock = await client.getMailboxLock('INBOX');
    try {
      const msg = await client.fetchOne('1', { source: true, envelope: true });
      if (!msg) throw new Error('message 1 not found');
      expect(msg.envelope?.subject).toBe('hello through the gateway');
      expect(msg.source?.toString()).toContain('body text 12345');

      const exists = new Promise<number>((resolve) =>
        client.on('exists', (d: { count: number }) => resolve(d.count)),
      );
      const idle = client.idle();
      const other = new ImapFlow({
        host: '127.0.0.1',
        port: t.port('implicit'),
        secure: true,
        tls: { rejectUnauthorized: false },
        auth: { user: 'alice@example.jp', pass: imapOnly },
        logger: false,
      });
      await other.connect();
      await other.append('INBOX', 'Subject: appended\r\n\r\nhi\r\n');
      await other.logout();
      expect(await exists).toBe(2);
      void idle;
    } finally {
      lock.release();
      await client.logout();
    }
  });

  it('imapflow with STARTTLS', async () => {
    const client = new ImapFlow({
      host: '127.0.0.1',
      port: t.port('starttls'),
      secure: false,
      doSTARTTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'alice@example.jp', pass: imapOnly },
      logger: false,
    });
    await client.connect();
    expect(client.secureConnection).toBe(true);
    const status = await client.status('INBOX', { messages: true });
    if (!status) throw new Error('STATUS failed');
    expect(status.messages).toBeGreaterThanOrEqual(1);
    await client.logout();
  });

  it("Python's imaplib: LOGIN with a password holding a space, quotes and a backslash; AUTHENTICATE PLAIN", async () => {
    const script = `
import imaplib, ssl, sys
mode, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL('127.0.0.1', port, ssl_context=ctx)
if mode == 'login':
    m.login(user, pw)
else:
    m.authenticate('PLAIN', lambda _: ('\\0' + user + '\\0' + pw).encode())
typ, data = m.select('INBOX')
print(mode, typ, data[0].decode())
m.logout()
`;
    const port = String(t.port('implicit'));
    // bob has no IMAP-only password and no restriction applies: the primary password works.
    // imaplib sends it as a quoted string with escapes.
    const login = await run('python3', ['-c', script, 'login', port, 'bob@example.jp', PRIMARY]);
    expect(login.stdout).toMatch(/^login OK \d+/);
    const plain = await run('python3', ['-c', script, 'plain', port, 'alice', imapOnly]);
    expect(plain.stdout).toMatch(/^plain OK \d+/);
  });
});

describe('the login decision, end to end (docs/rules.md, the login decision)', () => {
  it('IMAP-only password from abroad, everything enforced: in', async () => {
    await t.ops.setOverseasPhase('enforce');
    await t.ops.setDomesticPhase({ logins: ['alice@example.jp'] }, 'enforce');
    try {
      expect(await loginAt(ABROAD, 'alice@example.jp', imapOnly, 2)).toMatch(/^a OK \[CAPABILITY .*IMAP4/);
      expect(await loginAt(ABROAD_OVERRIDE, 'ALICE', imapOnly, 1)).toMatch(/^a OK/);
    } finally {
      await t.ops.setOverseasPhase('off');
      await t.ops.setDomesticPhase({ logins: ['alice@example.jp'] }, 'off');
    }
  });

  it('primary password while an IMAP-only password is set: refused, saying the IMAP-only password is required', async () => {
    const reply = await loginAt(JAPAN, 'alice@example.jp', PRIMARY);
    expect(reply).toMatch(/^a NO \[ALERT\] .*IMAP-only password/);
  });

  it('primary password from abroad with the overseas restriction enforced: refused with the reason', async () => {
    await t.ops.setOverseasPhase('enforce');
    try {
      expect(await loginAt(ABROAD, 'bob@example.jp', PRIMARY, 1)).toMatch(
        /^a NO \[ALERT\] Access from abroad is restricted/,
      );
      expect(await loginAt(ABROAD_OVERRIDE, 'bob@example.jp', PRIMARY, 2)).toMatch(
        /^a NO \[ALERT\] Access from abroad/,
      );
      // The same account at home is let in (rules.md R9: only overseas is enforced).
      expect(await loginAt(JAPAN, 'bob@example.jp', PRIMARY, 2)).toMatch(/^a OK/);
      expect(await loginAt(JAPAN_OVERRIDE, 'bob@example.jp', PRIMARY, 1, true)).toMatch(/^a OK/);
    } finally {
      await t.ops.setOverseasPhase('off');
    }
  });

  it('unknown country counts as overseas', async () => {
    await t.ops.setOverseasPhase('enforce');
    try {
      // A private address has no country (special-purpose ranges are never looked up).
      expect(await loginAt('10.1.2.3', 'bob@example.jp', PRIMARY)).toMatch(
        /^a NO \[ALERT\] Access from abroad/,
      );
    } finally {
      await t.ops.setOverseasPhase('off');
    }
  });

  it('domestic restriction enforced for one login: refused at home; another login still gets in', async () => {
    await t.ops.setDomesticPhase({ logins: ['bob@example.jp'] }, 'enforce');
    try {
      expect(await loginAt(JAPAN, 'bob@example.jp', PRIMARY)).toMatch(
        /^a NO \[ALERT\] Mail app access with the account password has ended/,
      );
      await t.ops.revokeImapPassword('carol@example.jp');
      expect(await loginAt(JAPAN, 'carol@example.jp', PRIMARY)).toMatch(/^a OK/);
    } finally {
      await t.ops.setDomesticPhase({ logins: ['bob@example.jp'] }, 'off');
    }
  });

  it('warn phase lets the login in and records what enforce would refuse', async () => {
    await t.ops.setOverseasPhase('warn');
    try {
      expect(await loginAt(ABROAD, 'bob@example.jp', PRIMARY)).toMatch(/^a OK/);
      const line = await t.logs.waitFor(
        (l) => l.event === 'auth' && l.ip === ABROAD && l.login === 'bob@example.jp' && l.result === 'allow',
      );
      expect(line.wouldRefuse).toEqual(['overseas']);
    } finally {
      await t.ops.setOverseasPhase('off');
    }
  });

  it('unknown account and wrong password get [AUTHENTICATIONFAILED]', async () => {
    expect(await loginAt(JAPAN, 'nobody@example.jp', 'whatever')).toBe(
      'a NO [AUTHENTICATIONFAILED] Authentication failed.',
    );
    expect(await loginAt(JAPAN, 'bob@example.jp', 'wrong')).toBe(
      'a NO [AUTHENTICATIONFAILED] Authentication failed.',
    );
    expect(await loginAt(JAPAN, 'alice@example.jp', 'wrong')).toBe(
      'a NO [AUTHENTICATIONFAILED] Authentication failed.',
    );
  });

  it('writes one auth line per attempt with the facts and no secret', async () => {
    const before = t.logs.lines.length;
    await loginAt(JAPAN_OVERRIDE, 'bob@example.jp', 'a-wrong-secret-xyz');
    const line = await t.logs.waitFor(
      (l) => l.event === 'auth' && l.ip === JAPAN_OVERRIDE && l.reason === 'bad-password',
    );
    expect(line).toMatchObject({
      login: 'bob@example.jp',
      country: 'JP',
      asn: 9605,
      protocol: 'imap',
      result: 'deny',
    });
    expect(typeof line.ms).toBe('number');
    const all = t.logs.raw.join('\n');
    for (const secret of ['a-wrong-secret-xyz', imapOnly, 'Primary pw', dovecot.masterPassword, '$argon2']) {
      expect(all).not.toContain(secret);
    }
    expect(t.logs.lines.length).toBeGreaterThan(before);
  });

  it("Dovecot's log shows the real client address, not the gateway's", async () => {
    const from = (await dovecot.readLog()).length;
    expect(await loginAt(JAPAN_OVERRIDE, 'alice@example.jp', imapOnly)).toMatch(/^a OK/);
    const line = await dovecot.waitForLog(/rip=203\.0\.113\.5/, { from });
    expect(line).toMatch(/alice/);
  });
});
