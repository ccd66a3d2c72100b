// Sans-I/O tests of the pre-auth IMAP session: ReaderEvents in, Actions out (no sockets).
import { describe, expect, it } from 'vitest';
import type { Account } from '../../src/accounts/store.js';
import type { AuthResult } from '../../src/auth/authenticator.js';
import type { DenyReason } from '../../src/auth/policy.js';
import type { GeoAnswer } from '../../src/geo/geo.js';
import type { ImapArg, ReaderEvent } from '../../src/imap/parser.js';
import { AUTH_FAILED, denyReply, TEMP_FAILED } from '../../src/imap/replies.js';
import { type Action, ImapSession, type SessionOptions } from '../../src/imap/session.js';

const GREETING = 'mailgate ready.';
const CAPS_WITH_AUTH = 'IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN AUTH=LOGIN';
const CAPS_LOGINDISABLED = 'IMAP4rev1 SASL-IR ID LITERAL+ STARTTLS LOGINDISABLED';
const USERNAME_PROMPT = Buffer.from('Username:').toString('base64');
const PASSWORD_PROMPT = Buffer.from('Password:').toString('base64');

const atom = (value: string): ImapArg => ({ type: 'atom', value });
const str = (value: string): ImapArg => ({ type: 'string', value: Buffer.from(value, 'utf8') });
const nil: ImapArg = { type: 'nil' };
const list = (...items: ImapArg[]): ImapArg => ({ type: 'list', items });
const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

const cmd = (tag: string, verb: string, ...args: ImapArg[]): ReaderEvent => ({
  type: 'command',
  tag,
  verb,
  args,
});
const line = (text: string): ReaderEvent => ({ type: 'line', text });

const send = (text: string): Action => ({ type: 'send', line: text });
const close = (reason: string): Action => ({ type: 'close', reason });
const lineMode = (on: boolean): Action => ({ type: 'line-mode', on });
const authenticate = (tag: string, login: string, password: string | Buffer): Action => ({
  type: 'authenticate',
  tag,
  credentials: { login, password: typeof password === 'string' ? Buffer.from(password, 'utf8') : password },
});

function session(
  tlsMode: SessionOptions['tlsMode'] = 'implicit',
  limits: Partial<SessionOptions['limits']> = {},
): ImapSession {
  return new ImapSession({
    tlsMode,
    limits: { maxBadCommands: 10, maxAuthFailures: 3, ...limits },
    greeting: GREETING,
  });
}

const GEO: GeoAnswer = { country: 'US', location: 'overseas', source: 'database' };
const deny = (reason: DenyReason): AuthResult => ({ kind: 'deny', reason, geo: GEO, delayMs: 0 });
const ACCOUNT: Account = {
  login: 'alice@example.jp',
  aliases: [],
  primaryHash: null,
  imapHash: null,
  imapIssuedAt: null,
  upstreamUser: null,
  upstream: null,
  msisdn: null,
  domestic: null,
  exemptUntil: null,
  imapVersion: 1,
  primaryVersion: 0,
  createdAt: 0,
};

/** A session that has just sent `authenticate` for tag `a`, waiting for onAuthResult. */
function authenticating(s = session()): ImapSession {
  expect(s.onEvent(cmd('a', 'LOGIN', atom('alice'), atom('pw')))).toEqual([authenticate('a', 'alice', 'pw')]);
  return s;
}

