import { createHash } from 'node:crypto';
import type { Phase } from '../auth/policy.js';

/**
 * The staged rollout of the restrictions (rules.md R7-rules.md R9), as data and pure functions.
 *
 * Every operator command that changes a phase becomes one *rule* with a sequence number from
 * one Redis counter and a start time (`at`, now unless scheduled). A rule applies once its
 * time has come; where several apply, the most recent command (highest seq) wins. So
 * `enforce --percent 10` then `enforce --percent 25` widens the wave, `off --percent 25`
 * undoes it, a scheduled `enforce --at T` takes effect at T, and an immediate command given
 * after it overrides it. Explicit per-account rules (`--login`, `--users`) compete by seq with
 * the percentage waves the same way.
 *
 * Percentages use 10,000 stable buckets from a hash of the login, so the first 10% stay inside
 * when the wave grows to 25% (monotone), and every gateway computes the same answer.
 */

export const BUCKETS = 10_000;

export interface Rule {
  phase: Phase;
  /** Epoch ms from which the rule applies. */
  at: number;
  seq: number;
}

export interface Wave extends Rule {
  /** 0..100, in steps of 0.01. 100 is `--all`. */
  percent: number;
}

export interface RolloutDoc {
  overseas: Rule[];
  domestic: Wave[];
}

export const EMPTY_ROLLOUT: RolloutDoc = Object.freeze({ overseas: [], domestic: [] }) as RolloutDoc;

/** Where an account's domestic phase came from, for logs, metrics and status. */
export type Cohort = 'none' | 'explicit' | 'all' | `percent:${number}`;

export function bucketOf(login: string): number {
  const digest = createHash('sha256').update(login).digest();
  return digest.readUInt32BE(0) % BUCKETS;
}

export function inWave(bucket: number, percent: number): boolean {
  return bucket < Math.round(percent * (BUCKETS / 100));
}

function latest<T extends Rule>(
  rules: readonly T[],
  now: number,
  applies: (r: T) => boolean = () => true,
): T | null {
  let best: T | null = null;
  for (const r of rules) {
    if (r.at <= now && applies(r) && (best === null || r.seq > best.seq)) best = r;
  }
  return best;
}

export function overseasPhase(doc: RolloutDoc, now: number): Phase {
  return latest(doc.overseas, now)?.phase ?? 'off';
}

export function domesticPhase(
  doc: RolloutDoc,
  account: { bucket: number; explicit: Rule | null },
  now: number,
): { phase: Phase; cohort: Cohort } {
  const wave = latest(doc.domestic, now, (w) => inWave(account.bucket, w.percent));
  const explicit = account.explicit && account.explicit.at <= now ? account.explicit : null;
  if (explicit && (!wave || explicit.seq > wave.seq)) return { phase: explicit.phase, cohort: 'explicit' };
  if (!wave) return { phase: 'off', cohort: 'none' };
  return { phase: wave.phase, cohort: wave.percent >= 100 ? 'all' : `percent:${wave.percent}` };
}

/**
 * Drops rules that can never win again: applied ones beaten by a later applied rule that
 * covers at least the same accounts. Keeps the stored document small however often operators
 * change it.
 */
export function prune(doc: RolloutDoc, now: number): RolloutDoc {
  const liveOverseas = latest(doc.overseas, now);
  const overseas = doc.overseas.filter((r) => r.at > now || r === liveOverseas);
  const domestic = doc.domestic.filter(
    (w) =>
      w.at > now ||
      !doc.domestic.some((o) => o !== w && o.at <= now && o.seq > w.seq && o.percent >= w.percent),
  );
  return { overseas, domestic };
}

export function parseRolloutDoc(json: string | null | undefined): RolloutDoc {
  if (!json) return EMPTY_ROLLOUT;
  try {
    const d = JSON.parse(json) as Partial<RolloutDoc>;
    return {
      overseas: Array.isArray(d.overseas) ? d.overseas : [],
      domestic: Array.isArray(d.domestic) ? d.domestic : [],
    };
  } catch {
    return EMPTY_ROLLOUT;
  }
}

export function parseRule(json: string | null | undefined): Rule | null {
  if (!json) return null;
  try {
    const r = JSON.parse(json) as Rule;
    return typeof r.seq === 'number' && typeof r.at === 'number' ? r : null;
  } catch {
    return null;
  }
}
