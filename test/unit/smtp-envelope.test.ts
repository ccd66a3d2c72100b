import { describe, expect, it } from 'vitest';
import type { DenyReason } from '../../src/auth/policy.js';
import {
  canonicalAddress,
  mailCommand,
  ownsSender,
  queueIdOf,
  rcptCommand,
  senderAddresses,
  wireAddress,
} from '../../src/smtp/envelope.js';
import { AUTH_FAILED, AUTH_TEMP_FAILED, authFailureReply, denyReply } from '../../src/smtp/replies.js';
import { replyText, xclientAttributes, xtext } from '../../src/smtp/upstream.js';

const alice = { login: 'alice@example.jp', aliases: ['alice', 'A.Li@Example.JP', 'jörg@bücher.example'] };

describe('sender ownership', () => {
  it('is the login and the aliases that are addresses, case-insensitively', () => {
    expect([...senderAddresses(alice)].sort()).toEqual(
      ['a.li@example.jp', 'alice@example.jp', 'jörg@xn--bcher-kva.example'].sort(),
    );
    expect(ownsSender(alice, 'ALICE@example.jp')).toBe(true);
    expect(ownsSender(alice, 'a.li@example.jp')).toBe(true);
    expect(ownsSender(alice, 'alice')).toBe(false); // a bare alias is a login name, not an address
    expect(ownsSender(alice, 'bob@example.jp')).toBe(false);
    expect(ownsSender(alice, 'alice@example.jp.evil')).toBe(false);
  });

  it('matches an IDN domain in either form', () => {
    expect(ownsSender(alice, 'jörg@bücher.example')).toBe(true);
    expect(ownsSender(alice, 'jörg@xn--bcher-kva.example')).toBe(true);
    expect(canonicalAddress('X@Bücher.Example')).toBe('x@xn--bcher-kva.example');
  });

  it('allows the null sender (read receipts, RFC 8098)', () => {
    expect(ownsSender(alice, '')).toBe(true);
  });
});

describe('MAIL and RCPT for the store', () => {
  const all = () => true;
  const none = () => false;

  it('puts the domain back in A-label form unless SMTPUTF8 was asked for', () => {
    expect(wireAddress('jörg@bücher.example', false)).toBe('jörg@xn--bcher-kva.example');
    expect(wireAddress('jörg@bücher.example', true)).toBe('jörg@bücher.example');
    expect(wireAddress('a@[192.0.2.1]', false)).toBe('a@[192.0.2.1]');
    expect(rcptCommand('bob@bücher.example', false)).toBe('RCPT TO:<bob@xn--bcher-kva.example>');
  });

  it('passes SIZE, BODY=8BITMIME and SMTPUTF8 when the store offers them', () => {
    expect(mailCommand('a@example.jp', { size: '1234', bodyType: '8bitmime', smtpUtf8: true }, all)).toEqual({
      line: 'MAIL FROM:<a@example.jp> SIZE=1234 BODY=8BITMIME SMTPUTF8',
    });
    expect(mailCommand('', {}, all)).toEqual({ line: 'MAIL FROM:<>' });
    expect(mailCommand('a@example.jp', { bodyType: '7bit' }, none)).toEqual({
      line: 'MAIL FROM:<a@example.jp>',
    });
  });

  it('drops SIZE the store does not know, refuses 8BITMIME and SMTPUTF8 it cannot carry', () => {
    expect(mailCommand('a@example.jp', { size: '5' }, none)).toEqual({ line: 'MAIL FROM:<a@example.jp>' });
    expect(mailCommand('a@example.jp', { bodyType: '8bitmime' }, none)).toEqual({
      unsupported: 'BODY=8BITMIME',
    });
    expect(mailCommand('a@example.jp', { smtpUtf8: true }, none)).toEqual({ unsupported: 'SMTPUTF8' });
  });

  it('reads the queue id from the store reply', () => {
    expect(queueIdOf('2.0.0 Ok: queued as 4F7x2Z1yQz')).toBe('4F7x2Z1yQz');
    expect(queueIdOf('2.0.0 Ok')).toBeNull();
  });
});

describe('XCLIENT', () => {
  const req = {
    user: 'alice',
    clientIp: '2001:db8::5',
    clientPort: 40000,
    clientHelo: null,
    localName: 'gw',
  };

  it('sends only the attributes the store offers, IPv6 with the IPV6: prefix, values as xtext', () => {
    expect(
      xclientAttributes('NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT', req, 'pc.example'),
    ).toBe('ADDR=IPV6:2001:db8::5 PORT=40000 NAME=[UNAVAILABLE] HELO=pc.example PROTO=ESMTP LOGIN=alice');
    expect(xclientAttributes('ADDR LOGIN', { ...req, clientIp: '203.0.113.5' }, 'x')).toBe(
      'ADDR=203.0.113.5 LOGIN=alice',
    );
  });

  it('encodes "+", "=", spaces and non-ASCII (RFC 3461 xtext)', () => {
    expect(xtext('a+b=c d')).toBe('a+2Bb+3Dc+20d');
    expect(xtext('jö')).toBe('j+C3+B6');
  });
});

describe('replies', () => {
  it('joins a multi-line store reply into one line, keeping the first enhanced code', () => {
    expect(replyText({ code: 550, lines: ['5.1.1 first', '5.1.1 second'] })).toBe('5.1.1 first second');
  });

  it('bad credentials are 535 5.7.8, outages 454 4.7.0 (RFC 4954 §6)', () => {
    expect(AUTH_FAILED).toEqual({ code: 535, text: '5.7.8 Authentication failed.' });
    expect(authFailureReply({ kind: 'tempfail', reason: 'store-unavailable' })).toBe(AUTH_TEMP_FAILED);
    expect(AUTH_TEMP_FAILED.code).toBe(454);
    expect(AUTH_TEMP_FAILED.text).toMatch(/^4\.7\.0 /);
  });

  it('every policy refusal says in words what to do, and none looks like an outage', () => {
    const policy: DenyReason[] = [
      'imap-password-required',
      'overseas-restricted',
      'domestic-restricted',
      'locked',
    ];
    for (const reason of policy) {
      const r = denyReply(reason);
      expect(r.code).toBe(535);
      expect(r.text).toMatch(/^5\.7\.8 [A-Z].{40,}/);
      expect(r).not.toEqual(AUTH_FAILED);
    }
    expect(denyReply('bad-password')).toBe(AUTH_FAILED);
    expect(denyReply('unknown-account')).toBe(AUTH_FAILED);
  });
});
