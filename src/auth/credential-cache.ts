import { createHmac, randomBytes } from 'node:crypto';
import { type Account, normalizeLogin } from '../accounts/store.js';
import type { CredentialMatch } from './policy.js';

/**
 * Remembers the outcome of password checks for a while, like Dovecot's auth_cache
 * (auth_cache_ttl, auth_cache_negative_ttl), so that a mail app reconnecting every few minutes
 * costs one argon2 verification per credential per TTL instead of one per login.
 *
 * What makes it safe:
 * - The key is HMAC-SHA256 under a random secret made at start and never written anywhere,
 *   over the account's login, each stored credential's kind, version and hash, and the
 *   password. Neither the password nor an unkeyed hash of it is kept: a heap dump yields
 *   nothing to guess against offline without the secret, and each process has its own.
 * - The key covers the credential state read from Redis on this very login (one round trip,
 *   accounts/store.ts LOOKUP_SCRIPT). Issue, revoke and set-primary bump a version and change
 *   a hash, so the next login on every gateway computes another key and misses: no
 *   invalidation message is needed, none can be missed. The stored hash is in the key as well
 *   as the version because versions restart at 0 when an account is removed and created again.
 * - The login is in the key: an entry is never shared across accounts, even for equal passwords.
 * - It caches match(), nothing else: throttling and locks are checked before it, decide() runs
 *   on its answer unchanged, and a wrong password answered from the negative cache counts
 *   toward lockout exactly like one answered by argon2.
 * - Negative entries (the password matched nothing) cover unknown accounts exactly as known
 *   ones, so a repeated wrong password takes equally little time either way and the cache tells
 *   nothing about whether an account exists. A positive hit needs the right password, which the
 *   reply confirms anyway.
 * - Bounded: least recently used entries go first, positive and negative in separate maps so
 *   a flood of wrong passwords cannot push out the entries of working clients.
 */

export interface CredentialCacheConfig {
  /** How long a matching password is remembered; 0 turns the whole cache off. */
  ttlMs: number;
  maxEntries: number;
  /** How long a password that matched nothing is remembered; 0: no negative entries. */
  negativeTtlMs: number;
  maxNegativeEntries: number;
}

/** The stored credentials of one login, as the per-login lookup returned them. */
export interface CredentialState {
  /** The account's login; for an unknown account, the name as normalised for lookup. */
  login: string;
  imap: { version: number; hash: string } | null;
  primary: { version: number; hash: string } | null;
}

export interface CredentialCacheStats {
  hits: number;
  negativeHits: number;
  misses: number;
  entries: number;
  negativeEntries: number;
}

/** The state to key on: the account's credentials, or for no account the name as looked up. */
export function credentialStateOf(account: Account | null, requestedLogin: string): CredentialState {
  if (account === null) return { login: normalizeLogin(requestedLogin), imap: null, primary: null };
  return {
    login: account.login,
    imap: account.imapHash ? { version: account.imapVersion, hash: account.imapHash } : null,
    primary: account.primaryHash ? { version: account.primaryVersion, hash: account.primaryHash } : null,
  };
}

const IMAP_ONLY = Buffer.from('imap-only');
const PRIMARY = Buffer.from('primary');
const NO_VERSION = Buffer.from('-');
const NO_HASH = Buffer.alloc(0);

function credentialFields(c: { version: number; hash: string } | null): { version: Buffer; hash: Buffer } {
  if (c === null) return { version: NO_VERSION, hash: NO_HASH };
  return { version: Buffer.from(`${c.version}`, 'utf8'), hash: Buffer.from(c.hash, 'utf8') };
}

interface Entry {
  match: CredentialMatch;
  expiresAt: number;
}

/** A map in least-recently-used order (Map keeps insertion order; a hit re-inserts). */
class LruMap {
  readonly #map = new Map<string, Entry>();

  constructor(readonly max: number) {}

  get size(): number {
    return this.#map.size;
  }

  get(key: string, now: number): Entry | undefined {
    const e = this.#map.get(key);
    if (e === undefined) return undefined;
    this.#map.delete(key);
    if (e.expiresAt <= now) return undefined;
    this.#map.set(key, e);
    return e;
  }

  set(key: string, entry: Entry): void {
    this.#map.delete(key);
    this.#map.set(key, entry);
    while (this.#map.size > this.max) {
      const oldest = this.#map.keys().next();
      if (oldest.done) break;
      this.#map.delete(oldest.value);
    }
  }

  clear(): void {
    this.#map.clear();
  }
}

export class CredentialCache {
  readonly #secret: Buffer;
  readonly #positive: LruMap;
  readonly #negative: LruMap;
  #hits = 0;
  #negativeHits = 0;
  #misses = 0;

  constructor(
    readonly config: CredentialCacheConfig,
    private readonly clock: () => number,
    secret: Buffer = randomBytes(32),
  ) {
    this.#secret = secret;
    this.#positive = new LruMap(config.maxEntries);
    this.#negative = new LruMap(config.maxNegativeEntries);
  }

  get enabled(): boolean {
    return this.config.ttlMs > 0 && this.config.maxEntries > 0;
  }

  get stats(): CredentialCacheStats {
    return {
      hits: this.#hits,
      negativeHits: this.#negativeHits,
      misses: this.#misses,
      entries: this.#positive.size,
      negativeEntries: this.#negative.size,
    };
  }

  /** What match() answered for this password and credential state within the TTL, if anything. */
  get(state: CredentialState, password: Uint8Array): CredentialMatch | undefined {
    if (!this.enabled) return undefined;
    const key = this.#key(state, password);
    const now = this.clock();
    const hit = this.#positive.get(key, now) ?? this.#negative.get(key, now);
    if (hit === undefined) {
      this.#misses++;
      return undefined;
    }
    if (hit.match === 'none') this.#negativeHits++;
    else this.#hits++;
    return hit.match;
  }

  /** Remembers what match() answered (after the argon2 verifications) for this state. */
  set(state: CredentialState, password: Uint8Array, match: CredentialMatch): void {
    if (!this.enabled) return;
    const negative = match === 'none';
    const ttl = negative ? this.config.negativeTtlMs : this.config.ttlMs;
    if (ttl <= 0) return;
    const entry = { match, expiresAt: this.clock() + ttl };
    (negative ? this.#negative : this.#positive).set(this.#key(state, password), entry);
  }

  clear(): void {
    this.#positive.clear();
    this.#negative.clear();
  }

  /**
   * Each field length-prefixed, so that no choice of login or password can shift the others.
   * The fields are laid out in one buffer and hashed in one call.
   */
  #key(state: CredentialState, password: Uint8Array): string {
    const login = Buffer.from(state.login, 'utf8');
    const imap = credentialFields(state.imap);
    const primary = credentialFields(state.primary);
    const fields = [
      login,
      IMAP_ONLY,
      imap.version,
      imap.hash,
      PRIMARY,
      primary.version,
      primary.hash,
      password,
    ];
    let size = 0;
    for (const f of fields) size += 4 + f.length;
    const buf = Buffer.allocUnsafe(size);
    let at = 0;
    for (const f of fields) {
      at = buf.writeUInt32BE(f.length, at);
      buf.set(f, at);
      at += f.length;
    }
    const key = createHmac('sha256', this.#secret).update(buf).digest('base64');
    buf.fill(0); // it holds the password
    return key;
  }
}