describe('greeting and capabilities', () => {
  it('implicit TLS: login mechanisms offered, no STARTTLS', () => {
    const s = session('implicit');
    expect(s.greet()).toEqual([send(`* OK [CAPABILITY ${CAPS_WITH_AUTH}] ${GREETING}`)]);
    expect(s.onEvent(cmd('c1', 'CAPABILITY'))).toEqual([
      send(`* CAPABILITY ${CAPS_WITH_AUTH}`),
      send('c1 OK CAPABILITY completed.'),
    ]);
  });

  it('STARTTLS listener before TLS: STARTTLS and LOGINDISABLED, no AUTH=', () => {
    const s = session('starttls');
    expect(s.greet()).toEqual([send(`* OK [CAPABILITY ${CAPS_LOGINDISABLED}] ${GREETING}`)]);
    expect(s.onEvent(cmd('c1', 'CAPABILITY'))).toEqual([
      send(`* CAPABILITY ${CAPS_LOGINDISABLED}`),
      send('c1 OK CAPABILITY completed.'),
    ]);
  });

  it('STARTTLS listener after TLS: login mechanisms, neither STARTTLS nor LOGINDISABLED', () => {
    const s = session('starttls');
    expect(s.onEvent(cmd('t', 'STARTTLS'))).toEqual([
      send('t OK Begin TLS negotiation now.'),
      { type: 'start-tls' },
    ]);
    expect(s.capabilities()).toBe(CAPS_WITH_AUTH);
    expect(s.onEvent(cmd('c2', 'CAPABILITY'))).toEqual([
      send(`* CAPABILITY ${CAPS_WITH_AUTH}`),
      send('c2 OK CAPABILITY completed.'),
    ]);
  });

  it('plaintext listener (tls: none): login mechanisms, no STARTTLS', () => {
    const s = session('none');
    expect(s.greet()).toEqual([send(`* OK [CAPABILITY ${CAPS_WITH_AUTH}] ${GREETING}`)]);
    expect(s.loginDisabled()).toBe(false);
  });

  it('answers NOOP, ID and LOGOUT', () => {
    const s = session();
    expect(s.onEvent(cmd('n', 'NOOP'))).toEqual([send('n OK NOOP completed.')]);
    expect(s.onEvent(cmd('i', 'ID', nil))).toEqual([
      send('* ID ("name" "mailgate")'),
      send('i OK ID completed.'),
    ]);
    expect(s.onEvent(cmd('q', 'LOGOUT'))).toEqual([
      send('* BYE Logging out.'),
      send('q OK LOGOUT completed.'),
      close('logout'),
    ]);
    expect(s.onEvent(cmd('n2', 'NOOP'))).toEqual([]);
  });

  it('unknown command: tagged BAD', () => {
    expect(session().onEvent(cmd('x', 'SELECT', atom('INBOX')))).toEqual([
      send('x BAD Unknown command or not valid before login.'),
    ]);
  });
});

describe('LOGIN', () => {
  it('atom arguments become the exact credentials', () => {
    expect(session().onEvent(cmd('a1', 'LOGIN', atom('alice@example.jp'), atom('s3cret!')))).toEqual([
      authenticate('a1', 'alice@example.jp', 's3cret!'),
    ]);
  });

  it('string arguments (quoted or literal) are taken byte for byte, UTF-8 included', () => {
    expect(session().onEvent(cmd('a2', 'LOGIN', str('jörg@example.jp'), str('pä ss"wö\\rd€')))).toEqual([
      authenticate('a2', 'jörg@example.jp', Buffer.from('pä ss"wö\\rd€', 'utf8')),
    ]);
  });

  it('mixes an atom user and a string password', () => {
    expect(session('none').onEvent(cmd('a3', 'LOGIN', atom('bob'), str('')))).toEqual([
      authenticate('a3', 'bob', Buffer.alloc(0)),
    ]);
  });

  it.each([
    ['no arguments', []],
    ['one argument', [atom('alice')]],
    ['three arguments', [atom('alice'), atom('pw'), atom('extra')]],
    ['NIL user', [nil, atom('pw')]],
    ['NIL password', [atom('alice'), nil]],
    ['list argument', [list(atom('alice')), atom('pw')]],
  ] as Array<[string, ImapArg[]]>)('%s: BAD, nothing authenticated', (_name, args) => {
    const s = session();
    expect(s.onEvent(cmd('b', 'LOGIN', ...args))).toEqual([
      send('b BAD LOGIN expects a user name and a password.'),
    ]);
    expect(s.state).toEqual({ name: 'ready' });
  });

  it('on a STARTTLS listener before TLS: NO [PRIVACYREQUIRED], credentials not passed on', () => {
    const s = session('starttls');
    expect(s.onEvent(cmd('a', 'LOGIN', atom('alice'), atom('pw')))).toEqual([
      send('a NO [PRIVACYREQUIRED] Run STARTTLS first.'),
    ]);
    expect(s.onEvent(cmd('b', 'AUTHENTICATE', atom('PLAIN'), atom(b64('\0alice\0pw'))))).toEqual([
      send('b NO [PRIVACYREQUIRED] Run STARTTLS first.'),
    ]);
  });

  it('on a STARTTLS listener after TLS: authenticates', () => {
    const s = session('starttls');
    s.onEvent(cmd('t', 'STARTTLS'));
    expect(s.onEvent(cmd('a', 'LOGIN', atom('alice'), atom('pw')))).toEqual([
      authenticate('a', 'alice', 'pw'),
    ]);
  });
});

