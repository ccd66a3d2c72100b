/**
 * When and whether a notice goes out, as pure functions of the notice, the config and `now`:
 * dedupe keys, the subscriber's day for the daily cap, quiet hours in the subscriber's time
 * zone, and retry backoff. The Redis scripts in outbox.ts only apply what these decide
 * (SET NX for dedupe, INCR for the cap, a sorted set for deferral).
 */
import type { Phase, Restriction } from '../auth/policy.js';
import { bucketOf, domesticPhase, overseasPhase, type RolloutDoc, type Rule } from '../rollout/engine.js';
import type { NoticeParams, TemplateId } from './templates.js';

export interface QuietHours {
  /** HH:MM, 24-hour clock, in the subscriber's time zone. */
  start: string;
  end: string;
}

const MINUTE_MS = 60_000;
const DAY_MINUTES = 1_440;

const partFormats = new Map<string, Intl.DateTimeFormat>();

/** The local calendar date (YYYY-MM-DD) and minute of the day at `at` in time zone `tz`. */
export function localTime(at: number, tz: string): { date: string; minutes: number } {
  let f = partFormats.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-CA', {
      timeZone: tz,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    partFormats.set(tz, f);
  }
  const parts: Record<string, string> = {};
  for (const p of f.formatToParts(at)) parts[p.type] = p.value;
  return {
    date: `${parts.year}-${parts.month}-${parts.day}`,
    minutes: Number(parts.hour) * 60 + Number(parts.minute),
  };
}

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':');
  return Number(h) * 60 + Number(m);
}

/**
 * If `at` falls in the quiet hours of time zone `tz`, the first minute after them (epoch ms);
 * else null. A window whose start is after its end spans midnight (22:00-08:00). Start ==
 * end means no quiet hours. The end is found in local time, so a daylight-saving change inside
 * the window moves it with the wall clock.
 */
export function quietUntil(at: number, tz: string, quiet: QuietHours | null): number | null {
  if (!quiet) return null;
  const start = minutesOf(quiet.start);
  const end = minutesOf(quiet.end);
  if (start === end) return null;
  const { minutes } = localTime(at, tz);
  const inside = start < end ? minutes >= start && minutes < end : minutes >= start || minutes < end;
  if (!inside) return null;
  const wait = (end - minutes + DAY_MINUTES) % DAY_MINUTES;
  // Whole minutes from the start of the current minute.
  let due = at - (at % MINUTE_MS) + wait * MINUTE_MS;
  // Correct for an offset change between now and then (at most twice: DST moves once a night).
  for (let i = 0; i < 2; i++) {
    const drift = localTime(due, tz).minutes - end;
    if (drift === 0) break;
    due -=
      ((((drift % DAY_MINUTES) + DAY_MINUTES + DAY_MINUTES / 2) % DAY_MINUTES) - DAY_MINUTES / 2) * MINUTE_MS;
  }
  return due;
}

/** The day a notice counts toward the daily cap: the subscriber's calendar date. */
export function capDay(at: number, tz: string): string {
  return localTime(at, tz).date;
}

/**
 * What makes two notices "the same" for the dedupe window: the template, plus what would make
 * a second message say something new (the restriction warned about; the provider and country
 * of a login notification; the wave of a domestic-restriction notice).
 */
export function dedupeKey(template: TemplateId, p: NoticeParams, waveSeq?: number): string {
  switch (template) {
    case 'login-notification':
      return `${template}:${p.country ?? '-'}:${p.asn ?? '-'}`;
    case 'restriction-warning':
      return `${template}:${p.restriction ?? '-'}:${waveSeq ?? '-'}`;
    case 'domestic-restricted':
      return `${template}:${waveSeq ?? '-'}`;
    default:
      return template;
  }
}

/**
 * Delay before delivery attempt `attempt + 1` after `attempt` failures (1, 2, ...): base × 2^(n−1)
 * up to max, with ±20% jitter from `random` (0..1) so that a batch failing together does not
 * come back together.
 */
export function backoffMs(attempt: number, base: number, max: number, random: number): number {
  const raw = Math.min(max, base * 2 ** Math.max(0, attempt - 1));
  return Math.round(raw * (0.8 + 0.4 * random));
}

/**
 * When a restriction that is only in `warn` for this account will be enforced, if a scheduled
 * rule says so: the earliest start of a rule in the future after which the account's phase is
 * `enforce`. Null when nothing is scheduled.
 */
export function enforceDate(
  doc: RolloutDoc,
  restriction: Restriction,
  account: { login: string; domestic: Rule | null },
  now: number,
): number | null {
  let best: number | null = null;
  const bucket = bucketOf(account.login);
  const phaseAt = (t: number): Phase =>
    restriction === 'overseas'
      ? overseasPhase(doc, t)
      : domesticPhase(doc, { bucket, explicit: account.domestic }, t).phase;
  const starts = [
    ...(restriction === 'overseas' ? doc.overseas : doc.domestic).map((r) => r.at),
    ...(restriction === 'domestic' && account.domestic ? [account.domestic.at] : []),
  ];
  for (const at of starts) {
    if (at > now && (best === null || at < best) && phaseAt(at) === 'enforce') best = at;
  }
  return best;
}

const knownZones = new Map<string, boolean>();
/** Distinct names remembered; there are about 600 zones, so only garbage goes past this. */
const MAX_KNOWN_ZONES = 1_000;

/** Whether this Node.js knows the IANA time zone name (answers remembered: called per notice). */
export function isTimeZone(tz: string): boolean {
  const known = knownZones.get(tz);
  if (known !== undefined) return known;
  let ok = true;
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
  } catch {
    ok = false;
  }
  if (knownZones.size < MAX_KNOWN_ZONES) knownZones.set(tz, ok);
  return ok;
}

/** +819012345678 -> +8190****5678: enough to recognise a number in a log, not to dial it. */
export function maskMsisdn(msisdn: string): string {
  if (msisdn.length <= 7) return '****';
  return `${msisdn.slice(0, 5)}****${msisdn.slice(-4)}`;
}
