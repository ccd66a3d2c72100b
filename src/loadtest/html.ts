import type { ErrorKind } from './errors.js';
import type { LoadtestReport, OpName, TimelinePoint } from './report.js';

/**
 * The HTML report: one self-contained file (no scripts, no fonts, no external URL of any
 * kind, so it opens offline and can be attached to a ticket), with inline SVG charts of the
 * latency percentiles over time, latency histograms, throughput and errors by kind, then the
 * figures as tables.
 */

const W = 760;
const H = 260;
const M = { top: 28, right: 16, bottom: 36, left: 64 };
const COLORS = ['#1f77b4', '#ff7f0e', '#d62728', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
const ERROR_COLORS: Record<ErrorKind, string> = {
  auth: '#d62728',
  refused: '#ff7f0e',
  unavailable: '#bcbd22',
  connect: '#8c564b',
  tls: '#9467bd',
  timeout: '#e377c2',
  closed: '#7f7f7f',
  rejected: '#17becf',
  protocol: '#1f77b4',
  other: '#333333',
};

export function esc(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );
}

/** Round tick values: 1, 2, 5 × 10^n. */
export function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag;
  const ticks: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1]! < max) ticks.push(Number((ticks[ticks.length - 1]! + step).toPrecision(12)));
  return ticks;
}

function fmt(v: number): string {
  if (v === 0) return '0';
  if (Math.abs(v) >= 1000) return `${Math.round(v / 100) / 10}k`;
  if (Math.abs(v) >= 10) return String(Math.round(v));
  return String(Math.round(v * 100) / 100);
}

interface Series {
  name: string;
  points: Array<[number, number]>;
  color?: string;
}

function frame(title: string, yTicks: number[], yMax: number, xTicks: Array<[number, string]>, body: string) {
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const y = (v: number) => M.top + ih - (v / yMax) * ih;
  const grid = yTicks
    .map(
      (t) =>
        `<line x1="${M.left}" x2="${M.left + iw}" y1="${y(t).toFixed(1)}" y2="${y(t).toFixed(1)}" class="grid"/>` +
        `<text x="${M.left - 6}" y="${(y(t) + 4).toFixed(1)}" text-anchor="end">${esc(fmt(t))}</text>`,
    )
    .join('');
  const xAxis = xTicks
    .map(
      ([x, label]) =>
        `<text x="${x.toFixed(1)}" y="${H - M.bottom + 16}" text-anchor="middle">${esc(label)}</text>`,
    )
    .join('');
  return (
    `<svg class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">` +
    `<text x="${M.left}" y="18" class="title">${esc(title)}</text>${grid}${xAxis}` +
    `<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + ih}" class="axis"/>` +
    `<line x1="${M.left}" x2="${M.left + iw}" y1="${M.top + ih}" y2="${M.top + ih}" class="axis"/>` +
    `${body}</svg>`
  );
}

/** A line chart of series over x (seconds), one colour per series, with a legend. */
export function lineChart(title: string, series: Series[], xMax: number, unit: string): string {
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const yMaxData = Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const yTicks = niceTicks(yMaxData || 1);
  const yMax = yTicks[yTicks.length - 1]!;
  const xm = xMax > 0 ? xMax : 1;
  const x = (v: number) => M.left + (v / xm) * iw;
  const y = (v: number) => M.top + ih - (v / yMax) * ih;
  const xTicks = niceTicks(xm, 8)
    .filter((t) => t <= xm)
    .map((t): [number, string] => [x(t), `${fmt(t)}s`]);
  const lines = series
    .map((s, i) => {
      const color = s.color ?? COLORS[i % COLORS.length]!;
      const pts = s.points.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(' ');
      const lx = W - M.right - (series.length - i) * 90;
      const legend =
        `<rect x="${lx}" y="9" width="10" height="10" fill="${color}"/>` +
        `<text x="${lx + 14}" y="18">${esc(s.name)}</text>`;
      const dots =
        s.points.length === 1
          ? `<circle cx="${pts.split(',')[0]}" cy="${pts.split(',')[1]}" r="3" fill="${color}"/>`
          : '';
      return `<polyline fill="none" stroke="${color}" stroke-width="1.6" points="${pts}"/>${dots}${legend}`;
    })
    .join('');
  const unitLabel = `<text x="14" y="${M.top + ih / 2}" transform="rotate(-90 14 ${M.top + ih / 2})" text-anchor="middle">${esc(unit)}</text>`;
  return frame(title, yTicks, yMax, xTicks, lines + unitLabel);
}

