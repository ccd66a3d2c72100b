import { ERROR_KINDS, type ErrorKind } from './errors.js';
import { LatencyHistogram, type LatencySummary } from './histogram.js';

/**
 * What a load test measured: the recorder collects it while the run goes, `report()` turns it
 * into one plain JSON object (`--json FILE`), from which the summary table and the HTML
 * report are rendered. scripts/bench and other programs get the same object from
 * runLoadtest().
 */

export type Scenario = 'login' | 'fetch' | 'idle' | 'smtp';

/**
 * Timed operations: `login` from connect to authenticated (TLS and STARTTLS included),
 * `session` a whole login-scenario or smtp iteration, `fetch` one message body, `send` one
 * message from MAIL FROM to the server's 250.
 */
export type OpName = 'login' | 'session' | 'fetch' | 'send';
const OPS: OpName[] = ['login', 'session', 'fetch', 'send'];

export interface TimelinePoint {
  /** Seconds from the start, at the start of the interval. */
  t: number;
  /** Length of the interval in ms: intervalMs, less for the last one (rates divide by it). */
  ms: number;
  ok: number;
  errors: number;
  errorsByKind: Partial<Record<ErrorKind, number>>;
  logins: number;
  bytes: number;
  /** Sessions open at the end of the interval. */
  sessions: number;
  latency: Partial<Record<OpName, { count: number; p50: number; p90: number; p99: number; max: number }>>;
}

export interface LoadtestReport {
  tool: 'mailgate loadtest';
  version: 1;
  scenario: Scenario;
  target: { host: string; port: number; tls: string };
  options: {
    concurrency: number;
    ratePerSec: number | null;
    durationMs: number | null;
    count: number | null;
    rampUpMs: number;
    timeoutMs: number;
    proxy: 'v1' | 'v2' | null;
    sourceMix: Array<{ label: string; share: number }> | null;
    accounts: number;
  };
  startedAt: string;
  endedAt: string;
  elapsedMs: number;
  stoppedBy: 'duration' | 'count' | 'signal';
  totals: {
    /** Iterations finished: ok + errors (login: sessions; fetch: fetches; idle: sessions; smtp: messages). */
    iterations: number;
    ok: number;
    errors: number;
    /** Fixed rate only: arrivals skipped because every session was busy. */
    dropped: number;
    logins: number;
    bytes: number;
    messages: number;
    peakSessions: number;
  };
  rates: { iterationsPerSec: number; okPerSec: number; loginsPerSec: number; mbPerSec: number };
  latency: Partial<Record<OpName, LatencySummary>>;
  histograms: Partial<Record<OpName, Array<{ fromMs: number; toMs: number; count: number }>>>;
  errors: Partial<Record<ErrorKind, number>>;
  /** The first error of each kind, described (never a password or login). */
  errorSamples: Partial<Record<ErrorKind, string>>;
  /** Connections per source-mix entry, with --source-mix. */
  sources: Record<string, number> | null;
  timeline: { intervalMs: number; points: TimelinePoint[] };
}

interface Interval {
  ok: number;
  errors: Partial<Record<ErrorKind, number>>;
  logins: number;
  bytes: number;
  sessions: number;
  latency: Partial<Record<OpName, LatencyHistogram>>;
}

export interface ProgressSnapshot {
  elapsedMs: number;
  ok: number;
  errors: number;
  sessions: number;
  logins: number;
  /** Over the last few seconds. */
  okPerSec: number;
  loginsPerSec: number;
  errorsPerSec: number;
}

/** Seconds of recent history behind the progress rates. */
const RECENT_MS = 3_000;

export class Recorder {
  readonly startedAt: number;
  readonly #clock: () => number;
  readonly intervalMs: number;
  readonly #intervals: Interval[] = [];
  readonly #latency: Partial<Record<OpName, LatencyHistogram>> = {};
  readonly #errors: Partial<Record<ErrorKind, number>> = {};
  readonly #samples: Partial<Record<ErrorKind, string>> = {};
  readonly #sources = new Map<string, number>();
  readonly #recent: Array<{ at: number; ok: number; logins: number; errors: number }> = [];
  #ok = 0;
  #errorCount = 0;
  #logins = 0;
  #bytes = 0;
  #messages = 0;
  #sessions = 0;
  #peakSessions = 0;

  constructor(clock: () => number, intervalMs: number) {
    this.#clock = clock;
    this.startedAt = clock();
    this.intervalMs = intervalMs;
  }

