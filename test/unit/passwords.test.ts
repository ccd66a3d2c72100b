import { describe, expect, it } from 'vitest';
import {
  BadHashError,
  checkPhc,
  generateImapPassword,
  IMAP_PASSWORD_ALPHABET,
  IMAP_PASSWORD_LENGTH,
  PasswordHasher,
} from '../../src/auth/passwords.js';
import { OverloadedError, Semaphore } from '../../src/util/semaphore.js';

const CHEAP = { memoryKiB: 64, iterations: 1, parallelism: 1 };
const PRODUCTION = { memoryKiB: 19456, iterations: 2, parallelism: 1 };
const LIMITS = { maxConcurrent: 2, maxQueued: 100 };

const LETTERS = /[A-Za-z]/;
const DIGITS = /[0-9]/;
const SYMBOLS = /[^A-Za-z0-9]/;

describe('IMAP_PASSWORD_ALPHABET', () => {
  it('has 64 distinct characters, so a 6-bit mask picks one without bias', () => {
    expect(IMAP_PASSWORD_ALPHABET).toHaveLength(64);
    expect(new Set(IMAP_PASSWORD_ALPHABET).size).toBe(64);
  });

  it('is printable ASCII without the easily misread characters', () => {
    expect(IMAP_PASSWORD_ALPHABET).toMatch(/^[\x21-\x7e]+$/);
    for (const c of ['I', 'l', 'O', 'o', '0', '1']) expect(IMAP_PASSWORD_ALPHABET).not.toContain(c);
  });

  it('has none of the characters awkward in IMAP quoting or mail clients', () => {
    for (const c of ['"', "'", '`', '\\', ' ', '%', '*', '(', ')', '{', '}']) {
      expect(IMAP_PASSWORD_ALPHABET).not.toContain(c);
    }
  });

  it('has letters of both cases, digits and symbols', () => {
    const chars = [...IMAP_PASSWORD_ALPHABET];
    expect(chars.filter((c) => /[A-Z]/.test(c)).length).toBeGreaterThan(0);
    expect(chars.filter((c) => /[a-z]/.test(c)).length).toBeGreaterThan(0);
    expect(chars.filter((c) => DIGITS.test(c)).length).toBeGreaterThan(0);
    expect(chars.filter((c) => SYMBOLS.test(c)).length).toBeGreaterThan(0);
  });
});

describe('generateImapPassword', () => {
  const SAMPLES = 20_000;
  const passwords = Array.from({ length: SAMPLES }, () => generateImapPassword());

  it('makes 10 characters from the alphabet, always with a letter, a digit and a symbol', () => {
    expect(IMAP_PASSWORD_LENGTH).toBe(10);
    for (const pw of passwords) {
      expect(pw).toHaveLength(10);
      for (const c of pw) expect(IMAP_PASSWORD_ALPHABET).toContain(c);
      expect(pw).toMatch(LETTERS);
      expect(pw).toMatch(DIGITS);
      expect(pw).toMatch(SYMBOLS);
    }
  });

  it('does not repeat itself', () => {
    // 64^10 passwords, minus the rejected ones: a repeat among 20,000 has a chance below 1e-9.
    expect(new Set(passwords).size).toBe(SAMPLES);
  });

  it('picks every character at each position with the frequency of a uniform choice among valid passwords', () => {
    // Every accepted password is equally likely, so a character's chance at one position is
    // (number of valid passwords with that character there) / (number of valid passwords).
    // Within one class (letter, digit, symbol) every character is equally likely; digits and
    // symbols are more frequent than letters because a password must contain both.
    const classes = [...IMAP_PASSWORD_ALPHABET].map((c) =>
      LETTERS.test(c) ? 'L' : DIGITS.test(c) ? 'D' : 'S',
    );
    const size = { L: 0, D: 0, S: 0 };
    for (const k of classes) size[k]++;
    const n = IMAP_PASSWORD_LENGTH;
    const N = IMAP_PASSWORD_ALPHABET.length;
    const { L, D, S } = size;
    const p = (k: number, len: number) => k ** len;
    // Inclusion-exclusion: strings of length `len` that contain each of the given classes.
    const containing = (len: number, need: number[]): number => {
      let total = 0;
      for (let mask = 0; mask < 1 << need.length; mask++) {
        let excluded = 0;
        let sign = 1;
        need.forEach((k, i) => {
          if (mask & (1 << i)) {
            excluded += k;
            sign = -sign;
          }
        });
        total += sign * p(N - excluded, len);
      }
      return total;
    };
    const valid = containing(n, [L, D, S]);
    const chance = {
      L: containing(n - 1, [D, S]) / valid,
      D: containing(n - 1, [L, S]) / valid,
      S: containing(n - 1, [L, D]) / valid,
    };
    expect(L * chance.L + D * chance.D + S * chance.S).toBeCloseTo(1, 12);

    // One chi-square test per position (the characters of one password are not independent,
    // the passwords are). 63 degrees of freedom: mean 63, sd 11.2; P(X > 160) < 1e-9 for a
    // correct generator, so ten tests together fail by chance less than once in 1e8 runs. A
    // generator choosing uniformly from the alphabet scores about 600 here, one with modulo
    // bias or a lost character far more.
    const BOUND = 160;
    for (let pos = 0; pos < n; pos++) {
      const counts = new Map<string, number>();
      for (const pw of passwords) counts.set(pw[pos]!, (counts.get(pw[pos]!) ?? 0) + 1);
      let chi2 = 0;
      [...IMAP_PASSWORD_ALPHABET].forEach((c, i) => {
        const expected = SAMPLES * chance[classes[i]!];
        chi2 += ((counts.get(c) ?? 0) - expected) ** 2 / expected;
      });
      expect(chi2, `position ${pos}`).toBeLessThan(BOUND);
    }
  });
});

