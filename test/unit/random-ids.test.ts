import { describe, expect, it } from 'vitest';
import { RandomIds } from '../../src/util/random-ids.js';

describe('RandomIds', () => {
  it('makes base64url ids of the given number of bytes', () => {
    const ids = new RandomIds(6);
    for (let i = 0; i < 100; i++) {
      const id = ids.next();
      expect(id).toMatch(/^[A-Za-z0-9_-]{8}$/);
      expect(Buffer.from(id, 'base64url')).toHaveLength(6);
    }
  });

  it('never repeats across pool refills', () => {
    const ids = new RandomIds(6, 4); // a refill every 4 ids
    const seen = new Set<string>();
    for (let i = 0; i < 1_000; i++) seen.add(ids.next());
    expect(seen.size).toBe(1_000);
  });

  it('uses every byte of the pool once, then draws fresh ones', () => {
    const ids = new RandomIds(3, 2);
    const first = [ids.next(), ids.next()];
    const second = [ids.next(), ids.next()];
    expect(new Set([...first, ...second]).size).toBe(4);
  });

  it('refuses a size that is not a positive integer', () => {
    expect(() => new RandomIds(0)).toThrow(RangeError);
    expect(() => new RandomIds(1.5)).toThrow(RangeError);
  });
});
