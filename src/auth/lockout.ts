import type { LockoutConfig } from '../config/schema.js';
import { parseIp } from '../net/cidr.js';

/**
 * The source a failure is counted against: the IPv4 address, or the /64 of an IPv6 address
 * (one subscriber line or host gets a whole /64, so counting single IPv6 addresses would let
 * one client rotate through 2^64 of them).
 */
export function sourceKey(ip: string): string {
  const parsed = parseIp(ip);
  if (!parsed) return ip;
  if (parsed.family === 4) return parsed.text;
  const h = parsed.hextets;
  return `${[h[0], h[1], h[2], h[3]].map((x) => (x ?? 0).toString(16)).join(':')}::/64`;
}

/**
 * Delay before answering a refused login from a source with `failures` recent failures: none
 * for the first few (a typo), then doubling up to the cap (a tarpit, as Dovecot's auth penalty).
 */
export function tarpitDelayMs(failures: number, cfg: LockoutConfig): number {
  if (failures < cfg.tarpitAfter) return 0;
  const steps = Math.min(failures - cfg.tarpitAfter, 20);
  return Math.min(cfg.tarpitBaseMs * 2 ** steps, cfg.tarpitMaxMs);
}

/** What the store reports about a login's source before the decision. */
export interface LockoutFacts {
  sourceFailures: number;
  pairLocked: boolean;
  accountLocked: boolean;
  /** The source logged in to this account successfully within lockout.knownSourceMs. */
  knownSource: boolean;
  /** When the source last logged in to this account successfully (as recorded), or null. */
  knownAt: number | null;
  /** The (account, source) pair has failures in its window (a success clears them). */
  pairFailures: boolean;
}

/**
 * Whether a successful login must be written down (known source refreshed, pair failures
 * cleared): not when the source is already known from a recent write and has no failures to
 * clear, so a reconnecting client costs one Redis round trip, not two. The record then lags
 * by at most min(1 h, knownSourceMs / 10) against a window of knownSourceMs.
 */
export function needsSuccessRecord(f: LockoutFacts, cfg: LockoutConfig, now: number): boolean {
  if (f.pairFailures || f.knownAt === null) return true;
  return now - f.knownAt >= Math.min(3_600_000, cfg.knownSourceMs / 10);
}

/** Whether this login is locked for this source (docs/rules.md, the login decision, step 2). */
export function isLocked(f: LockoutFacts): boolean {
  return f.pairLocked || (f.accountLocked && !f.knownSource);
}

export function isThrottled(f: LockoutFacts, cfg: LockoutConfig): boolean {
  return f.sourceFailures >= cfg.sourceMaxFailures;
}