describe('STARTTLS', () => {
  it('OK then start-tls; a second STARTTLS is BAD', () => {
    const s = session('starttls');
    expect(s.onEvent(cmd('t1', 'STARTTLS'))).toEqual([
      send('t1 OK Begin TLS negotiation now.'),
      { type: 'start-tls' },
    ]);
    expect(s.onEvent(cmd('t2', 'STARTTLS'))).toEqual([
      send('t2 BAD TLS is already active or not offered here.'),
    ]);
  });

  it.each(['implicit', 'none'] as const)('is BAD on a %s listener', (mode) => {
    expect(session(mode).onEvent(cmd('t', 'STARTTLS'))).toEqual([
      send('t BAD TLS is already active or not offered here.'),
    ]);
  });

  it('with arguments: BAD, TLS not started', () => {
    const s = session('starttls');
    expect(s.onEvent(cmd('t', 'STARTTLS', atom('x')))).toEqual([send('t BAD STARTTLS takes no arguments.')]);
    expect(s.loginDisabled()).toBe(true);
  });
});

describe('AUTHENTICATE PLAIN (RFC 4616, RFC 4959)', () => {
  it('with an initial response', () => {
    expect(
      session().onEvent(cmd('p', 'AUTHENTICATE', atom('PLAIN'), atom(b64('\0alice\0pässword')))),
    ).toEqual([authenticate('p', 'alice', 'pässword')]);
  });

  it('mechanism name is case-insensitive', () => {
    expect(session().onEvent(cmd('p', 'AUTHENTICATE', atom('plain'), atom(b64('\0alice\0pw'))))).toEqual([
      authenticate('p', 'alice', 'pw'),
    ]);
  });

  it('with authzid equal to authcid', () => {
    expect(session().onEvent(cmd('p', 'AUTHENTICATE', atom('PLAIN'), atom(b64('alice\0alice\0pw'))))).toEqual(
      [authenticate('p', 'alice', 'pw')],
    );
  });

  it('"=" is an empty initial response, which is not a valid PLAIN message: BAD', () => {
    const s = session();
    expect(s.onEvent(cmd('p', 'AUTHENTICATE', atom('PLAIN'), atom('=')))).toEqual([
      send('p BAD Invalid PLAIN response: malformed PLAIN message.'),
    ]);
    expect(s.state).toEqual({ name: 'ready' });
  });

  it('via a continuation', () => {
    const s = session();
    expect(s.onEvent(cmd('p', 'AUTHENTICATE', atom('PLAIN')))).toEqual([lineMode(true), send('+ ')]);
    expect(s.onEvent(line(b64('\0jörg\0pw €')))).toEqual([
      lineMode(false),
      authenticate('p', 'jörg', 'pw €'),
    ]);
  });

  it('authzid other than authcid: BAD (initial response and continuation)', () => {
    const s = session();
    expect(s.onEvent(cmd('p', 'AUTHENTICATE', atom('PLAIN'), atom(b64('bob\0alice\0pw'))))).toEqual([
      send('p BAD Invalid PLAIN response: acting as another user is not allowed.'),
    ]);
    s.onEvent(cmd('q', 'AUTHENTICATE', atom('PLAIN')));
    expect(s.onEvent(line(b64('bob\0alice\0pw')))).toEqual([
      lineMode(false),
      send('q BAD Invalid PLAIN response: acting as another user is not allowed.'),
    ]);
    expect(s.state).toEqual({ name: 'ready' });
  });

  it('bad base64: BAD (initial response and continuation)', () => {
    const s = session();
    expect(s.onEvent(cmd('p', 'AUTHENTICATE', atom('PLAIN'), atom('AGFsaWNl*')))).toEqual([
      send('p BAD Invalid base64 data.'),
    ]);
    s.onEvent(cmd('q', 'AUTHENTICATE', atom('PLAIN')));
    expect(s.onEvent(line('not base64!'))).toEqual([lineMode(false), send('q BAD Invalid base64 data.')]);
    expect(s.state).toEqual({ name: 'ready' });
    expect(s.badCommands).toBe(2);
  });

  it('"*" cancels the exchange with a tagged BAD', () => {
    const s = session();
    s.onEvent(cmd('p', 'AUTHENTICATE', atom('PLAIN')));
    expect(s.onEvent(line('*'))).toEqual([lineMode(false), send('p BAD Authentication cancelled.')]);
    expect(s.state).toEqual({ name: 'ready' });
    expect(s.onEvent(cmd('n', 'NOOP'))).toEqual([send('n OK NOOP completed.')]);
  });

  it('unsupported mechanism: NO [CANNOT]', () => {
    expect(session().onEvent(cmd('x', 'AUTHENTICATE', atom('CRAM-MD5')))).toEqual([
      send('x NO [CANNOT] Unsupported authentication mechanism.'),
    ]);
  });

  it.each([
    ['no mechanism', []],
    ['string mechanism', [str('PLAIN')]],
    ['string initial response', [atom('PLAIN'), str(b64('\0a\0b'))]],
    ['too many arguments', [atom('PLAIN'), atom('AA=='), atom('AA==')]],
  ] as Array<[string, ImapArg[]]>)('%s: BAD', (_name, args) => {
    expect(session().onEvent(cmd('x', 'AUTHENTICATE', ...args))).toEqual([
      send('x BAD AUTHENTICATE expects a mechanism name and an optional initial response.'),
    ]);
  });
});

