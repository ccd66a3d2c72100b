import type { ProgressSnapshot } from './report.js';

/**
 * Live progress on standard error: on a terminal, one line redrawn in place with a bar;
 * otherwise (a pipe, a CI log) a plain line now and then, so logs stay readable.
 */

export const TTY_INTERVAL_MS = 250;
export const PLAIN_INTERVAL_MS = 5_000;
const BAR_WIDTH = 24;

/** The share of the run done, 0-1: by time, or by count when that is the only bound. */
export function fractionDone(
  p: ProgressSnapshot,
  bounds: { durationMs: number | null; count: number | null },
): number {
  const byTime = bounds.durationMs ? p.elapsedMs / bounds.durationMs : 0;
  const byCount = bounds.count ? (p.ok + p.errors) / bounds.count : 0;
  return Math.min(1, Math.max(byTime, byCount));
}

function stats(p: ProgressSnapshot): string {
  return (
    `sessions ${p.sessions}  ok ${p.ok} (${p.okPerSec.toFixed(1)}/s)  ` +
    `logins ${p.loginsPerSec.toFixed(1)}/s  errors ${p.errors}${p.errorsPerSec > 0 ? ` (${p.errorsPerSec.toFixed(1)}/s)` : ''}`
  );
}

export function progressBar(
  p: ProgressSnapshot,
  bounds: { durationMs: number | null; count: number | null },
): string {
  const f = fractionDone(p, bounds);
  const filled = Math.round(f * BAR_WIDTH);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`;
  const time = `${(p.elapsedMs / 1000).toFixed(1)}s${bounds.durationMs ? `/${bounds.durationMs / 1000}s` : ''}`;
  return `${bar} ${String(Math.floor(f * 100)).padStart(3)}%  ${time}  ${stats(p)}`;
}

export function progressLine(p: ProgressSnapshot): string {
  return `mailgate: loadtest: ${(p.elapsedMs / 1000).toFixed(1)} s  ${stats(p)}`;
}

/** A progress reporter for runLoadtest's onProgress hook, writing to `out`. */
export function progressReporter(
  out: NodeJS.WriteStream,
  bounds: { durationMs: number | null; count: number | null },
): { onProgress(p: ProgressSnapshot): void; intervalMs: number; done(): void } {
  if (out.isTTY) {
    return {
      intervalMs: TTY_INTERVAL_MS,
      onProgress: (p) => {
        const line = progressBar(p, bounds);
        out.write(`\r\x1b[2K${line.slice(0, Math.max(20, (out.columns || 120) - 1))}`);
      },
      done: () => out.write('\n'),
    };
  }
  return {
    intervalMs: PLAIN_INTERVAL_MS,
    onProgress: (p) => out.write(`${progressLine(p)}\n`),
    done: () => {},
  };
}