describe('PasswordHasher', () => {
  it('round trip with cheap parameters', async () => {
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    const phc = await hasher.hash('Abc2#defgh');
    expect(phc).toMatch(/^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
    expect(await hasher.verify(phc, 'Abc2#defgh')).toBe(true);
    expect(await hasher.verify(phc, Buffer.from('Abc2#defgh'))).toBe(true);
    expect(await hasher.verify(phc, 'Abc2#defgX')).toBe(false);
    expect(await hasher.verify(phc, '')).toBe(false);
  });

  it('salts every hash', async () => {
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    expect(await hasher.hash('same')).not.toBe(await hasher.hash('same'));
  });

  it('keeps UTF-8 passwords byte for byte', async () => {
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    const phc = await hasher.hash(Buffer.from('パスワード€', 'utf8'));
    expect(await hasher.verify(phc, 'パスワード€')).toBe(true);
    expect(await hasher.verify(phc, Buffer.from('パスワード€', 'utf16le'))).toBe(false);
  });

  it('a password that is not valid UTF-8 is a mismatch, not an exception', async () => {
    // Regression: @node-rs/argon2 throws synchronously for such a password, which escaped the
    // .catch and turned a Latin-1 password into a temporary failure ([UNAVAILABLE]).
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    const phc = await hasher.hash('pässword');
    expect(await hasher.verify(phc, Buffer.from('pässword', 'latin1'))).toBe(false);
    expect(await hasher.verify(phc, Buffer.from([0xff, 0xfe, 0x80]))).toBe(false);
    await expect(hasher.verifyDummy(Buffer.from([0xc3]))).resolves.toBe(false);
  });

  it('round trip with the production defaults (19456 KiB, 2 iterations, 1 lane)', async () => {
    const hasher = new PasswordHasher(PRODUCTION, LIMITS);
    const phc = await hasher.hash('k7#Pq9xZ!m');
    expect(phc).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(await hasher.verify(phc, 'k7#Pq9xZ!m')).toBe(true);
    expect(await hasher.verify(phc, 'k7#Pq9xZ!n')).toBe(false);
  });

  it('verifies a PHC string whose parameters are in m=,p=,t= order', async () => {
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    const phc = await hasher.hash('reordered');
    const reordered = phc.replace('$m=64,t=1,p=1$', '$m=64,p=1,t=1$');
    expect(reordered).not.toBe(phc);
    expect(checkPhc(reordered)).toBe(phc); // normalised to the standard m=,t=,p= order
    expect(await hasher.verify(reordered, 'reordered')).toBe(true);
    expect(await hasher.verify(reordered, 'other')).toBe(false);
  });

  it('verifies hashes made with other parameters than its own', async () => {
    const phc = await new PasswordHasher({ memoryKiB: 128, iterations: 3, parallelism: 2 }, LIMITS).hash('x');
    expect(await new PasswordHasher(CHEAP, LIMITS).verify(phc, 'x')).toBe(true);
  });

  it.each([
    '',
    'garbage',
    '$argon2id$',
    '$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$',
    '$argon2id$v=19$m=64,t=1,p=1$!!!$!!!',
    '$2b$10$abcdefghijklmnopqrstuuJ3Ei8Eg7oz6PBWu4T9c9k5rJ1tyc2Ty',
  ])('verify of a malformed hash %j is false, not an exception', async (phc) => {
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    await expect(hasher.verify(phc, 'pw')).resolves.toBe(false);
  });

  it('verifyDummy returns false', async () => {
    const hasher = new PasswordHasher(CHEAP, LIMITS);
    await expect(hasher.verifyDummy('anything')).resolves.toBe(false);
    await expect(hasher.verifyDummy(Buffer.from('again'))).resolves.toBe(false);
  });

  it('refuses work beyond its queue with OverloadedError', async () => {
    const hasher = new PasswordHasher(CHEAP, { maxConcurrent: 1, maxQueued: 0 });
    const phc = await hasher.hash('pw');
    const first = hasher.verify(phc, 'pw');
    await expect(hasher.verify(phc, 'pw')).rejects.toBeInstanceOf(OverloadedError);
    await expect(first).resolves.toBe(true);
  });
});

describe('checkPhc', () => {
  it('accepts argon2id, argon2i and argon2d PHC strings', async () => {
    const phc = await new PasswordHasher(CHEAP, LIMITS).hash('pw');
    expect(checkPhc(phc)).toBe(phc);
    for (const variant of ['argon2i', 'argon2d']) {
      const other = phc.replace('$argon2id$', `$${variant}$`);
      expect(checkPhc(other)).toBe(other);
    }
  });

  it.each([
    ['bcrypt with cost 03', '$2b$03$abcdefghijklmnopqrstuuJ3Ei8Eg7oz6PBWu4T9c9k5rJ1tyc2Ty'],
    ['sha512-crypt', '$6$salt$hash'],
    ['plain text', 'hunter2'],
    ['empty', ''],
    ['argon2 prefix only', '$argon2id$'],
    ['argon2 without parameters', '$argon2id$v=19$$c2FsdA$aGFzaA'],
  ])('rejects %s', (_name, phc) => {
    expect(() => checkPhc(phc)).toThrow(BadHashError);
  });
});

/** A promise with its resolve function, to hold a task open. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('Semaphore', () => {
  it('runs at most maxActive tasks at once', async () => {
    const sem = new Semaphore('test', 2, 10);
    let running = 0;
    let peak = 0;
    const gates = Array.from({ length: 6 }, () => deferred());
    const runs = gates.map((g) =>
      sem.run(async () => {
        running++;
        peak = Math.max(peak, running);
        await g.promise;
        running--;
      }),
    );
    await tick();
    expect(sem.active).toBe(2);
    expect(sem.queued).toBe(4);
    for (const g of gates) {
      g.resolve();
      await tick();
      expect(running).toBeLessThanOrEqual(2);
    }
    await Promise.all(runs);
    expect(peak).toBe(2);
    expect(sem.active).toBe(0);
    expect(sem.queued).toBe(0);
  });

  it('throws OverloadedError when the queue is full', async () => {
    const sem = new Semaphore('password verification', 1, 2);
    const gate = deferred();
    const runs = [1, 2, 3].map(() => sem.run(() => gate.promise));
    const overflow = sem.run(async () => 'never');
    await expect(overflow).rejects.toBeInstanceOf(OverloadedError);
    await expect(overflow).rejects.toMatchObject({
      code: 'MG_OVERLOADED',
      message: 'password verification: too many waiting',
    });
    gate.resolve();
    await Promise.all(runs);
    await expect(sem.run(async () => 'ok')).resolves.toBe('ok');
  });

  it('with no queue, refuses anything beyond maxActive', async () => {
    const sem = new Semaphore('test', 1, 0);
    const gate = deferred();
    const first = sem.run(() => gate.promise);
    await expect(sem.run(async () => 1)).rejects.toBeInstanceOf(OverloadedError);
    gate.resolve();
    await first;
  });

  it('starts waiting tasks in FIFO order', async () => {
    const sem = new Semaphore('test', 1, 10);
    const order: number[] = [];
    const gate = deferred();
    const first = sem.run(() => gate.promise);
    const rest = [1, 2, 3, 4, 5].map((i) =>
      sem.run(async () => {
        order.push(i);
        await tick();
      }),
    );
    await tick();
    expect(order).toEqual([]);
    gate.resolve();
    await Promise.all([first, ...rest]);
    expect(order).toEqual([1, 2, 3, 4, 5]);
  });

  it('releases the slot when a task fails', async () => {
    const sem = new Semaphore('test', 1, 10);
    const failing = sem.run(async () => {
      throw new Error('boom');
    });
    const next = sem.run(async () => 'next');
    await expect(failing).rejects.toThrow('boom');
    await expect(next).resolves.toBe('next');
    expect(sem.active).toBe(0);
  });
});
