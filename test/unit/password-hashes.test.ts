// Primary-password hashes as account sites export them: argon2 in any parameter order, bcrypt.
import { hash as bcryptHash } from '@node-rs/bcrypt';
import { describe, expect, it } from 'vitest';
import {
  BadHashError,
  checkPasswordHash,
  checkPhc,
  hashKind,
  PasswordHasher,
} from '../../src/auth/passwords.js';

const CHEAP = { memoryKiB: 64, iterations: 1, parallelism: 1 };
const LIMITS = { maxConcurrent: 2, maxQueued: 100 };
const BCRYPT_COST = 4; // the minimum: these tests check the format, not the work factor

describe('bcrypt primary hashes', () => {
  it.each(['2a', '2b', '2y'] as const)('$%s$ verifies the right password and only it', async (version) => {
    const made = await bcryptHash('Primary-pw-9', BCRYPT_COST);
    const stored = made.replace(/^\$2b\$/, `$${version}$`);
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    expect(await hasher.verify(stored, 'Primary-pw-9')).toBe(true);
    expect(await hasher.verify(stored, Buffer.from('Primary-pw-9'))).toBe(true);
    expect(await hasher.verify(stored, 'Primary-pw-8')).toBe(false);
    expect(await hasher.verify(stored, '')).toBe(false);
  });

  it('a password that is not UTF-8 verifies against its own bytes, as the account site hashed them', async () => {
    const bytes = Buffer.from('pässwort', 'latin1');
    const stored = await bcryptHash(bytes, BCRYPT_COST);
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    expect(await hasher.verify(stored, bytes)).toBe(true);
    expect(await hasher.verify(stored, 'pässwort')).toBe(false);
  });

  it('goes through the same semaphore as argon2', async () => {
    const stored = await bcryptHash('pw', BCRYPT_COST);
    const hasher = new PasswordHasher(CHEAP, { maxConcurrent: 1, maxQueued: 0 });
    const first = hasher.verify(stored, 'pw');
    await expect(hasher.verify(stored, 'pw')).rejects.toMatchObject({ code: 'MG_OVERLOADED' });
    await expect(first).resolves.toBe(true);
  });

  it('a malformed bcrypt hash matches nothing and does not throw', async () => {
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    for (const bad of [
      '$2b$',
      '$2b$04$short',
      '$2y$99$abcdefghijklmnopqrstuuJ3Ei8Eg7oz6PBWu4T9c9k5rJ1tyc2Ty',
    ]) {
      await expect(hasher.verify(bad, 'pw')).resolves.toBe(false);
    }
  });
});

describe('checkPasswordHash', () => {
  it('accepts bcrypt $2a$, $2b$ and $2y$ as they are', async () => {
    const made = await bcryptHash('pw', BCRYPT_COST);
    for (const v of ['2a', '2b', '2y']) {
      const h = made.replace(/^\$2b\$/, `$${v}$`);
      expect(checkPasswordHash(h)).toBe(h);
      expect(hashKind(h)).toBe('bcrypt');
    }
  });

  it('writes argon2 parameters in the standard m=,t=,p= order, and leaves that order alone', async () => {
    const phc = await new PasswordHasher(CHEAP, LIMITS).hash('pw');
    expect(phc).toContain('$m=64,t=1,p=1$');
    expect(checkPasswordHash(phc)).toBe(phc);
    for (const order of ['m=64,p=1,t=1', 't=1,p=1,m=64', 'p=1,m=64,t=1']) {
      expect(checkPasswordHash(phc.replace('m=64,t=1,p=1', order))).toBe(phc);
    }
  });

  it('keeps a PHC string without a version segment (argon2 1.0) as it is', () => {
    const v10 = '$argon2i$m=64,p=1,t=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA';
    expect(checkPasswordHash(v10)).toBe('$argon2i$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA');
  });

  it.each([
    ['$2x$ (the buggy pre-2011 variant)', '$2x$10$abcdefghijklmnopqrstuuJ3Ei8Eg7oz6PBWu4T9c9k5rJ1tyc2Ty'],
    ['bcrypt cost 32', '$2b$32$abcdefghijklmnopqrstuuJ3Ei8Eg7oz6PBWu4T9c9k5rJ1tyc2Ty'],
    ['bcrypt one character short', '$2b$10$abcdefghijklmnopqrstuuJ3Ei8Eg7oz6PBWu4T9c9k5rJ1tyc2T'],
    [
      'bcrypt with a character outside its alphabet',
      '$2b$10$abcdefghijklmnopqrstu+J3Ei8Eg7oz6PBWu4T9c9k5rJ1tyc2Ty',
    ],
    [
      'argon2 with a duplicated parameter',
      '$argon2id$v=19$m=64,t=1,p=1,m=65$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA',
    ],
    ['argon2 with keyid', '$argon2id$v=19$m=64,t=1,p=1,keyid=AAAA$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'],
    ['argon2 without t', '$argon2id$v=19$m=64,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'],
    ['argon2 without a hash', '$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$'],
    ['sha512-crypt', '$6$salt$hash'],
  ])('rejects %s', (_name, h) => {
    expect(() => checkPasswordHash(h)).toThrow(BadHashError);
  });

  it('checkPhc is the same function (the former name)', () => {
    expect(checkPhc).toBe(checkPasswordHash);
  });
});

describe('PasswordHasher.needsRehash', () => {
  const hasher = new PasswordHasher(CHEAP, LIMITS);

  it('is false for argon2id with the configured parameters, in any order', async () => {
    const phc = await hasher.hash('pw');
    expect(hasher.needsRehash(phc)).toBe(false);
    expect(hasher.needsRehash(phc.replace('m=64,t=1,p=1', 'm=64,p=1,t=1'))).toBe(false);
  });

  it('is true for bcrypt', async () => {
    expect(hasher.needsRehash(await bcryptHash('pw', BCRYPT_COST))).toBe(true);
  });

  it('is true for argon2i and argon2d', async () => {
    const phc = await hasher.hash('pw');
    expect(hasher.needsRehash(phc.replace('$argon2id$', '$argon2i$'))).toBe(true);
    expect(hasher.needsRehash(phc.replace('$argon2id$', '$argon2d$'))).toBe(true);
  });

  it('is true for argon2id with other memory, iterations or lanes, or the old version', async () => {
    const phc = await hasher.hash('pw');
    for (const other of ['m=128,t=1,p=1', 'm=64,t=2,p=1', 'm=64,t=1,p=2']) {
      expect(hasher.needsRehash(phc.replace('m=64,t=1,p=1', other)), other).toBe(true);
    }
    expect(hasher.needsRehash(phc.replace('$v=19$', '$v=16$'))).toBe(true);
  });

  it('a hash from a hasher with the production parameters needs a rehash under cheap ones and back', async () => {
    const production = new PasswordHasher({ memoryKiB: 19456, iterations: 2, parallelism: 1 }, LIMITS);
    const phc = await production.hash('pw');
    expect(production.needsRehash(phc)).toBe(false);
    expect(hasher.needsRehash(phc)).toBe(true);
  });

  it('is true for anything it cannot read', () => {
    expect(hasher.needsRehash('')).toBe(true);
    expect(hasher.needsRehash('$argon2id$garbage')).toBe(true);
  });
});
