import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';
import { encodeProxyV1, encodeProxyV2, type ProxyHeader } from '../../src/net/proxy-protocol.js';
import { LOAD_BALANCER_IP, type RawConfig, startTestGateway, type TestGateway } from '../support/gateway.js';
import { RawClient } from '../support/raw-client.js';

/**
 * Black-box conversations with a real gateway in front of real Redis and Dovecot: one wire
 * scenario per test, asserting the exact lines the client sees (RFC 9051, RFC 7888 literals,
 * RFC 4959 SASL-IR, RFC 5530 response codes, the PROXY protocol spec).
 */

// bob has no IMAP-only password and no restriction applies, so his primary password logs in.
const USER = 'bob@example.jp';
const PRIMARY = 'Primary pw "with" \\ quirks';
const MESSAGE_TEXT = 'pipelined body text 67890';

const GREETING_TEXT = 'mailgate ready.';
const CAPS = 'IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN AUTH=LOGIN';
const CAPS_BEFORE_STARTTLS = 'IMAP4rev1 SASL-IR ID LITERAL+ STARTTLS LOGINDISABLED';
const UNKNOWN = 'BAD Unknown command or not valid before login.';
const AUTH_FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
const TEMP_FAILED = 'NO [UNAVAILABLE] Temporary authentication failure, please try again later.';
const LOGGED_IN = /^a OK \[CAPABILITY IMAP4rev1 [^\]]*\] Logged in$/;

// Limits of the second gateway, small so that every limit is reached in a few milliseconds.
const LIMITS = {
  preauthTimeoutMs: 400,
  maxBadCommands: 3,
  maxAuthFailures: 2,
  maxLineBytes: 1024,
  maxConnectionsPerIp: 3,
};
const PROXY_TIMEOUT_MS = 300;

let redis: RedisServer;
let dovecot: DovecotServer;
/** One key prefix for every gateway of this file, so they all see the same accounts. */
const keyPrefix = `conv${Date.now()}:`;
let t: TestGateway;
let lim: TestGateway;

const open: RawClient[] = [];

async function connect(port: number, opts: Parameters<typeof RawClient.connect>[1] = {}): Promise<RawClient> {
  const c = await RawClient.connect(port, opts);
  open.push(c);
  return c;
}

/** Connects and waits for the greeting. */
async function greeted(port: number, opts: Parameters<typeof RawClient.connect>[1] = {}): Promise<RawClient> {
  const c = await connect(port, opts);
  await c.waitFor(/^\* OK /);
  return c;
}

/** A continuation request (RFC 9051 §7.5). */
const CONTINUATION = /^\+/;
/** An untagged BAD, for input that has no readable tag. */
const UNTAGGED_BAD = /^\* BAD /;

/**
 * Writes `data` and resolves with every line received from then on, up to and including the
 * tagged reply for `until` (a tag), or the first line matching `until` (a pattern).
 */
async function exchange(c: RawClient, data: string | Buffer, until: string | RegExp): Promise<string[]> {
  const from = c.lines.length;
  c.write(data);
  const pattern = typeof until === 'string' ? new RegExp(`^${until} (OK|NO|BAD)\\b`) : until;
  const done = await c.waitFor(pattern, { from });
  return c.lines.slice(from, c.lines.indexOf(done, from) + 1);
}

function quote(s: string): string {
  return `"${s.replace(/[\\"]/g, (ch) => `\\${ch}`)}"`;
}

function b64(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64');
}

const PLAIN_IR = b64(`\0${USER}\0${PRIMARY}`);
const LOGIN_CMD = `LOGIN ${USER} ${quote(PRIMARY)}`;

function proxyHeader(ip: string): Extract<ProxyHeader, { command: 'proxy' }> {
  return {
    command: 'proxy',
    family: 'tcp4',
    sourceAddress: ip,
    sourcePort: 40000,
    destinationAddress: '127.0.0.1',
    destinationPort: 993,
  };
}

/** Deterministic bytes with NULs and no LF, so they form one line. */
function garbage(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const b = (x >>> 16) & 0xff;
    out[i] = b === 0x0a || i % 37 === 0 ? 0x00 : b;
  }
  return out;
}

