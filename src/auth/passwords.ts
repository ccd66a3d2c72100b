import { randomBytes } from 'node:crypto';
import { type Algorithm, hash, parseOptions, verify } from '@node-rs/argon2';
import type { Argon2Params } from '../config/schema.js';
import { MailgateError } from '../util/errors.js';
import { Semaphore } from '../util/semaphore.js';

const ARGON2ID = 2 as Algorithm; // a const enum in the typings, unusable under isolatedModules

/**
 * IMAP-only password alphabet (S2: letters, digits and symbols, case-sensitive). 64 symbols,
 * so one random byte masked to 6 bits picks one without modulo bias. Left out: characters
 * that are easily misread (I, l, O, o, 0, 1), and those awkward in mail clients or IMAP
 * quoting (space, quotes, backslash, %, *, parentheses, braces, non-ASCII).
 */
export const IMAP_PASSWORD_ALPHABET =
  'ABCDEFGHJKLMNPQRSTUVWXYZ' + 'abcdefghijkmnpqrstuvwxyz' + '23456789' + '!#+-=?@_';
export const IMAP_PASSWORD_LENGTH = 10;
const CLASSES = [/[A-Za-z]/, /[2-9]/, /[!#+\-=?@_]/];

/** 10 characters from the CSPRNG, with at least one letter, one digit and one symbol (S2). */
export function generateImapPassword(): string {
  for (;;) {
    const bytes = randomBytes(IMAP_PASSWORD_LENGTH);
    let out = '';
    for (const b of bytes) out += IMAP_PASSWORD_ALPHABET[b & 63];
    // Rejecting whole candidates keeps every accepted password equally likely.
    if (CLASSES.every((re) => re.test(out))) return out;
  }
}

export class BadHashError extends MailgateError {
  constructor(message: string) {
    super('MG_BAD_HASH', message);
  }
}

/** Accepts an argon2 PHC string (any parameter order) and returns it, or throws BadHashError. */
export function checkPhc(phc: string): string {
  if (!/^\$argon2(id|i|d)\$/.test(phc))
    throw new BadHashError('not an argon2 PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash)');
  try {
    parseOptions(phc);
  } catch {
    throw new BadHashError('malformed argon2 PHC string');
  }
  return phc;
}

/**
 * Hashing and verification, off the event loop (the libuv pool) and behind a semaphore.
 * A verification never throws for a malformed stored hash: it counts as "does not match".
 */
export class PasswordHasher {
  readonly #params: Argon2Params;
  readonly #gate: Semaphore;
  #dummy: string | null = null;

  constructor(params: Argon2Params, limits: { maxConcurrent: number; maxQueued: number }) {
    this.#params = params;
    this.#gate = new Semaphore('password verification', limits.maxConcurrent, limits.maxQueued);
  }

  hash(password: string | Uint8Array): Promise<string> {
    return this.#gate.run(() =>
      hash(password, {
        algorithm: ARGON2ID,
        memoryCost: this.#params.memoryKiB,
        timeCost: this.#params.iterations,
        parallelism: this.#params.parallelism,
      }),
    );
  }

  /**
   * Throws OverloadedError when too many verifications are already waiting. A password that
   * is not valid UTF-8 makes @node-rs/argon2 throw synchronously: it matches nothing.
   */
  verify(phc: string, password: string | Uint8Array): Promise<boolean> {
    return this.#gate.run(async () => {
      try {
        return await verify(phc, password);
      } catch {
        return false;
      }
    });
  }

  /**
   * Spends the same work as verifying against a real hash with the configured parameters,
   * so that "no such account" costs what "wrong password" costs (SPEC 3.3 step 1).
   */
  async verifyDummy(password: string | Uint8Array): Promise<false> {
    this.#dummy ??= await this.hash(randomBytes(16));
    await this.verify(this.#dummy, password);
    return false;
  }
}
