import { describe, expect, it } from 'vitest';
import {
  backoffMs,
  capDay,
  dedupeKey,
  enforceDate,
  localTime,
  maskMsisdn,
  quietUntil,
} from '../../src/notify/schedule.js';
import { EMPTY_ROLLOUT, type RolloutDoc } from '../../src/rollout/engine.js';

/** A fake clock: Tokyo wall time as epoch ms (JST is UTC+9, no daylight saving). */
const tokyo = (d: string) => Date.parse(`${d}+09:00`);
const QUIET = { start: '22:00', end: '08:00' };

describe('quiet hours, in the subscriber time zone', () => {
  it('outside the window: not deferred', () => {
    expect(quietUntil(tokyo('2026-06-17T12:00'), 'Asia/Tokyo', QUIET)).toBeNull();
    expect(quietUntil(tokyo('2026-06-17T21:59'), 'Asia/Tokyo', QUIET)).toBeNull();
    expect(quietUntil(tokyo('2026-06-17T08:00'), 'Asia/Tokyo', QUIET)).toBeNull();
  });

  it('inside a window over midnight: deferred to its end, that night or the next morning', () => {
    expect(quietUntil(tokyo('2026-06-17T22:00'), 'Asia/Tokyo', QUIET)).toBe(tokyo('2026-06-18T08:00'));
    expect(quietUntil(tokyo('2026-06-17T23:30:15'), 'Asia/Tokyo', QUIET)).toBe(tokyo('2026-06-18T08:00'));
    expect(quietUntil(tokyo('2026-06-18T03:10'), 'Asia/Tokyo', QUIET)).toBe(tokyo('2026-06-18T08:00'));
    expect(quietUntil(tokyo('2026-06-18T07:59'), 'Asia/Tokyo', QUIET)).toBe(tokyo('2026-06-18T08:00'));
  });

  it('a window within one day', () => {
    const lunch = { start: '12:00', end: '13:30' };
    expect(quietUntil(tokyo('2026-06-17T12:45'), 'Asia/Tokyo', lunch)).toBe(tokyo('2026-06-17T13:30'));
    expect(quietUntil(tokyo('2026-06-17T13:30'), 'Asia/Tokyo', lunch)).toBeNull();
  });

  it('no window, or an empty one, never defers', () => {
    expect(quietUntil(tokyo('2026-06-17T23:00'), 'Asia/Tokyo', null)).toBeNull();
    expect(quietUntil(tokyo('2026-06-17T23:00'), 'Asia/Tokyo', { start: '08:00', end: '08:00' })).toBeNull();
  });

  it("is the subscriber's night, not the server's: 23:00 in Tokyo is 15:00 in London", () => {
    const at = tokyo('2026-06-17T23:00');
    expect(quietUntil(at, 'Europe/London', QUIET)).toBeNull();
    expect(quietUntil(at, 'Asia/Tokyo', QUIET)).not.toBeNull();
  });

  it('follows the wall clock across a daylight-saving change (New York, 2026-03-08)', () => {
    // 23:00 EST on the 7th; clocks go forward at 02:00; 08:00 EDT is 12:00 UTC.
    const at = Date.parse('2026-03-08T04:00Z');
    expect(localTime(at, 'America/New_York').minutes).toBe(23 * 60);
    expect(quietUntil(at, 'America/New_York', QUIET)).toBe(Date.parse('2026-03-08T12:00Z'));
  });
});

describe('daily cap day, dedupe keys, backoff, masking', () => {
  it('the cap counts per calendar day of the subscriber', () => {
    const at = Date.parse('2026-06-17T16:00Z'); // 01:00 on the 18th in Tokyo
    expect(capDay(at, 'Asia/Tokyo')).toBe('2026-06-18');
    expect(capDay(at, 'Europe/London')).toBe('2026-06-17');
  });

  it('dedupe keys: one per template, plus what would make a second message say something new', () => {
    const at = 0;
    expect(dedupeKey('overseas-restricted', { at, country: 'US' })).toBe('overseas-restricted');
    expect(dedupeKey('overseas-restricted', { at, country: 'FR' })).toBe('overseas-restricted');
    expect(dedupeKey('connection-error', { at })).toBe('connection-error');
    expect(dedupeKey('login-notification', { at, country: 'US', asn: 15169 })).toBe(
      'login-notification:US:15169',
    );
    expect(dedupeKey('restriction-warning', { at, restriction: 'domestic' })).toBe(
      'restriction-warning:domestic:-',
    );
    expect(dedupeKey('domestic-restricted', { at }, 42)).toBe('domestic-restricted:42');
  });

  it('backoff doubles from the base up to the maximum, with ±20% jitter', () => {
    expect([1, 2, 3, 4, 10].map((n) => backoffMs(n, 1000, 5000, 0.5))).toEqual([
      1000, 2000, 4000, 5000, 5000,
    ]);
    expect(backoffMs(1, 1000, 5000, 0)).toBe(800);
    expect(backoffMs(1, 1000, 5000, 1)).toBe(1200);
  });

  it('msisdn masking keeps the country and network prefix and the last four digits', () => {
    expect(maskMsisdn('+819012345678')).toBe('+8190****5678');
    expect(maskMsisdn('+1234')).toBe('****');
  });
});

describe('enforceDate: when a warned restriction will be enforced', () => {
  const now = tokyo('2026-06-17T12:00');
  const later = tokyo('2026-12-01T00:00');
  const account = { login: 'alice@example.jp', domestic: null };

  it('a scheduled overseas enforce', () => {
    const doc: RolloutDoc = {
      overseas: [
        { phase: 'warn', at: now - 1000, seq: 1 },
        { phase: 'enforce', at: later, seq: 2 },
      ],
      domestic: [],
    };
    expect(enforceDate(doc, 'overseas', account, now)).toBe(later);
    expect(enforceDate(doc, 'domestic', account, now)).toBeNull();
  });

  it('a scheduled domestic wave counts only if it covers the account', () => {
    const all: RolloutDoc = {
      overseas: [],
      domestic: [{ phase: 'enforce', at: later, seq: 3, percent: 100 }],
    };
    expect(enforceDate(all, 'domestic', account, now)).toBe(later);
    const tiny: RolloutDoc = {
      overseas: [],
      domestic: [{ phase: 'enforce', at: later, seq: 3, percent: 0.01 }],
    };
    expect([null, later]).toContain(enforceDate(tiny, 'domestic', account, now));
    expect(enforceDate(EMPTY_ROLLOUT, 'domestic', account, now)).toBeNull();
    // An explicit rule for the account.
    expect(
      enforceDate(
        EMPTY_ROLLOUT,
        'domestic',
        { ...account, domestic: { phase: 'enforce', at: later, seq: 9 } },
        now,
      ),
    ).toBe(later);
  });
});