describe('AUTHENTICATE LOGIN', () => {
  it('asks for the user name, then the password', () => {
    const s = session();
    expect(s.onEvent(cmd('l', 'AUTHENTICATE', atom('LOGIN')))).toEqual([
      lineMode(true),
      send(`+ ${USERNAME_PROMPT}`),
    ]);
    expect(s.onEvent(line(b64('ユーザー@example.jp')))).toEqual([send(`+ ${PASSWORD_PROMPT}`)]);
    expect(s.onEvent(line(b64('パスワード')))).toEqual([
      lineMode(false),
      authenticate('l', 'ユーザー@example.jp', 'パスワード'),
    ]);
  });

  it('with the user name as initial response, asks only for the password', () => {
    const s = session();
    expect(s.onEvent(cmd('l', 'AUTHENTICATE', atom('LOGIN'), atom(b64('alice'))))).toEqual([
      lineMode(true),
      send(`+ ${PASSWORD_PROMPT}`),
    ]);
    expect(s.onEvent(line(b64('pw')))).toEqual([lineMode(false), authenticate('l', 'alice', 'pw')]);
  });

  it('bad base64 in the initial response: BAD', () => {
    expect(session().onEvent(cmd('l', 'AUTHENTICATE', atom('LOGIN'), atom('YWxp!')))).toEqual([
      send('l BAD Invalid base64 data.'),
    ]);
  });

  it('"*" at the password step cancels', () => {
    const s = session();
    s.onEvent(cmd('l', 'AUTHENTICATE', atom('LOGIN'), atom(b64('alice'))));
    expect(s.onEvent(line('*'))).toEqual([lineMode(false), send('l BAD Authentication cancelled.')]);
    expect(s.state).toEqual({ name: 'ready' });
  });

  it('bad base64 at the user step: BAD, back to ready', () => {
    const s = session();
    s.onEvent(cmd('l', 'AUTHENTICATE', atom('LOGIN')));
    expect(s.onEvent(line('%%%%'))).toEqual([lineMode(false), send('l BAD Invalid base64 data.')]);
    expect(s.state).toEqual({ name: 'ready' });
  });
});

describe('auth results', () => {
  it('allow: nothing to send here (the driver answers after the upstream login), session done', () => {
    const s = authenticating();
    expect(
      s.onAuthResult('a', {
        kind: 'allow',
        account: ACCOUNT,
        credential: 'imap-only',
        version: 1,
        geo: GEO,
        wouldRefuse: [],
      }),
    ).toEqual([]);
    expect(s.state).toEqual({ name: 'done' });
    expect(s.onEvent(cmd('n', 'NOOP'))).toEqual([]);
  });

  it.each(['bad-password', 'unknown-account'] as const)('deny %s: NO [AUTHENTICATIONFAILED]', (reason) => {
    const s = authenticating();
    expect(s.onAuthResult('a', deny(reason))).toEqual([
      send('a NO [AUTHENTICATIONFAILED] Authentication failed.'),
    ]);
    expect(denyReply(reason)).toBe(AUTH_FAILED);
    expect(s.state).toEqual({ name: 'ready' });
  });

  it.each([
    ['locked', /temporarily locked/],
    ['imap-password-required', /IMAP-only password/],
    ['overseas-restricted', /from abroad/],
    ['domestic-restricted', /Issue an IMAP-only password/],
  ] as Array<[DenyReason, RegExp]>)('deny %s: NO [ALERT] with its own text', (reason, text) => {
    const s = authenticating();
    const [reply, ...rest] = s.onAuthResult('a', deny(reason));
    expect(rest).toEqual([]);
    expect(reply).toEqual(send(`a ${denyReply(reason)}`));
    expect(denyReply(reason)).toMatch(/^NO \[ALERT\] /);
    expect(denyReply(reason)).toMatch(text);
  });

  it('the ALERT texts differ from one another', () => {
    const texts = (
      ['locked', 'imap-password-required', 'overseas-restricted', 'domestic-restricted'] as const
    ).map(denyReply);
    expect(new Set(texts).size).toBe(texts.length);
  });

  it.each(['store-unavailable', 'overloaded'] as const)(
    'tempfail %s: NO [UNAVAILABLE], not a failure',
    (reason) => {
      const s = session('implicit', { maxAuthFailures: 1 });
      authenticating(s);
      expect(s.onAuthResult('a', { kind: 'tempfail', reason })).toEqual([send(`a ${TEMP_FAILED}`)]);
      expect(TEMP_FAILED).toMatch(/^NO \[UNAVAILABLE\] /);
      expect(s.authFailures).toBe(0);
      expect(s.state).toEqual({ name: 'ready' });
    },
  );

  it('maxAuthFailures refused logins: reply, then BYE and close', () => {
    const s = session('implicit', { maxAuthFailures: 3 });
    for (let i = 1; i <= 2; i++) {
      authenticating(s);
      expect(s.onAuthResult('a', deny('bad-password'))).toEqual([send(`a ${AUTH_FAILED}`)]);
    }
    authenticating(s);
    expect(s.onAuthResult('a', deny('overseas-restricted'))).toEqual([
      send(`a ${denyReply('overseas-restricted')}`),
      send('* BYE Too many failed logins.'),
      close('auth-failures'),
    ]);
    expect(s.state).toEqual({ name: 'done' });
    expect(s.onEvent(cmd('b', 'LOGIN', atom('alice'), atom('pw')))).toEqual([]);
  });
});