/** Collects CRLF lines from `socket`; the returned function waits for the first matching one. */
function lineReader(socket: tls.TLSSocket): (re: RegExp) => Promise<string> {
  const lines: string[] = [];
  let buf = '';
  let wake = () => {};
  socket.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 2);
    }
    wake();
  });
  return async (re) => {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const hit = lines.find((l) => re.test(l));
      if (hit !== undefined) return hit;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; got:\n${lines.join('\n')}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis(),
    startDovecot({ users: ['alice', 'bob'].map((user) => ({ user, password: 'store-only-password' })) }),
  ]);
  [t, lim] = await Promise.all([
    startTestGateway({ redis, dovecot, keyPrefix }),
    startTestGateway({
      redis,
      dovecot,
      keyPrefix,
      configure: (raw) => {
        raw.imap.limits = LIMITS;
        raw.proxyProtocol.timeoutMs = PROXY_TIMEOUT_MS;
      },
    }),
  ]);
  await t.ops.addAccount({ login: USER, primaryPassword: PRIMARY, upstreamUser: 'bob' });
  await dovecot.deliver(
    'bob',
    `From: a@example.jp\r\nTo: ${USER}\r\nSubject: pipelining\r\n\r\n${MESSAGE_TEXT}\r\n`,
  );
});

afterEach(() => {
  for (const c of open.splice(0)) c.close();
});

afterAll(async () => {
  await Promise.all([t?.close(), lim?.close()]);
  await Promise.all([dovecot?.stop(), redis?.stop()]);
});

describe('greeting', () => {
  it('implicit TLS and plaintext listeners: capabilities with IMAP4rev1 and AUTH=PLAIN', async () => {
    for (const mode of ['implicit', 'none'] as const) {
      const c = await greeted(t.port(mode), { tls: mode === 'implicit' });
      expect(c.lines).toEqual([`* OK [CAPABILITY ${CAPS}] ${GREETING_TEXT}`]);
    }
  });

  it('STARTTLS listener: STARTTLS and LOGINDISABLED, no AUTH=', async () => {
    const c = await greeted(t.port('starttls'));
    expect(c.lines).toEqual([`* OK [CAPABILITY ${CAPS_BEFORE_STARTTLS}] ${GREETING_TEXT}`]);
    expect(c.lines[0]).not.toContain('AUTH=');
  });
});

describe('STARTTLS and LOGINDISABLED (RFC 9051 §6.2.1, §6.2.3)', () => {
  it('LOGIN and AUTHENTICATE before STARTTLS get NO [PRIVACYREQUIRED]; after it, LOGIN works', async () => {
    const c = await greeted(t.port('starttls'));
    expect(await exchange(c, `a ${LOGIN_CMD}\r\n`, 'a')).toEqual([
      'a NO [PRIVACYREQUIRED] Run STARTTLS first.',
    ]);
    expect(await exchange(c, `b AUTHENTICATE PLAIN ${PLAIN_IR}\r\n`, 'b')).toEqual([
      'b NO [PRIVACYREQUIRED] Run STARTTLS first.',
    ]);
    expect(await exchange(c, 'c AUTHENTICATE LOGIN\r\n', 'c')).toEqual([
      'c NO [PRIVACYREQUIRED] Run STARTTLS first.',
    ]);
    expect(await exchange(c, 'd STARTTLS\r\n', 'd')).toEqual(['d OK Begin TLS negotiation now.']);
    await c.startTls();
    expect(await exchange(c, 'e CAPABILITY\r\n', 'e')).toEqual([
      `* CAPABILITY ${CAPS}`,
      'e OK CAPABILITY completed.',
    ]);
    const login = await exchange(c, `a ${LOGIN_CMD}\r\n`, 'a');
    expect(login).toHaveLength(1);
    expect(login[0]).toMatch(LOGGED_IN);
  });

  it('commands pipelined after STARTTLS are discarded, never run (CVE-2011-0411)', async () => {
    const c = await greeted(t.port('starttls'));
    const from = c.lines.length;
    c.write('a STARTTLS\r\nb CAPABILITY\r\n');
    await c.waitFor(/^a OK/, { from });
    await c.startTls();
    c.write('c NOOP\r\n');
    await c.waitFor(/^c OK/, { from });
    // Had "b CAPABILITY" run, before or after the handshake, its reply would precede c's.
    expect(c.lines.slice(from)).toEqual(['a OK Begin TLS negotiation now.', 'c OK NOOP completed.']);
    expect(c.lines.filter((l) => l.startsWith('b ') || l.startsWith('* CAPABILITY'))).toEqual([]);
  });

  it('STARTTLS on the implicit-TLS and plaintext listeners: BAD', async () => {
    for (const mode of ['implicit', 'none'] as const) {
      const c = await greeted(t.port(mode), { tls: mode === 'implicit' });
      expect(await exchange(c, 'a STARTTLS\r\n', 'a')).toEqual([
        'a BAD TLS is already active or not offered here.',
      ]);
      expect(await exchange(c, 'b NOOP\r\n', 'b')).toEqual(['b OK NOOP completed.']);
    }
  });

  it('STARTTLS a second time: BAD', async () => {
    const c = await greeted(t.port('starttls'));
    expect(await exchange(c, 'a STARTTLS\r\n', 'a')).toEqual(['a OK Begin TLS negotiation now.']);
    await c.startTls();
    expect(await exchange(c, 'b STARTTLS\r\n', 'b')).toEqual([
      'b BAD TLS is already active or not offered here.',
    ]);
  });
});