/** A bar chart: one bar per label (x axis labels under the bars). */
export function barChart(
  title: string,
  bars: Array<{ label: string; value: number; color?: string }>,
  unit: string,
): string {
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const yTicks = niceTicks(Math.max(0, ...bars.map((b) => b.value)) || 1);
  const yMax = yTicks[yTicks.length - 1]!;
  const n = Math.max(1, bars.length);
  const bw = iw / n;
  const every = Math.max(1, Math.ceil(n / 10));
  const xTicks: Array<[number, string]> = [];
  const rects = bars
    .map((b, i) => {
      const h = (b.value / yMax) * ih;
      const x = M.left + i * bw;
      if (i % every === 0) xTicks.push([x + bw / 2, b.label]);
      return (
        `<rect x="${(x + bw * 0.1).toFixed(1)}" y="${(M.top + ih - h).toFixed(1)}" width="${(bw * 0.8).toFixed(1)}" ` +
        `height="${h.toFixed(1)}" fill="${b.color ?? COLORS[0]}"><title>${esc(`${b.label}: ${b.value}`)}</title></rect>`
      );
    })
    .join('');
  const unitLabel = `<text x="14" y="${M.top + ih / 2}" transform="rotate(-90 14 ${M.top + ih / 2})" text-anchor="middle">${esc(unit)}</text>`;
  return frame(title, yTicks, yMax, xTicks, rects + unitLabel);
}

function table(head: string[], rows: Array<Array<string | number>>): string {
  return (
    `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>` +
    rows.map((r) => `<tr>${r.map((c) => `<td>${esc(String(c))}</td>`).join('')}</tr>`).join('') +
    '</tbody></table>'
  );
}