describe('limits and errors', () => {
  it('maxBadCommands invalid commands: BAD, then BYE and close', () => {
    const s = session('implicit', { maxBadCommands: 3 });
    expect(s.onEvent(cmd('x1', 'FOO'))).toEqual([send('x1 BAD Unknown command or not valid before login.')]);
    expect(s.onEvent(cmd('x2', 'LOGIN'))).toEqual([send('x2 BAD LOGIN expects a user name and a password.')]);
    expect(
      s.onEvent({ type: 'error', tag: null, kind: 'syntax', message: 'Missing command name', fatal: false }),
    ).toEqual([
      send('* BAD Missing command name'),
      send('* BYE Too many invalid commands.'),
      close('bad-commands'),
    ]);
    expect(s.state).toEqual({ name: 'done' });
    expect(s.onEvent(cmd('n', 'NOOP'))).toEqual([]);
  });

  it('non-fatal reader error: tagged BAD, session goes on', () => {
    const s = session();
    expect(
      s.onEvent({ type: 'error', tag: 'z', kind: 'syntax', message: 'Unterminated string', fatal: false }),
    ).toEqual([send('z BAD Unterminated string')]);
    expect(s.onEvent(cmd('n', 'NOOP'))).toEqual([send('n OK NOOP completed.')]);
  });

  it('fatal reader error: BYE and close', () => {
    const s = session();
    expect(
      s.onEvent({ type: 'error', tag: 'a', kind: 'line-too-long', message: 'Line too long.', fatal: true }),
    ).toEqual([send('* BYE Line too long.'), close('line-too-long')]);
    expect(s.state).toEqual({ name: 'done' });
  });

  it('fatal reader error while authenticating also closes', () => {
    const s = authenticating();
    expect(
      s.onEvent({ type: 'error', tag: null, kind: 'buffer-full', message: 'Too much input.', fatal: true }),
    ).toEqual([send('* BYE Too much input.'), close('buffer-full')]);
  });

  it('pre-auth timeout: BYE and close', () => {
    const s = session();
    expect(s.onTimeout()).toEqual([send('* BYE Disconnected for inactivity.'), close('preauth-timeout')]);
    expect(s.state).toEqual({ name: 'done' });
  });

  it('asks for literal data when the reader needs it', () => {
    expect(session().onEvent({ type: 'continuation-needed', bytes: 5 })).toEqual([
      send('+ Ready for literal data'),
    ]);
  });
});

describe('while authenticating', () => {
  it('ignores commands and lines until the result arrives', () => {
    const s = authenticating();
    expect(s.onEvent(cmd('b', 'LOGIN', atom('bob'), atom('pw')))).toEqual([]);
    expect(s.onEvent(cmd('c', 'CAPABILITY'))).toEqual([]);
    expect(s.onEvent(cmd('d', 'FOO'))).toEqual([]);
    expect(s.onEvent(line(b64('\0bob\0pw')))).toEqual([]);
    expect(s.badCommands).toBe(0);
    expect(s.onAuthResult('a', deny('bad-password'))).toEqual([send(`a ${AUTH_FAILED}`)]);
    expect(s.onEvent(cmd('e', 'NOOP'))).toEqual([send('e OK NOOP completed.')]);
  });

  it('lines outside a SASL exchange are ignored', () => {
    expect(session().onEvent(line('AAAA'))).toEqual([]);
  });
});
