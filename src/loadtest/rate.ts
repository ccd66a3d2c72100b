/**
 * How a load test spreads its work over time.
 *
 * Fixed concurrency (closed loop): N sessions, each starting its next iteration when the last
 * one ends; with ramp-up, session i starts at i/N of the ramp.
 *
 * Fixed rate (open loop): iterations start on a schedule, `rate` per second, reached linearly
 * over the ramp-up, whatever the latency: the way users arrive. The schedule is shared by the
 * sessions (at most --concurrency run at once). When they are all busy, arrivals wait; an
 * arrival that could not start within MAX_LAG_MS of its time is dropped and counted, not run
 * late in a burst, so the offered load stays honest and the report says the rate was not
 * reached (and latencies are measured from the actual start).
 */

/** An arrival this late (all sessions busy) is dropped. */
export const MAX_LAG_MS = 1_000;

/** When arrival k (0, 1, ...) is due, in ms from the start. */
export function arrivalTimeMs(k: number, ratePerSec: number, rampMs: number): number {
  const perMs = ratePerSec / 1000;
  if (rampMs <= 0) return k / perMs;
  // Rate grows linearly from 0 to perMs over rampMs: arrivals by time t are perMs·t²/(2·ramp).
  const duringRamp = (perMs * rampMs) / 2;
  if (k < duringRamp) return Math.sqrt((2 * rampMs * k) / perMs);
  return rampMs + (k - duringRamp) / perMs;
}

/** How many arrivals are due by `tMs` (the number of k with arrivalTimeMs(k) <= tMs). */
export function arrivalsDue(tMs: number, ratePerSec: number, rampMs: number): number {
  if (tMs < 0) return 0;
  const perMs = ratePerSec / 1000;
  const expected =
    rampMs <= 0 || tMs >= rampMs
      ? (rampMs > 0 ? (perMs * rampMs) / 2 : 0) + perMs * (tMs - Math.max(0, rampMs))
      : (perMs * tMs * tMs) / (2 * rampMs);
  // Floating point: correct the estimate against the exact schedule.
  let n = Math.floor(expected) + 1;
  while (n > 0 && arrivalTimeMs(n - 1, ratePerSec, rampMs) > tMs) n--;
  while (arrivalTimeMs(n, ratePerSec, rampMs) <= tMs) n++;
  return n;
}

/** When session i of n starts under fixed concurrency with a ramp-up, in ms from the start. */
export function rampDelayMs(i: number, n: number, rampMs: number): number {
  return n <= 1 || rampMs <= 0 ? 0 : (rampMs * i) / n;
}

/**
 * The shared arrival schedule of a fixed-rate run. `claim(now)` hands the caller the next
 * arrival: how long to wait for it (0 when due already), skipping those overdue by more than
 * MAX_LAG_MS. Sans-I/O: the caller sleeps.
 */
export class ArrivalSchedule {
  #next = 0;
  #dropped = 0;

  constructor(
    readonly ratePerSec: number,
    readonly rampMs: number,
    readonly maxLagMs = MAX_LAG_MS,
  ) {}

  /** Arrivals skipped because no session was free in time. */
  get dropped(): number {
    return this.#dropped;
  }

  /** `elapsedMs`: time since the start. */
  claim(elapsedMs: number): { index: number; atMs: number; waitMs: number } {
    let at = arrivalTimeMs(this.#next, this.ratePerSec, this.rampMs);
    if (elapsedMs - at > this.maxLagMs) {
      // Skip to the first arrival not yet too late.
      const first = arrivalsDue(elapsedMs - this.maxLagMs, this.ratePerSec, this.rampMs);
      this.#dropped += first - this.#next;
      this.#next = first;
      at = arrivalTimeMs(this.#next, this.ratePerSec, this.rampMs);
    }
    const index = this.#next++;
    return { index, atMs: at, waitMs: Math.max(0, at - elapsedMs) };
  }
}