  #interval(): Interval {
    const i = Math.max(0, Math.floor((this.#clock() - this.startedAt) / this.intervalMs));
    for (let k = this.#intervals.length; k <= i; k++) {
      this.#intervals.push({ ok: 0, errors: {}, logins: 0, bytes: 0, sessions: this.#sessions, latency: {} });
    }
    return this.#intervals[i]!;
  }

  latency(op: OpName, ms: number): void {
    const total = this.#latency[op] ?? new LatencyHistogram();
    this.#latency[op] = total;
    total.record(ms);
    const iv = this.#interval();
    const here = iv.latency[op] ?? new LatencyHistogram();
    iv.latency[op] = here;
    here.record(ms);
  }

  ok(): void {
    this.#ok++;
    this.#interval().ok++;
  }

  login(): void {
    this.#logins++;
    this.#interval().logins++;
  }

  error(kind: ErrorKind, description: string): void {
    this.#errorCount++;
    this.#errors[kind] = (this.#errors[kind] ?? 0) + 1;
    this.#samples[kind] ??= description;
    const iv = this.#interval();
    iv.errors[kind] = (iv.errors[kind] ?? 0) + 1;
  }

  bytes(n: number): void {
    this.#bytes += n;
    this.#interval().bytes += n;
  }

  message(): void {
    this.#messages++;
  }

  source(label: string): void {
    this.#sources.set(label, (this.#sources.get(label) ?? 0) + 1);
  }

  sessionOpened(): void {
    this.#sessions++;
    this.#peakSessions = Math.max(this.#peakSessions, this.#sessions);
    this.#interval().sessions = this.#sessions;
  }

  sessionClosed(): void {
    this.#sessions--;
    this.#interval().sessions = this.#sessions;
  }

  get sessions(): number {
    return this.#sessions;
  }

  progress(): ProgressSnapshot {
    const now = this.#clock();
    this.#recent.push({ at: now, ok: this.#ok, logins: this.#logins, errors: this.#errorCount });
    while (this.#recent.length > 1 && now - this.#recent[0]!.at > RECENT_MS) this.#recent.shift();
    // Until a second sample exists, the rates are the averages since the start.
    const first =
      this.#recent.length > 1 ? this.#recent[0]! : { at: this.startedAt, ok: 0, logins: 0, errors: 0 };
    const span = (now - first.at) / 1000;
    const per = (n: number) => (span > 0 ? n / span : 0);
    return {
      elapsedMs: now - this.startedAt,
      ok: this.#ok,
      errors: this.#errorCount,
      sessions: this.#sessions,
      logins: this.#logins,
      okPerSec: per(this.#ok - first.ok),
      loginsPerSec: per(this.#logins - first.logins),
      errorsPerSec: per(this.#errorCount - first.errors),
    };
  }

  report(
    meta: Pick<LoadtestReport, 'scenario' | 'target' | 'options' | 'stoppedBy'> & { dropped: number },
  ): LoadtestReport {
    const ended = this.#clock();
    this.#interval(); // the timeline reaches the end
    const elapsedMs = ended - this.startedAt;
    const secs = elapsedMs / 1000 || 1;
    const latency: LoadtestReport['latency'] = {};
    const histograms: LoadtestReport['histograms'] = {};
    for (const op of OPS) {
      const h = this.#latency[op];
      if (!h || h.count === 0) continue;
      latency[op] = h.summary();
      histograms[op] = h.bins(40);
    }
    const errors: LoadtestReport['errors'] = {};
    for (const k of ERROR_KINDS) if (this.#errors[k]) errors[k] = this.#errors[k];
    // A last interval much shorter than the others would show its few events as a spike in
    // the per-second rates: it joins the one before.
    const tailMs = elapsedMs - (this.#intervals.length - 1) * this.intervalMs;
    if (this.#intervals.length > 1 && tailMs < this.intervalMs / 4) {
      const last = this.#intervals.pop()!;
      const prev = this.#intervals[this.#intervals.length - 1]!;
      prev.ok += last.ok;
      prev.logins += last.logins;
      prev.bytes += last.bytes;
      prev.sessions = last.sessions;
      for (const [k, n] of Object.entries(last.errors) as Array<[ErrorKind, number]>) {
        prev.errors[k] = (prev.errors[k] ?? 0) + n;
      }
      for (const [op, h] of Object.entries(last.latency) as Array<[OpName, LatencyHistogram]>) {
        const into = prev.latency[op] ?? new LatencyHistogram();
        into.merge(h);
        prev.latency[op] = into;
      }
    }
    const lastIndex = this.#intervals.length - 1;
    const points = this.#intervals.map((iv, i): TimelinePoint => {
      const lat: TimelinePoint['latency'] = {};
      for (const op of OPS) {
        const h = iv.latency[op];
        if (!h || h.count === 0) continue;
        const s = h.summary();
        lat[op] = { count: s.count, p50: s.p50, p90: s.p90, p99: s.p99, max: s.max };
      }
      const errorCount = Object.values(iv.errors).reduce((a, b) => a + (b ?? 0), 0);
      return {
        t: (i * this.intervalMs) / 1000,
        ms: i < lastIndex ? this.intervalMs : Math.max(1, Math.round(elapsedMs - i * this.intervalMs)),
        ok: iv.ok,
        errors: errorCount,
        errorsByKind: iv.errors,
        logins: iv.logins,
        bytes: iv.bytes,
        sessions: iv.sessions,
        latency: lat,
      };
    });
    const round = (x: number) => Math.round(x * 100) / 100;
    return {
      tool: 'mailgate loadtest',
      version: 1,
      scenario: meta.scenario,
      target: meta.target,
      options: meta.options,
      startedAt: new Date(this.startedAt).toISOString(),
      endedAt: new Date(ended).toISOString(),
      elapsedMs: Math.round(elapsedMs),
      stoppedBy: meta.stoppedBy,
      totals: {
        iterations: this.#ok + this.#errorCount,
        ok: this.#ok,
        errors: this.#errorCount,
        dropped: meta.dropped,
        logins: this.#logins,
        bytes: this.#bytes,
        messages: this.#messages,
        peakSessions: this.#peakSessions,
      },
      rates: {
        iterationsPerSec: round((this.#ok + this.#errorCount) / secs),
        okPerSec: round(this.#ok / secs),
        loginsPerSec: round(this.#logins / secs),
        mbPerSec: round(this.#bytes / 1e6 / secs),
      },
      latency,
      histograms,
      errors,
      errorSamples: { ...this.#samples },
      sources: meta.options.sourceMix ? Object.fromEntries(this.#sources) : null,
      timeline: { intervalMs: this.intervalMs, points },
    };
  }
}

/** The timeline's resolution: 1 s, coarser for long runs so a report has at most ~300 points. */
export function timelineIntervalMs(durationMs: number | null): number {
  if (durationMs === null || durationMs <= 300_000) return 1_000;
  return Math.ceil(durationMs / 300_000) * 1_000;
}

/** The summary table printed at the end of a run. */
export function renderSummary(r: LoadtestReport): string {
  const lines: string[] = [];
  const o = r.options;
  const shape =
    o.ratePerSec !== null
      ? `${o.ratePerSec}/s (at most ${o.concurrency} at once)`
      : `${o.concurrency} sessions`;
  lines.push(
    `mailgate loadtest: ${r.scenario} against ${r.target.host}:${r.target.port} (${r.target.tls}), ${shape}, ` +
      `${(r.elapsedMs / 1000).toFixed(1)} s, stopped by ${r.stoppedBy}`,
  );
  if (o.sourceMix) {
    lines.push(
      `sources (PROXY ${o.proxy}): ${Object.entries(r.sources ?? {})
        .map(([k, n]) => `${k} ${n}`)
        .join(', ')}`,
    );
  }
  const t = r.totals;
  lines.push(
    `iterations ${t.iterations}: ok ${t.ok}, errors ${t.errors}${t.dropped ? `, dropped ${t.dropped} (rate not reached)` : ''}; ` +
      `logins ${t.logins} (${r.rates.loginsPerSec}/s); ok ${r.rates.okPerSec}/s` +
      (t.bytes ? `; ${(t.bytes / 1e6).toFixed(1)} MB (${r.rates.mbPerSec} MB/s)` : '') +
      (t.messages ? `; messages ${t.messages}` : '') +
      (r.scenario === 'idle' ? `; peak sessions ${t.peakSessions}` : ''),
  );
  lines.push('');
  const header = ['latency ms', 'count', 'min', 'mean', 'p50', 'p90', 'p95', 'p99', 'max'];
  const rows = Object.entries(r.latency).map(([op, s]) => [
    op,
    String(s.count),
    ...[s.min, s.mean, s.p50, s.p90, s.p95, s.p99, s.max].map((x) => x.toFixed(2)),
  ]);
  if (rows.length > 0) lines.push(...table([header, ...rows]));
  if (t.errors > 0) {
    lines.push('');
    lines.push(
      ...table(
        [
          ['errors', 'count', 'first seen'],
          ...Object.entries(r.errors).map(([k, n]) => [k, String(n), r.errorSamples[k as ErrorKind] ?? '']),
        ],
        [2],
      ),
    );
  }
  return lines.join('\n');
}

/** Columns padded to their widest cell: the first (a name) and text columns to the left, numbers to the right. */
function table(rows: string[][], textColumns: number[] = []): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => (row[c] ?? '').length)));
  const left = new Set([0, ...textColumns]);
  return rows.map((row) =>
    row
      .map((cell, c) => (left.has(c) ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join('  ')
      .trimEnd(),
  );
}
