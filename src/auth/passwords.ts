import { randomBytes } from 'node:crypto';
import { type Algorithm, hash, parseOptions, type Version, verify } from '@node-rs/argon2';
import { verify as bcryptVerify } from '@node-rs/bcrypt';
import type { Argon2Params } from '../config/schema.js';
import { MailgateError } from '../util/errors.js';
import { Semaphore } from '../util/semaphore.js';

const ARGON2ID = 2 as Algorithm; // a const enum in the typings, unusable under isolatedModules
const ARGON2_V0x13 = 1 as Version; // Version.V0x13, the current argon2 version (19)

/**
 * IMAP-only password alphabet (rules.md R2: letters, digits and symbols, case-sensitive). 64 symbols,
 * so one random byte masked to 6 bits picks one without modulo bias. Left out: characters
 * that are easily misread (I, l, O, o, 0, 1), and those awkward in mail clients or IMAP
 * quoting (space, quotes, backslash, %, *, parentheses, braces, non-ASCII).
 */
export const IMAP_PASSWORD_ALPHABET =
  'ABCDEFGHJKLMNPQRSTUVWXYZ' + 'abcdefghijkmnpqrstuvwxyz' + '23456789' + '!#+-=?@_';
export const IMAP_PASSWORD_LENGTH = 10;
const CLASSES = [/[A-Za-z]/, /[2-9]/, /[!#+\-=?@_]/];

/** 10 characters from the CSPRNG, with at least one letter, one digit and one symbol (rules.md R2). */
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

/** Which verifier a stored hash needs, told by its prefix; null for anything else. */
export type HashKind = 'argon2' | 'bcrypt';

export function hashKind(hash: string): HashKind | null {
  if (hash.startsWith('$argon2')) return 'argon2';
  if (/^\$2[aby]\$/.test(hash)) return 'bcrypt';
  return null;
}

// PHC string format: $argon2id$v=19$m=..,t=..,p=..$salt$hash (the version segment is optional).
const ARGON2_PHC = /^\$(argon2(?:id|i|d))\$(?:v=(\d+)\$)?([^$]*)\$([^$]+\$[^$]+)$/;
// Modular crypt format of OpenBSD bcrypt: $2a$/$2b$/$2y$, a two-digit cost 04-31, then 22
// characters of salt and 31 of hash in bcrypt's own base64 alphabet.
const BCRYPT = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;

/**
 * Accepts a primary-password hash as operators bring it from the account site: an argon2 PHC
 * string (m, t, p in any order) or a bcrypt hash ($2a$, $2b$, $2y$). Returns it normalised
 * (argon2 parameters in the standard m=,t=,p= order, so that the same hash is always stored
 * as the same string), or throws BadHashError.
 */
export function checkPasswordHash(hash: string): string {
  switch (hashKind(hash)) {
    case 'argon2':
      return normalizeArgon2(hash);
    case 'bcrypt':
      if (!BCRYPT.test(hash))
        throw new BadHashError('malformed bcrypt hash (version 2a, 2b or 2y, cost 04-31, 60 characters)');
      return hash;
    case null:
      throw new BadHashError(
        'not an argon2 PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash) or a bcrypt hash ($2b$...)',
      );
  }
}

/** The former name, from when only argon2 was accepted. */
export const checkPhc = checkPasswordHash;

function normalizeArgon2(phc: string): string {
  const m = ARGON2_PHC.exec(phc);
  const entries = (m?.[3] ?? '').split(',').map((kv): [string, string] => {
    const eq = kv.indexOf('=');
    return eq < 0 ? [kv, ''] : [kv.slice(0, eq), kv.slice(eq + 1)];
  });
  const params = new Map(entries);
  const [mem, t, p] = ['m', 't', 'p'].map((k) => params.get(k));
  // keyid and data (RFC 9106 associated data) are legal PHC parameters that no account site
  // uses; refusing them keeps "normalised" a plain reordering.
  if (!m || entries.length !== 3 || ![mem, t, p].every((v) => v !== undefined && /^\d+$/.test(v)))
    throw new BadHashError('malformed argon2 PHC string: the parameters must be m=, t= and p=');
  const normal = `$${m[1]}$${m[2] !== undefined ? `v=${m[2]}$` : ''}m=${mem},t=${t},p=${p}$${m[4]}`;
  try {
    parseOptions(normal);
  } catch {
    throw new BadHashError('malformed argon2 PHC string');
  }
  return normal;
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

  /** Hash operations running and waiting now, for the metrics. */
  get load(): { active: number; queued: number } {
    return { active: this.#gate.active, queued: this.#gate.queued };
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
   * Verifies against an argon2 PHC string or a bcrypt hash (dispatched on the prefix; both run
   * in the libuv pool). Throws OverloadedError when too many verifications are already waiting.
   * A password that is not valid UTF-8 makes @node-rs/argon2 throw synchronously: it matches
   * nothing. bcrypt looks at the first 72 bytes of the password only (its design).
   */
  verify(phc: string, password: string | Uint8Array): Promise<boolean> {
    return this.#gate.run(async () => {
      try {
        switch (hashKind(phc)) {
          case 'argon2':
            return await verify(phc, password);
          case 'bcrypt':
            return await bcryptVerify(password, phc);
          case null:
            return false;
        }
      } catch {
        return false;
      }
    });
  }

  /**
   * True when a hash that just verified should be replaced by hash(password): bcrypt, argon2i
   * or argon2d, another argon2 version, or argon2id with other m/t/p than configured. The
   * caller stores the new hash with AccountStore.replacePrimaryHash (compare-and-set).
   */
  needsRehash(phc: string): boolean {
    if (hashKind(phc) !== 'argon2') return true;
    let o: ReturnType<typeof parseOptions>;
    try {
      o = parseOptions(phc);
    } catch {
      return true;
    }
    return (
      o.algorithm !== ARGON2ID ||
      o.version !== ARGON2_V0x13 ||
      o.memoryCost !== this.#params.memoryKiB ||
      o.timeCost !== this.#params.iterations ||
      o.parallelism !== this.#params.parallelism
    );
  }

  /**
   * Spends the same work as verifying against a real hash with the configured parameters,
   * so that "no such account" costs what "wrong password" costs (docs/rules.md, the login decision, step 1).
   */
  async verifyDummy(password: string | Uint8Array): Promise<false> {
    this.#dummy ??= await this.hash(randomBytes(16));
    await this.verify(this.#dummy, password);
    return false;
  }
}