export function renderHtml(r: LoadtestReport): string {
  const points = r.timeline.points;
  /** The middle of a point's interval, in seconds, and a count per second over it. */
  const mid = (p: TimelinePoint) => p.t + p.ms / 2000;
  const rate = (p: TimelinePoint, n: number) => n / (p.ms / 1000);
  const xMax = r.elapsedMs / 1000;
  const ops = Object.keys(r.latency) as OpName[];
  const charts: string[] = [];

  for (const op of ops) {
    const series = (['p50', 'p90', 'p99'] as const).map((p) => ({
      name: p,
      points: points
        .filter((pt) => pt.latency[op])
        .map((pt): [number, number] => [mid(pt), pt.latency[op]![p]]),
    }));
    charts.push(lineChart(`${op} latency percentiles over time`, series, xMax, 'ms'));
  }
  for (const op of ops) {
    const bins = r.histograms[op] ?? [];
    charts.push(
      barChart(
        `${op} latency histogram (log scale bins)`,
        bins.map((b) => ({ label: `${fmt(b.fromMs)}`, value: b.count })),
        `${op}s`,
      ),
    );
  }
  const throughput: Series[] = [
    { name: 'ok/s', points: points.map((p): [number, number] => [mid(p), rate(p, p.ok)]) },
    {
      name: 'logins/s',
      points: points.map((p): [number, number] => [mid(p), rate(p, p.logins)]),
    },
    {
      name: 'errors/s',
      color: '#d62728',
      points: points.map((p): [number, number] => [mid(p), rate(p, p.errors)]),
    },
  ];
  charts.push(lineChart('throughput', throughput, xMax, 'per second'));
  if (r.totals.bytes > 0) {
    charts.push(
      lineChart(
        'data',
        [
          {
            name: 'MB/s',
            points: points.map((p): [number, number] => [mid(p), rate(p, p.bytes / 1e6)]),
          },
        ],
        xMax,
        'MB/s',
      ),
    );
  }
  if (r.scenario === 'idle' || r.totals.peakSessions > 0) {
    charts.push(
      lineChart(
        'open sessions',
        [{ name: 'sessions', points: points.map((p): [number, number] => [p.t + p.ms / 1000, p.sessions]) }],
        xMax,
        'sessions',
      ),
    );
  }
  const errorBars = (Object.entries(r.errors) as Array<[ErrorKind, number]>).map(([k, n]) => ({
    label: k,
    value: n,
    color: ERROR_COLORS[k],
  }));
  charts.push(
    barChart('errors by kind', errorBars.length ? errorBars : [{ label: 'none', value: 0 }], 'errors'),
  );

  const o = r.options;
  const facts: Array<[string, string]> = [
    ['scenario', r.scenario],
    ['target', `${r.target.host}:${r.target.port} (${r.target.tls})`],
    [
      'load',
      o.ratePerSec !== null
        ? `${o.ratePerSec}/s, at most ${o.concurrency} at once`
        : `${o.concurrency} concurrent sessions`,
    ],
    ['ramp-up', `${o.rampUpMs / 1000} s`],
    [
      'bounds',
      [
        o.durationMs !== null ? `${o.durationMs / 1000} s` : '',
        o.count !== null ? `${o.count} iterations` : '',
      ]
        .filter(Boolean)
        .join(', '),
    ],
    [
      'ran',
      `${r.startedAt} to ${r.endedAt} (${(r.elapsedMs / 1000).toFixed(1)} s), stopped by ${r.stoppedBy}`,
    ],
    ['accounts', String(o.accounts)],
    [
      'PROXY',
      o.proxy
        ? `${o.proxy}: ${(o.sourceMix ?? []).map((m) => `${m.label} ${Math.round(m.share * 1000) / 10}%`).join(', ')}`
        : 'no',
    ],
  ];
  const t = r.totals;
  const totals = table(
    ['iterations', 'ok', 'errors', 'dropped', 'logins', 'logins/s', 'ok/s', 'MB', 'MB/s', 'peak sessions'],
    [
      [
        t.iterations,
        t.ok,
        t.errors,
        t.dropped,
        t.logins,
        r.rates.loginsPerSec,
        r.rates.okPerSec,
        (t.bytes / 1e6).toFixed(2),
        r.rates.mbPerSec,
        t.peakSessions,
      ],
    ],
  );
  const latency = table(
    ['latency (ms)', 'count', 'min', 'mean', 'p50', 'p90', 'p95', 'p99', 'max'],
    Object.entries(r.latency).map(([op, s]) => [
      op,
      s.count,
      s.min,
      s.mean,
      s.p50,
      s.p90,
      s.p95,
      s.p99,
      s.max,
    ]),
  );
  const errors = t.errors
    ? table(
        ['error kind', 'count', 'first seen'],
        Object.entries(r.errors).map(([k, n]) => [k, n, r.errorSamples[k as ErrorKind] ?? '']),
      )
    : '<p>No errors.</p>';
  const sources = r.sources
    ? table(
        ['source', 'connections'],
        Object.entries(r.sources).map(([k, n]) => [k, n]),
      )
    : '';

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(`mailgate loadtest: ${r.scenario} ${r.target.host}:${r.target.port} ${r.startedAt}`)}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 820px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; font-size: 13px; }
dt { font-weight: 600; } dd { margin: 0; }
svg.chart { display: block; margin: 12px 0; font-size: 11px; background: #fff; }
svg.chart .title { font-size: 13px; font-weight: 600; }
svg.chart .grid { stroke: #eee; } svg.chart .axis { stroke: #888; }
</style>
</head>
<body>
<h1>mailgate loadtest: ${esc(r.scenario)}</h1>
<dl>${facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>
<h2>Totals</h2>
${totals}
<h2>Latency</h2>
${latency}
<h2>Errors</h2>
${errors}
${sources ? `<h2>Sources</h2>\n${sources}` : ''}
<h2>Charts</h2>
${charts.join('\n')}
</body>
</html>
`;
}