describe('LOGIN', () => {
  const pw = Buffer.from(PRIMARY, 'utf8');

  it('password as a synchronising literal: "+" first, then the bytes', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, `a LOGIN ${USER} {${pw.length}}\r\n`, CONTINUATION)).toEqual([
      '+ Ready for literal data',
    ]);
    const login = await exchange(c, Buffer.concat([pw, Buffer.from('\r\n')]), 'a');
    expect(login).toHaveLength(1);
    expect(login[0]).toMatch(LOGGED_IN);
  });

  it('user name and password both as synchronising literals', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, `a LOGIN {${USER.length}}\r\n`, CONTINUATION)).toEqual([
      '+ Ready for literal data',
    ]);
    expect(await exchange(c, `${USER} {${pw.length}}\r\n`, CONTINUATION)).toEqual([
      '+ Ready for literal data',
    ]);
    const login = await exchange(c, Buffer.concat([pw, Buffer.from('\r\n')]), 'a');
    expect(login).toHaveLength(1);
    expect(login[0]).toMatch(LOGGED_IN);
  });

  it('non-synchronising literals (RFC 7888) in one write: no "+", logged in', async () => {
    const c = await greeted(t.port('none'));
    const login = await exchange(
      c,
      Buffer.concat([
        Buffer.from(`a LOGIN {${USER.length}+}\r\n${USER} {${pw.length}+}\r\n`),
        pw,
        Buffer.from('\r\n'),
      ]),
      'a',
    );
    expect(login).toHaveLength(1);
    expect(login[0]).toMatch(LOGGED_IN);
  });

  it('pipelined after a refused LOGIN: the next command runs after the NO', async () => {
    const c = await greeted(t.port('none'));
    const from = c.lines.length;
    c.write(`a LOGIN ${USER} wrong-password\r\nb NOOP\r\n`);
    await c.waitFor(/^b /, { from });
    expect(c.lines.slice(from)).toEqual([`a ${AUTH_FAILED}`, 'b OK NOOP completed.']);
  });

  it('pipelined across LOGIN: SELECT, FETCH and LOGOUT reach the store in order', async () => {
    const c = await greeted(t.port('none'));
    const from = c.lines.length;
    c.write(`a ${LOGIN_CMD}\r\nb SELECT INBOX\r\nc FETCH 1 (BODY[])\r\nd LOGOUT\r\n`);
    await c.waitFor(/^d OK/, { from });
    await c.waitClosed();
    const lines = c.lines.slice(from);
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const a = at(LOGGED_IN);
    const b = at(/^b OK /);
    const fetch = at(/^\* 1 FETCH \(.*BODY\[\] \{\d+\}$/);
    const cOk = at(/^c OK /);
    const bye = at(/^\* BYE /);
    const d = at(/^d OK /);
    const order = [a, b, fetch, cOk, bye, d];
    expect(order).not.toContain(-1);
    expect(order).toEqual([...order].sort((x, y) => x - y));
    expect(a).toBe(0);
    expect(lines.slice(fetch, cOk)).toContain(MESSAGE_TEXT);
    expect(lines.filter((l) => /^[abcd] (NO|BAD)/.test(l))).toEqual([]);
  });
});

