/**
 * Latency histogram with logarithmic buckets (as HdrHistogram, simplified): each bucket is
 * GROWTH wider than the one before, so every recorded value is known to within 1% whatever its
 * size, memory stays bounded (a few thousand counters for 1 µs .. 1 h) however many values come
 * in, and histograms of several intervals merge exactly.
 */

/** Values at or below this (ms) share the first bucket. */
export const MIN_MS = 0.001;
/** Bucket width ratio: a value's bucket midpoint is within 1% of it. */
const GROWTH = 1.02;
const LOG_GROWTH = Math.log(GROWTH);

export interface LatencySummary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

export class LatencyHistogram {
  readonly #counts = new Map<number, number>();
  #count = 0;
  #sum = 0;
  #min = Number.POSITIVE_INFINITY;
  #max = 0;

  get count(): number {
    return this.#count;
  }

  record(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    const i = bucketOf(ms);
    this.#counts.set(i, (this.#counts.get(i) ?? 0) + 1);
    this.#count++;
    this.#sum += ms;
    if (ms < this.#min) this.#min = ms;
    if (ms > this.#max) this.#max = ms;
  }

  merge(other: LatencyHistogram): void {
    for (const [i, n] of other.#counts) this.#counts.set(i, (this.#counts.get(i) ?? 0) + n);
    this.#count += other.#count;
    this.#sum += other.#sum;
    this.#min = Math.min(this.#min, other.#min);
    this.#max = Math.max(this.#max, other.#max);
  }

  /**
   * The value at percentile p (0-100): the smallest recorded value v such that at least p% of
   * values are <= v (nearest rank), reported as its bucket's midpoint clamped to [min, max].
   */
  percentile(p: number): number {
    if (this.#count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.#count));
    let seen = 0;
    for (const i of [...this.#counts.keys()].sort((a, b) => a - b)) {
      seen += this.#counts.get(i)!;
      if (seen >= rank) return Math.min(this.#max, Math.max(this.#min, midpointOf(i)));
    }
    return this.#max;
  }

  summary(): LatencySummary {
    const r = (x: number) => Math.round(x * 1000) / 1000;
    if (this.#count === 0) return { count: 0, min: 0, mean: 0, p50: 0, p90: 0, p95: 0, p99: 0, max: 0 };
    return {
      count: this.#count,
      min: r(this.#min),
      mean: r(this.#sum / this.#count),
      p50: r(this.percentile(50)),
      p90: r(this.percentile(90)),
      p95: r(this.percentile(95)),
      p99: r(this.percentile(99)),
      max: r(this.#max),
    };
  }

  /**
   * Counts in `bins` bins of equal width on a log scale between min and max, for a chart:
   * [{ fromMs, toMs, count }]. Empty for an empty histogram.
   */
  bins(bins = 40): Array<{ fromMs: number; toMs: number; count: number }> {
    if (this.#count === 0) return [];
    const lo = Math.max(MIN_MS, this.#min);
    const hi = Math.max(lo * GROWTH, this.#max);
    const step = (Math.log(hi) - Math.log(lo)) / bins;
    const out = Array.from({ length: bins }, (_, k) => ({
      fromMs: round3(Math.exp(Math.log(lo) + k * step)),
      toMs: round3(Math.exp(Math.log(lo) + (k + 1) * step)),
      count: 0,
    }));
    for (const [i, n] of this.#counts) {
      const v = Math.min(hi, Math.max(lo, midpointOf(i)));
      const k = Math.min(bins - 1, Math.floor((Math.log(v) - Math.log(lo)) / step));
      out[k]!.count += n;
    }
    return out;
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export function bucketOf(ms: number): number {
  return ms <= MIN_MS ? 0 : Math.floor(Math.log(ms / MIN_MS) / LOG_GROWTH) + 1;
}

/** The geometric middle of bucket i. */
function midpointOf(i: number): number {
  if (i === 0) return MIN_MS;
  return MIN_MS * GROWTH ** (i - 1) * Math.sqrt(GROWTH);
}
