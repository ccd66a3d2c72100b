import { describe, expect, it } from 'vitest';
import { decodeBase64, parsePlain } from '../../src/sasl/sasl.js';

describe('decodeBase64', () => {
  it('decodes strict base64', () => {
    expect(decodeBase64('YWxpY2U=')?.toString()).toBe('alice');
    expect(decodeBase64('')?.length).toBe(0);
  });
  it.each(['YWxpY2U', 'YWx*Y2U=', 'YW==xp', 'a'])('rejects %s', (bad) => {
    expect(decodeBase64(bad)).toBeNull();
  });
});

describe('parsePlain (RFC 4616)', () => {
  const enc = (s: string) => Buffer.from(s, 'utf8');
  it('reads authcid and password', () => {
    expect(parsePlain(enc('\0alice\0p w"\\'))).toEqual({
      ok: true,
      credentials: { login: 'alice', password: enc('p w"\\') },
    });
  });
  it('accepts authzid equal to authcid', () => {
    expect(parsePlain(enc('alice\0alice\0pw')).ok).toBe(true);
  });
  it('refuses acting as another user', () => {
    expect(parsePlain(enc('bob\0alice\0pw'))).toMatchObject({ ok: false });
  });
  it.each(['alice', 'alice\0pw', '\0\0pw', 'a\0b\0c\0d'])('refuses malformed %j', (m) => {
    expect(parsePlain(enc(m)).ok).toBe(false);
  });
  it('keeps UTF-8 passwords byte for byte', () => {
    const r = parsePlain(enc('\0ユーザー\0パスワード'));
    expect(r).toEqual({ ok: true, credentials: { login: 'ユーザー', password: enc('パスワード') } });
  });
});
