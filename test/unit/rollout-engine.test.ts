import { describe, expect, it } from 'vitest';
import {
  BUCKETS,
  bucketOf,
  domesticPhase,
  EMPTY_ROLLOUT,
  inWave,
  overseasPhase,
  prune,
  type RolloutDoc,
} from '../../src/rollout/engine.js';

const T = 1_800_000_000_000;

describe('overseas schedule', () => {
  it('is off with no rule', () => {
    expect(overseasPhase(EMPTY_ROLLOUT, T)).toBe('off');
  });
  it('the latest applied command wins; a scheduled one waits for its time', () => {
    const doc: RolloutDoc = {
      overseas: [
        { phase: 'warn', at: T - 10, seq: 1 },
        { phase: 'enforce', at: T + 1000, seq: 2 },
      ],
      domestic: [],
    };
    expect(overseasPhase(doc, T)).toBe('warn');
    expect(overseasPhase(doc, T + 1000)).toBe('enforce');
  });
  it('an immediate command after a scheduled one overrides it', () => {
    const doc: RolloutDoc = {
      overseas: [
        { phase: 'enforce', at: T + 1000, seq: 2 },
        { phase: 'off', at: T, seq: 3 },
      ],
      domestic: [],
    };
    expect(overseasPhase(doc, T + 5000)).toBe('off');
  });
});

describe('domestic waves', () => {
  const logins = Array.from({ length: 20_000 }, (_, i) => `user${i}@example.jp`);
  const buckets = logins.map(bucketOf);

  it('buckets are stable and spread evenly', () => {
    expect(bucketOf('alice@example.jp')).toBe(bucketOf('alice@example.jp'));
    expect(buckets.every((b) => b >= 0 && b < BUCKETS)).toBe(true);
    const share = buckets.filter((b) => inWave(b, 10)).length / buckets.length;
    expect(share).toBeGreaterThan(0.09);
    expect(share).toBeLessThan(0.11);
  });

  it('growing a wave keeps everyone already inside (monotone)', () => {
    const ten = new Set(logins.filter((_, i) => inWave(buckets[i]!, 10)));
    const quarter = new Set(logins.filter((_, i) => inWave(buckets[i]!, 25)));
    for (const l of ten) expect(quarter.has(l)).toBe(true);
    expect(quarter.size).toBeGreaterThan(ten.size);
  });

  it('percent then wider percent then off undoes', () => {
    const b = buckets.find((x) => inWave(x, 10))!;
    const outside = buckets.find((x) => !inWave(x, 25) && inWave(x, 50))!;
    let doc: RolloutDoc = { overseas: [], domestic: [{ percent: 10, phase: 'enforce', at: 0, seq: 1 }] };
    expect(domesticPhase(doc, { bucket: b, explicit: null }, T)).toEqual({
      phase: 'enforce',
      cohort: 'percent:10',
    });
    expect(domesticPhase(doc, { bucket: outside, explicit: null }, T).phase).toBe('off');
    doc = { ...doc, domestic: [...doc.domestic, { percent: 25, phase: 'enforce', at: 0, seq: 2 }] };
    expect(domesticPhase(doc, { bucket: b, explicit: null }, T)).toEqual({
      phase: 'enforce',
      cohort: 'percent:25',
    });
    doc = { ...doc, domestic: [...doc.domestic, { percent: 25, phase: 'off', at: 0, seq: 3 }] };
    expect(domesticPhase(doc, { bucket: b, explicit: null }, T).phase).toBe('off');
  });

  it('explicit and wave rules compete by recency; --all is cohort all', () => {
    const b = buckets.find((x) => !inWave(x, 10))!;
    const doc: RolloutDoc = { overseas: [], domestic: [{ percent: 100, phase: 'warn', at: 0, seq: 5 }] };
    expect(domesticPhase(doc, { bucket: b, explicit: { phase: 'enforce', at: 0, seq: 4 } }, T)).toEqual({
      phase: 'warn',
      cohort: 'all',
    });
    expect(domesticPhase(doc, { bucket: b, explicit: { phase: 'enforce', at: 0, seq: 6 } }, T)).toEqual({
      phase: 'enforce',
      cohort: 'explicit',
    });
    // A scheduled explicit rule waits for its time.
    expect(
      domesticPhase(doc, { bucket: b, explicit: { phase: 'enforce', at: T + 1, seq: 6 } }, T).phase,
    ).toBe('warn');
  });

  it('prune drops only rules that can never win again', () => {
    const doc: RolloutDoc = {
      overseas: [
        { phase: 'warn', at: 0, seq: 1 },
        { phase: 'enforce', at: 10, seq: 2 },
        { phase: 'off', at: T + 100, seq: 3 },
      ],
      domestic: [
        { percent: 10, phase: 'enforce', at: 0, seq: 1 },
        { percent: 25, phase: 'enforce', at: 0, seq: 2 },
        { percent: 50, phase: 'warn', at: 0, seq: 3 },
        { percent: 100, phase: 'enforce', at: T + 100, seq: 4 },
      ],
    };
    const p = prune(doc, T);
    expect(p.overseas.map((r) => r.seq)).toEqual([2, 3]);
    expect(p.domestic.map((r) => r.seq)).toEqual([3, 4]);
    for (const bucket of [0, 500, 2000, 4000, 9000]) {
      for (const now of [T, T + 100]) {
        expect(domesticPhase(p, { bucket, explicit: null }, now)).toEqual(
          domesticPhase(doc, { bucket, explicit: null }, now),
        );
        expect(overseasPhase(p, now)).toBe(overseasPhase(doc, now));
      }
    }
  });
});