describe('AUTHENTICATE (RFC 9051 §6.2.2, RFC 4959)', () => {
  it('PLAIN with an initial response', async () => {
    const c = await greeted(t.port('none'));
    const reply = await exchange(c, `a AUTHENTICATE PLAIN ${PLAIN_IR}\r\n`, 'a');
    expect(reply).toHaveLength(1);
    expect(reply[0]).toMatch(LOGGED_IN);
  });

  it('PLAIN with an empty continuation, then the response', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a AUTHENTICATE PLAIN\r\n', CONTINUATION)).toEqual(['+ ']);
    const reply = await exchange(c, `${PLAIN_IR}\r\n`, 'a');
    expect(reply).toHaveLength(1);
    expect(reply[0]).toMatch(LOGGED_IN);
  });

  it('a PLAIN response sent along with the command, before the "+": still read as the response', async () => {
    const c = await greeted(t.port('none'));
    const from = c.lines.length;
    c.write(`a AUTHENTICATE PLAIN\r\n${PLAIN_IR}\r\n`);
    await c.waitFor(/^a /, { from });
    const lines = c.lines.slice(from);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe('+ ');
    expect(lines[1]).toMatch(LOGGED_IN);
  });

  it('LOGIN with its two continuations', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a AUTHENTICATE LOGIN\r\n', CONTINUATION)).toEqual(['+ VXNlcm5hbWU6']);
    expect(await exchange(c, `${b64(USER)}\r\n`, CONTINUATION)).toEqual(['+ UGFzc3dvcmQ6']);
    const reply = await exchange(c, `${b64(PRIMARY)}\r\n`, 'a');
    expect(reply).toHaveLength(1);
    expect(reply[0]).toMatch(LOGGED_IN);
  });

  it('"*" cancels with a tagged BAD; a LOGIN on the same connection then works', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a AUTHENTICATE PLAIN\r\n', CONTINUATION)).toEqual(['+ ']);
    expect(await exchange(c, '*\r\n', 'a')).toEqual(['a BAD Authentication cancelled.']);
    expect(await exchange(c, 'b AUTHENTICATE LOGIN\r\n', CONTINUATION)).toEqual(['+ VXNlcm5hbWU6']);
    expect(await exchange(c, `${b64(USER)}\r\n`, CONTINUATION)).toEqual(['+ UGFzc3dvcmQ6']);
    expect(await exchange(c, '*\r\n', 'b')).toEqual(['b BAD Authentication cancelled.']);
    const login = await exchange(c, `a ${LOGIN_CMD}\r\n`, 'a');
    expect(login).toHaveLength(1);
    expect(login[0]).toMatch(LOGGED_IN);
  });

  it('invalid base64, in a continuation or as the initial response: BAD, connection usable', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a AUTHENTICATE PLAIN\r\n', CONTINUATION)).toEqual(['+ ']);
    expect(await exchange(c, 'not*base64!\r\n', 'a')).toEqual(['a BAD Invalid base64 data.']);
    expect(await exchange(c, 'b AUTHENTICATE PLAIN AB@C\r\n', 'b')).toEqual(['b BAD Invalid base64 data.']);
    expect(await exchange(c, 'c NOOP\r\n', 'c')).toEqual(['c OK NOOP completed.']);
  });

  it('unsupported mechanism: NO', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a AUTHENTICATE CRAM-MD5\r\n', 'a')).toEqual([
      'a NO [CANNOT] Unsupported authentication mechanism.',
    ]);
    expect(await exchange(c, 'b NOOP\r\n', 'b')).toEqual(['b OK NOOP completed.']);
  });
});

describe('other commands before login', () => {
  it('ID answers with our own ID, whatever the client sends (RFC 2971)', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a ID ("name" "conversation-test" "version" "1")\r\n', 'a')).toEqual([
      '* ID ("name" "mailgate")',
      'a OK ID completed.',
    ]);
    expect(await exchange(c, 'b ID NIL\r\n', 'b')).toEqual([
      '* ID ("name" "mailgate")',
      'b OK ID completed.',
    ]);
  });

  it('NOOP and CAPABILITY', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a NOOP\r\n', 'a')).toEqual(['a OK NOOP completed.']);
    expect(await exchange(c, 'b CAPABILITY\r\n', 'b')).toEqual([
      `* CAPABILITY ${CAPS}`,
      'b OK CAPABILITY completed.',
    ]);
  });

  it('LOGOUT: BYE, then OK, then the connection closes', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a LOGOUT\r\n', 'a')).toEqual(['* BYE Logging out.', 'a OK LOGOUT completed.']);
    await c.waitClosed();
  });

  it('unknown command: tagged BAD', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a XYZZY 1 2 3\r\n', 'a')).toEqual([`a ${UNKNOWN}`]);
    expect(await exchange(c, 'b NOOP\r\n', 'b')).toEqual(['b OK NOOP completed.']);
  });

  it('a command valid only after login (SELECT): tagged BAD', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, 'a SELECT INBOX\r\n', 'a')).toEqual([`a ${UNKNOWN}`]);
    expect(await exchange(c, 'b FETCH 1:* FLAGS\r\n', 'b')).toEqual([`b ${UNKNOWN}`]);
  });
});

describe('hostile and broken input', () => {
  it('binary garbage with NUL bytes: BAD replies, and the gateway keeps serving', async () => {
    const c = await greeted(t.port('none'));
    // Starting with NUL: no tag can be read.
    const first = Buffer.concat([Buffer.from([0]), garbage(300, 0x2f6b1d), Buffer.from('X\r\n')]);
    expect(await exchange(c, first, UNTAGGED_BAD)).toEqual(['* BAD Invalid tag']);
    // A tag and a verb, then garbage: the tag is known, so the BAD is tagged.
    const second = Buffer.concat([Buffer.from('g LOGIN '), garbage(300, 0x1234567), Buffer.from('X\r\n')]);
    const reply = await exchange(c, second, 'g');
    expect(reply).toHaveLength(1);
    expect(reply[0]).toMatch(/^g BAD /);
    expect(await exchange(c, 'h NOOP\r\n', 'h')).toEqual(['h OK NOOP completed.']);
    const fresh = await greeted(t.port('none'));
    expect(await exchange(fresh, 'a NOOP\r\n', 'a')).toEqual(['a OK NOOP completed.']);
  });

  it('an empty line: untagged BAD, connection usable', async () => {
    const c = await greeted(t.port('none'));
    expect(await exchange(c, '\r\n', UNTAGGED_BAD)).toEqual(['* BAD Empty command line']);
    expect(await exchange(c, 'a NOOP\r\n', 'a')).toEqual(['a OK NOOP completed.']);
  });

  it('an HTTP request on the IMAP port: one BAD per line, and the gateway keeps serving', async () => {
    const c = await greeted(t.port('none'));
    const from = c.lines.length;
    c.write('GET / HTTP/1.1\r\nHost: mail.example.jp\r\nUser-Agent: curl/8.5.0\r\n\r\n');
    await c.waitFor(/^\* BAD/, { from });
    expect(c.lines.slice(from)).toEqual([
      `GET ${UNKNOWN}`,
      `Host: ${UNKNOWN}`,
      `User-Agent: ${UNKNOWN}`,
      '* BAD Empty command line',
    ]);
    const fresh = await greeted(t.port('none'));
    expect(await exchange(fresh, 'a NOOP\r\n', 'a')).toEqual(['a OK NOOP completed.']);
  });

  it('a line longer than maxLineBytes, without CRLF: BYE and close', async () => {
    const c = await greeted(lim.port('none'));
    const from = c.lines.length;
    c.write(`a LOGIN ${'x'.repeat(LIMITS.maxLineBytes + 100)}`);
    await c.waitClosed();
    expect(c.lines.slice(from)).toEqual(['* BYE Command line too long']);
  });

  it('an oversized synchronising literal: tagged BAD and no "+"; the connection stays usable', async () => {
    const c = await greeted(t.port('none'));
    const from = c.lines.length;
    expect(await exchange(c, `a LOGIN ${USER} {100000}\r\n`, 'a')).toEqual(['a BAD Literal too large']);
    expect(await exchange(c, 'b NOOP\r\n', 'b')).toEqual(['b OK NOOP completed.']);
    expect(c.lines.slice(from)).toEqual(['a BAD Literal too large', 'b OK NOOP completed.']);
    const login = await exchange(c, `c ${LOGIN_CMD}\r\n`, 'c');
    expect(login).toHaveLength(1);
    expect(login[0]).toMatch(/^c OK \[CAPABILITY IMAP4rev1 [^\]]*\] Logged in$/);
  });

  it('an oversized non-synchronising literal: BYE and close (its bytes are on their way already)', async () => {
    const c = await greeted(t.port('none'));
    const from = c.lines.length;
    c.write(`a LOGIN ${USER} {100000+}\r\n${'x'.repeat(2000)}`);
    await c.waitClosed();
    expect(c.lines.slice(from)).toEqual(['* BYE Literal too large']);
  });
});

describe('limits', () => {
  it(`after maxBadCommands (${LIMITS.maxBadCommands}) bad commands: BYE and close`, async () => {
    const c = await greeted(lim.port('none'));
    expect(await exchange(c, 'a FOO\r\n', 'a')).toEqual([`a ${UNKNOWN}`]);
    expect(await exchange(c, 'b SELECT INBOX\r\n', 'b')).toEqual([`b ${UNKNOWN}`]);
    const from = c.lines.length;
    c.write('c BAR\r\n');
    await c.waitClosed();
    expect(c.lines.slice(from)).toEqual([`c ${UNKNOWN}`, '* BYE Too many invalid commands.']);
  });

  it('pre-auth idle timeout: BYE and close', async () => {
    const started = Date.now();
    const c = await greeted(lim.port('none'));
    await c.waitFor(/^\* BYE/, { timeoutMs: 5_000 });
    await c.waitClosed();
    const elapsed = Date.now() - started;
    expect(c.lines.slice(1)).toEqual(['* BYE Disconnected for inactivity.']);
    expect(elapsed).toBeGreaterThanOrEqual(LIMITS.preauthTimeoutMs - 50);
    expect(elapsed).toBeLessThan(LIMITS.preauthTimeoutMs + 3_000);
  });

  it(`maxAuthFailures (${LIMITS.maxAuthFailures}) wrong passwords: NO each, then BYE and close`, async () => {
    const c = await greeted(lim.port('none'));
    expect(await exchange(c, `a LOGIN ${USER} wrong-1\r\n`, 'a')).toEqual([`a ${AUTH_FAILED}`]);
    const from = c.lines.length;
    c.write(`b LOGIN ${USER} wrong-2\r\n`);
    await c.waitClosed();
    expect(c.lines.slice(from)).toEqual([`b ${AUTH_FAILED}`, '* BYE Too many failed logins.']);
  });

  it(`maxConnectionsPerIp (${LIMITS.maxConnectionsPerIp}): the extra connection gets BYE; the others work; the count recovers`, async () => {
    // A source address of its own, so connections of other tests do not count.
    const from = { localAddress: '127.0.0.3' };
    const port = lim.port('none');
    const first: RawClient[] = [];
    for (let i = 0; i < LIMITS.maxConnectionsPerIp; i++) first.push(await greeted(port, from));
    const extra = await connect(port, from);
    await extra.waitClosed();
    expect(extra.lines).toEqual(['* BYE Too many connections from your address.']);
    for (const c of first) expect(await exchange(c, 'a NOOP\r\n', 'a')).toEqual(['a OK NOOP completed.']);
    for (const c of first) c.close();
    await Promise.all(first.map((c) => c.waitClosed()));

    // Once they are gone (the refused one included), the address gets its full allowance again.
    const deadline = Date.now() + 3_000;
    let greetings: string[] = [];
    do {
      if (greetings.length) await sleep(50);
      const again = await Promise.all(
        Array.from({ length: LIMITS.maxConnectionsPerIp }, () => connect(port, from)),
      );
      greetings = await Promise.all(again.map((c) => c.waitFor(/^\* /)));
      for (const c of again) c.close();
    } while (!greetings.every((l) => l.startsWith('* OK ')) && Date.now() < deadline);
    expect(greetings).toEqual(
      Array(LIMITS.maxConnectionsPerIp).fill(`* OK [CAPABILITY ${CAPS}] ${GREETING_TEXT}`),
    );
  });
});

describe('PROXY protocol', () => {
  it('a PROXY header from an untrusted peer: BYE mentioning PROXY, and close', async () => {
    const c = await connect(lim.port('none'), { prefix: encodeProxyV1(proxyHeader('203.0.113.9')) });
    await c.waitClosed();
    expect(c.lines).toEqual([
      `* OK [CAPABILITY ${CAPS}] ${GREETING_TEXT}`,
      '* BYE PROXY protocol header not accepted from this address.',
    ]);
  });

  it('a trusted peer that sends IMAP instead of a PROXY header: closed without a greeting', async () => {
    const c = await connect(lim.port('none'), { localAddress: LOAD_BALANCER_IP, prefix: 'a NOOP\r\n' });
    await c.waitClosed();
    expect(c.lines).toEqual([]);
  });

  it('a trusted peer that sends nothing: closed after proxyProtocol.timeoutMs, without a greeting', async () => {
    const started = Date.now();
    const c = await connect(lim.port('none'), { localAddress: LOAD_BALANCER_IP });
    await c.waitClosed(PROXY_TIMEOUT_MS + 3_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(PROXY_TIMEOUT_MS - 50);
    expect(c.lines).toEqual([]);
  });

  it('PROXY v2 and the TLS ClientHello in one segment: login works, the auth log has the forwarded IP', async () => {
    const ip = '203.0.113.77';
    const header = encodeProxyV2(proxyHeader(ip));
    const raw = net.connect({ host: '127.0.0.1', port: t.port('implicit'), localAddress: LOAD_BALANCER_IP });
    await new Promise<void>((resolve, reject) => raw.once('connect', resolve).once('error', reject));
    // TLS over a stream that prepends the header to the first record: the load balancer sends
    // both in one write, so the gateway reads the ClientHello together with the header.
    let firstWrite: Buffer | null = null;
    const carrier = new Duplex({
      write(chunk: Buffer, _enc, done) {
        if (firstWrite === null) {
          firstWrite = Buffer.concat([header, chunk]);
          raw.write(firstWrite, done);
        } else raw.write(chunk, done);
      },
      read() {},
      final(done) {
        raw.end();
        done();
      },
    });
    raw.on('data', (d: Buffer) => carrier.push(d));
    raw.on('end', () => carrier.push(null));
    raw.on('error', () => {});
    const secure = tls.connect({ socket: carrier, rejectUnauthorized: false, servername: 'localhost' });
    try {
      await new Promise<void>((resolve, reject) =>
        secure.once('secureConnect', resolve).once('error', reject),
      );
      expect(firstWrite!.subarray(0, header.length)).toEqual(header);
      expect(firstWrite![header.length]).toBe(0x16); // a TLS handshake record follows at once

      const next = lineReader(secure);
      expect(await next(/^\* OK/)).toBe(`* OK [CAPABILITY ${CAPS}] ${GREETING_TEXT}`);
      secure.write(`a ${LOGIN_CMD}\r\n`);
      expect(await next(/^a /)).toMatch(LOGGED_IN);
      const auth = await t.logs.waitFor((l) => l.event === 'auth' && l.ip === ip);
      expect(auth).toMatchObject({ login: USER, result: 'allow', protocol: 'imap' });
    } finally {
      secure.destroy();
      raw.destroy();
    }
  });
});

describe('upstream login', () => {
  let portHolder: net.Socket;
  let closedPort: number;
  let authzid: TestGateway;
  let down: TestGateway;
  let failover: TestGateway;
  let badMaster: TestGateway;
  const WRONG_MASTER = 'wrong-master-secret-4711';

  const upstream = (raw: RawConfig) => raw.imap.upstream as RawConfig;

  beforeAll(async () => {
    // The local end of an outgoing connection: nothing listens there, and while the connection
    // lives the kernel lets nobody bind it (a port from freePort() could be taken by one of the
    // gateways' own port-0 listeners started right after, turning "down" into "a gateway").
    portHolder = net.connect({ host: '127.0.0.1', port: redis.port });
    await new Promise<void>((resolve, reject) => portHolder.once('connect', resolve).once('error', reject));
    closedPort = portHolder.localPort!;
    [authzid, down, failover, badMaster] = await Promise.all([
      startTestGateway({
        redis,
        dovecot,
        keyPrefix,
        configure: (raw) => {
          upstream(raw).login = {
            style: 'plain-authzid',
            user: dovecot.masterUser,
            password: dovecot.masterPassword,
          };
        },
      }),
      startTestGateway({
        redis,
        dovecot,
        keyPrefix,
        configure: (raw) => {
          upstream(raw).servers = [`127.0.0.1:${closedPort}`];
        },
      }),
      startTestGateway({
        redis,
        dovecot,
        keyPrefix,
        configure: (raw) => {
          upstream(raw).servers = [`127.0.0.1:${closedPort}`, `127.0.0.1:${dovecot.port}`];
        },
      }),
      startTestGateway({
        redis,
        dovecot,
        keyPrefix,
        configure: (raw) => {
          upstream(raw).login.password = WRONG_MASTER;
        },
      }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([authzid?.close(), down?.close(), failover?.close(), badMaster?.close()]);
    portHolder?.destroy();
  });

  it('plain-authzid style: login works and Dovecot logs the master user', async () => {
    const from = (await dovecot.readLog()).length;
    const c = await greeted(authzid.port('none'));
    const login = await exchange(c, `a ${LOGIN_CMD}\r\n`, 'a');
    expect(login).toHaveLength(1);
    expect(login[0]).toMatch(LOGGED_IN);
    await dovecot.waitForLog('auth: Info: Master user logging in as bob', { from });
  });

  it('the only upstream server is down: NO [UNAVAILABLE]', async () => {
    const c = await greeted(down.port('none'));
    expect(await exchange(c, `a ${LOGIN_CMD}\r\n`, 'a')).toEqual([`a ${TEMP_FAILED}`]);
    const line = await down.logs.waitFor((l) => l.event === 'upstream');
    expect(line).toMatchObject({ level: 'error', code: 'MG_UPSTREAM_CONNECT', login: USER });
  });

  it('the first upstream server is down, the second up: fails over and logs in', async () => {
    const c = await greeted(failover.port('none'));
    const login = await exchange(c, `a ${LOGIN_CMD}\r\n`, 'a');
    expect(login).toHaveLength(1);
    expect(login[0]).toMatch(LOGGED_IN);
  });

  it('the store refuses the master login: NO [UNAVAILABLE], an MG_UPSTREAM_AUTH error, no secret logged', async () => {
    const c = await greeted(badMaster.port('none'));
    expect(await exchange(c, `a ${LOGIN_CMD}\r\n`, 'a')).toEqual([`a ${TEMP_FAILED}`]);
    const line = await badMaster.logs.waitFor((l) => l.event === 'upstream');
    expect(line).toMatchObject({ level: 'error', code: 'MG_UPSTREAM_AUTH', login: USER });
    const all = badMaster.logs.raw.join('\n');
    for (const secret of [WRONG_MASTER, dovecot.masterPassword, PRIMARY, quote(PRIMARY), '$argon2']) {
      expect(all).not.toContain(secret);
    }
  });
});
