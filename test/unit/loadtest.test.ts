import { describe, expect, it } from 'vitest';
import { Geo } from '../../src/geo/geo.js';
import { parseAccounts } from '../../src/loadtest/accounts.js';
import { parseDuration, parseSize, parseTarget } from '../../src/loadtest/cli.js';
import { proxyHeader } from '../../src/loadtest/connect.js';
import { classifyError, describeError, ScenarioError } from '../../src/loadtest/errors.js';
import { LatencyHistogram } from '../../src/loadtest/histogram.js';
import { barChart, esc, lineChart, niceTicks, renderHtml } from '../../src/loadtest/html.js';
import { fractionDone, progressBar } from '../../src/loadtest/progress.js';
import { ArrivalSchedule, arrivalsDue, arrivalTimeMs, rampDelayMs } from '../../src/loadtest/rate.js';
import {
  type LoadtestReport,
  Recorder,
  renderSummary,
  timelineIntervalMs,
} from '../../src/loadtest/report.js';
import { checkOptions, checkTarget, isLoopback, type LoadtestOptions } from '../../src/loadtest/run.js';
import { REGIONS, SourceMix, seededRandom } from '../../src/loadtest/source-mix.js';
import { CidrSet } from '../../src/net/cidr.js';
import { ProxyHeaderParser } from '../../src/net/proxy-protocol.js';
import { UsageError } from '../../src/util/errors.js';

describe('source mix', () => {
  it('draws entries in proportion to their weights', () => {
    const mix = SourceMix.parse('JP:95,US:5');
    expect(mix.entries).toEqual([
      { label: 'JP', share: 0.95 },
      { label: 'US', share: 0.05 },
    ]);
    const random = seededRandom(1);
    const n = 20_000;
    const counts: Record<string, number> = {};
    for (let i = 0; i < n; i++) {
      const s = mix.pick(random);
      counts[s.label] = (counts[s.label] ?? 0) + 1;
    }
    expect(counts.JP! / n).toBeCloseTo(0.95, 2);
    expect(counts.US! / n).toBeCloseTo(0.05, 2);
  });

  it('draws addresses inside the named ranges, never a block’s network or broadcast address', () => {
    const jp = new CidrSet(REGIONS.JP!.cidrs);
    const us = new CidrSet(REGIONS.US!.cidrs);
    const mix = SourceMix.parse('jp:1,US:1,192.0.2.0/30:1');
    const random = seededRandom(2);
    const seen = new Set<string>();
    for (let i = 0; i < 3_000; i++) {
      const s = mix.pick(random);
      expect(s.family).toBe('tcp4');
      if (s.label === 'JP') expect(jp.has(s.address)).toBe(true);
      else if (s.label === 'US') expect(us.has(s.address)).toBe(true);
      else {
        expect(s.label).toBe('192.0.2.0/30');
        seen.add(s.address);
      }
    }
    expect([...seen].sort()).toEqual(['192.0.2.1', '192.0.2.2']);
  });

  it('takes IPv6 blocks (the weight follows the last colon)', () => {
    const mix = SourceMix.parse('2001:db8:1::/48:1');
    const block = new CidrSet(['2001:db8:1::/48']);
    const random = seededRandom(3);
    for (let i = 0; i < 200; i++) {
      const s = mix.pick(random);
      expect(s.family).toBe('tcp6');
      expect(block.has(s.address)).toBe(true);
    }
  });

  it('is reproducible with a seed', () => {
    const mix = SourceMix.parse('49.96.0.0/16:95,8.8.8.0/24:5');
    const draw = (seed: number) => {
      const r = seededRandom(seed);
      return Array.from({ length: 50 }, () => mix.pick(r).address);
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it.each([
    [''],
    ['JP'],
    ['JP:0'],
    ['JP:-1'],
    ['JP:many'],
    ['MARS:5'],
    ['49.96.0.1/16:5'],
    ['300.1.1.0/24:5'],
  ])('refuses %j', (text) => {
    expect(() => SourceMix.parse(text)).toThrow(UsageError);
  });

  it('regions are what the bundled GeoIP database says they are', async () => {
    const geo = await Geo.open({
      countryDb: 'bundled',
      domesticCountries: ['JP'],
      unknownCountry: 'overseas',
      overrides: [],
    });
    const random = seededRandom(4);
    for (const [name, region] of Object.entries(REGIONS)) {
      const mix = SourceMix.parse(`${name}:1`);
      for (let i = 0; i < 200; i++) {
        const s = mix.pick(random);
        expect(geo.lookup(s.address).country, `${s.address} (${region.description})`).toBe(name);
      }
    }
  });

  it('becomes a PROXY header the gateway’s parser reads back', () => {
    const target = { host: '127.0.0.1', port: 993, tls: 'implicit' as const, insecure: true };
    for (const version of [1, 2] as const) {
      for (const source of [
        { address: '49.96.1.2', family: 'tcp4' as const, label: 'JP' },
        { address: '2001:db8::5', family: 'tcp6' as const, label: 'v6' },
      ]) {
        const bytes = proxyHeader(version, source, target, 40_000);
        const parsed = new ProxyHeaderParser().push(Buffer.concat([bytes, Buffer.from('a1 NOOP\r\n')]));
        expect(parsed).toMatchObject({
          done: true,
          header: {
            command: 'proxy',
            sourceAddress: source.address,
            sourcePort: 40_000,
            destinationPort: 993,
          },
        });
      }
    }
  });
});

describe('latency histogram', () => {
  /** Nearest-rank percentile of exact values. */
  const exact = (sorted: number[], p: number) =>
    sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;

  it('gives percentiles within 1% of the exact values', () => {
    const random = seededRandom(5);
    const values = Array.from({ length: 10_000 }, () => Math.exp(random() * 8 - 2)); // 0.13 ms .. 400 ms
    const h = new LatencyHistogram();
    for (const v of values) h.record(v);
    const sorted = [...values].sort((a, b) => a - b);
    for (const p of [1, 25, 50, 90, 95, 99, 99.9, 100]) {
      const want = exact(sorted, p);
      expect(Math.abs(h.percentile(p) - want) / want).toBeLessThanOrEqual(0.0101);
    }
    const s = h.summary();
    expect(s.count).toBe(10_000);
    expect(s.min).toBeCloseTo(sorted[0]!, 3);
    expect(s.max).toBeCloseTo(sorted.at(-1)!, 3);
    expect(s.mean).toBeCloseTo(values.reduce((a, b) => a + b, 0) / values.length, 2);
  });

  it('handles tiny samples and an empty histogram', () => {
    const h = new LatencyHistogram();
    expect(h.summary()).toMatchObject({ count: 0, p50: 0, max: 0 });
    expect(h.bins()).toEqual([]);
    h.record(12.5);
    expect(h.summary()).toMatchObject({ count: 1, min: 12.5, p50: 12.5, p99: 12.5, max: 12.5 });
    h.record(Number.NaN);
    h.record(-1);
    expect(h.count).toBe(1);
  });

  it('merges exactly, and its bins hold every value', () => {
    const a = new LatencyHistogram();
    const b = new LatencyHistogram();
    const all = new LatencyHistogram();
    const random = seededRandom(6);
    for (let i = 0; i < 2_000; i++) {
      const v = random() * 100;
      (i % 2 ? a : b).record(v);
      all.record(v);
    }
    a.merge(b);
    expect(a.summary()).toEqual(all.summary());
    const bins = all.bins(30);
    expect(bins).toHaveLength(30);
    expect(bins.reduce((s, x) => s + x.count, 0)).toBe(2_000);
    for (let i = 1; i < bins.length; i++) expect(bins[i]!.fromMs).toBeCloseTo(bins[i - 1]!.toMs, 3);
  });
});

describe('rate control', () => {
  it('spaces arrivals 1/rate apart without a ramp', () => {
    expect([0, 1, 2, 10].map((k) => arrivalTimeMs(k, 100, 0))).toEqual([0, 10, 20, 100]);
    expect(arrivalsDue(0, 100, 0)).toBe(1);
    expect(arrivalsDue(95, 100, 0)).toBe(10);
    expect(arrivalsDue(1_000, 100, 0)).toBe(101);
  });

  it('ramps the rate up linearly: half the arrivals of full rate during the ramp', () => {
    const rate = 100;
    const ramp = 10_000;
    expect(arrivalsDue(ramp, rate, ramp)).toBeCloseTo((rate * ramp) / 1000 / 2, -1);
    // A quarter of the way in, the rate is a quarter: arrivals grow with t².
    expect(arrivalsDue(ramp / 2, rate, ramp)).toBeCloseTo(arrivalsDue(ramp, rate, ramp) / 4, -1);
    // After the ramp, full rate.
    expect(arrivalsDue(ramp + 1_000, rate, ramp) - arrivalsDue(ramp, rate, ramp)).toBeCloseTo(100, -1);
  });

  it('arrivalsDue agrees with arrivalTimeMs everywhere', () => {
    const random = seededRandom(7);
    for (let i = 0; i < 500; i++) {
      const rate = 1 + random() * 500;
      const ramp = random() < 0.5 ? 0 : random() * 20_000;
      const t = random() * 60_000;
      const n = arrivalsDue(t, rate, ramp);
      expect(arrivalTimeMs(n - 1, rate, ramp)).toBeLessThanOrEqual(t);
      expect(arrivalTimeMs(n, rate, ramp)).toBeGreaterThan(t);
    }
  });

  it('starts sessions evenly over the ramp-up under fixed concurrency', () => {
    expect([0, 1, 2, 3].map((i) => rampDelayMs(i, 4, 8_000))).toEqual([0, 2_000, 4_000, 6_000]);
    expect(rampDelayMs(3, 4, 0)).toBe(0);
  });

  it('hands out arrivals in order with the wait until each is due', () => {
    const s = new ArrivalSchedule(10, 0); // one per 100 ms
    expect(s.claim(0)).toEqual({ index: 0, atMs: 0, waitMs: 0 });
    expect(s.claim(0)).toEqual({ index: 1, atMs: 100, waitMs: 100 });
    expect(s.claim(150)).toEqual({ index: 2, atMs: 200, waitMs: 50 });
    expect(s.claim(300)).toMatchObject({ index: 3, waitMs: 0 });
    expect(s.dropped).toBe(0);
  });

  it('drops arrivals that no session could start within the allowed lag, and counts them', () => {
    const s = new ArrivalSchedule(10, 0, 1_000);
    s.claim(0);
    // Every session was busy for 5 s: arrivals due before 4 s are dropped, not run in a burst.
    const c = s.claim(5_000);
    expect(c.atMs).toBeGreaterThanOrEqual(4_000);
    expect(c.waitMs).toBe(0);
    expect(s.dropped).toBe(c.index - 1);
    expect(s.dropped).toBeGreaterThanOrEqual(38);
  });
});

describe('accounts file', () => {
  it('reads CSV with a header, comments, quotes and commas in passwords', () => {
    const accounts = parseAccounts(
      [
        'login,password',
        '# a comment',
        '',
        'alice@example.jp,simple-pass',
        'bob@example.jp,has,commas',
        '"carol@example.jp","quoted ""pass"", with comma"',
      ].join('\r\n'),
    );
    expect(accounts).toEqual([
      { login: 'alice@example.jp', password: 'simple-pass' },
      { login: 'bob@example.jp', password: 'has,commas' },
      { login: 'carol@example.jp', password: 'quoted "pass", with comma' },
    ]);
  });

  it('reads JSON lines, mixed with CSV', () => {
    expect(parseAccounts('{"login":"a@example.jp","password":"p,\\"q"}\nb@example.jp,r\n')).toEqual([
      { login: 'a@example.jp', password: 'p,"q' },
      { login: 'b@example.jp', password: 'r' },
    ]);
  });

  it.each([
    ['', /no accounts/],
    ['alice@example.jp\n', /line 1: expected login,password/],
    ['ok@example.jp,p\n{"login": 1}\n', /line 2: expected \{"login"/],
    ['{nope\n', /line 1: not valid JSON/],
    ['"alice,p\n', /unterminated/],
  ])('refuses %j', (text, message) => {
    expect(() => parseAccounts(text)).toThrow(message);
  });
});

describe('error classification', () => {
  const imap = (code: string, response: string) =>
    Object.assign(new Error('Command failed'), {
      serverResponseCode: code,
      response,
      authenticationFailed: true,
    });

  it.each([
    [imap('AUTHENTICATIONFAILED', 'NO [AUTHENTICATIONFAILED] Authentication failed.'), 'auth'],
    [imap('ALERT', 'NO [ALERT] Access from abroad is restricted.'), 'refused'],
    [imap('UNAVAILABLE', 'NO [UNAVAILABLE] Temporary failure'), 'unavailable'],
    [
      Object.assign(new Error('x'), {
        code: 'EAUTH',
        responseCode: 535,
        response: '535 5.7.8 Authentication failed.',
      }),
      'auth',
    ],
    [
      Object.assign(new Error('x'), {
        code: 'EAUTH',
        responseCode: 535,
        response: '535 5.7.8 This account requires its IMAP-only password.',
      }),
      'refused',
    ],
    [
      Object.assign(new Error('x'), { code: 'EAUTH', responseCode: 454, response: '454 4.7.0 Temporary' }),
      'unavailable',
    ],
    [
      Object.assign(new Error('x'), {
        code: 'EENVELOPE',
        responseCode: 550,
        response: '550 5.1.1 no such user',
      }),
      'rejected',
    ],
    [Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }), 'connect'],
    [Object.assign(new Error('x'), { code: 'ETIMEDOUT' }), 'timeout'],
    [Object.assign(new Error('Failed to receive greeting'), { code: 'GREETING_TIMEOUT' }), 'timeout'],
    [Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }), 'tls'],
    [Object.assign(new Error('x'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }), 'tls'],
    [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'closed'],
    [Object.assign(new Error('Connection closed'), { code: 'EConnectionClosed' }), 'closed'],
    [Object.assign(new Error('Command failed'), { response: 'NO Mailbox does not exist' }), 'protocol'],
    [new ScenarioError('protocol', 'INBOX is empty'), 'protocol'],
    [new Error('something else'), 'other'],
  ])('%#: %s is %s', (err, kind) => {
    expect(classifyError(err)).toBe(kind);
  });

  it('describes an error without the login in it', () => {
    const d = describeError(
      Object.assign(new Error('x'), {
        code: 'EENVELOPE',
        responseCode: 550,
        response: '550 5.1.1 <alice@example.jp>: no',
      }),
    );
    expect(d).toBe('EENVELOPE 550 5.1.1 <[address]>: no');
  });
});

/** A recorder driven by a fake clock, for report tests. */
function sampleReport(): LoadtestReport {
  let now = 1_700_000_000_000;
  const rec = new Recorder(() => now, 1_000);
  for (let s = 0; s < 5; s++) {
    for (let i = 0; i < 20; i++) {
      now += 40;
      rec.latency('login', 10 + (i % 7));
      rec.login();
      rec.latency('session', 15 + (i % 7));
      rec.ok();
    }
    now += 200;
    rec.error('auth', 'NO [AUTHENTICATIONFAILED] <script>alert(1)</script>');
  }
  rec.error('refused', 'NO [ALERT] Access from abroad is restricted.');
  rec.source('JP');
  return rec.report({
    scenario: 'login',
    target: { host: '127.0.0.1', port: 993, tls: 'implicit' },
    options: {
      concurrency: 4,
      ratePerSec: null,
      durationMs: 5_000,
      count: null,
      rampUpMs: 0,
      timeoutMs: 30_000,
      proxy: 'v2',
      sourceMix: [{ label: 'JP', share: 1 }],
      accounts: 4,
    },
    stoppedBy: 'duration',
    dropped: 0,
  });
}

describe('report', () => {
  it('adds up: totals, rates, timeline, errors by kind', () => {
    const r = sampleReport();
    expect(r.totals).toMatchObject({ iterations: 106, ok: 100, errors: 6, logins: 100 });
    expect(r.errors).toEqual({ auth: 5, refused: 1 });
    expect(r.elapsedMs).toBe(5 * (20 * 40 + 200));
    expect(r.rates.okPerSec).toBe(20);
    // Five whole seconds; the empty sliver after the last one joins it.
    expect(r.timeline.points.map((p) => [p.t, p.ms])).toEqual([
      [0, 1_000],
      [1, 1_000],
      [2, 1_000],
      [3, 1_000],
      [4, 1_000],
    ]);
    expect(r.timeline.points.reduce((s, p) => s + p.ok, 0)).toBe(100);
    expect(r.timeline.points.reduce((s, p) => s + p.errors, 0)).toBe(6);
    expect(r.latency.login).toMatchObject({ count: 100, min: 10, max: 16 });
    expect(r.sources).toEqual({ JP: 1 });
  });

  it('renders a summary table', () => {
    const text = renderSummary(sampleReport());
    expect(text).toMatch(
      /^mailgate loadtest: login against 127\.0\.0\.1:993 \(implicit\), 4 sessions, 5\.0 s/,
    );
    expect(text).toMatch(/\nlatency ms +count +min +mean +p50 +p90 +p95 +p99 +max\n/);
    expect(text).toMatch(/\nlogin +100 +10\.00 /);
    expect(text).toMatch(/\nauth +5 +NO \[AUTHENTICATIONFAILED\]/);
  });

  it('renders self-contained HTML: SVG charts, no script, no external URL, text escaped', () => {
    const html = renderHtml(sampleReport());
    expect(html.startsWith('<!doctype html>')).toBe(true);
    const titles = [...html.matchAll(/<svg class="chart"[^>]*aria-label="([^"]+)"/g)].map((m) => m[1]);
    expect(titles).toEqual(
      expect.arrayContaining([
        'login latency percentiles over time',
        'session latency percentiles over time',
        'login latency histogram (log scale bins)',
        'throughput',
        'errors by kind',
      ]),
    );
    expect(html).not.toMatch(/https?:|<script|<link|@import|url\(|xlink|src=/i);
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('<polyline');
  });

  it('draws charts with round ticks and escaped titles', () => {
    expect(niceTicks(87)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(niceTicks(1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0)).toEqual([0, 1]);
    expect(esc('<a & "b">')).toBe('&lt;a &amp; &quot;b&quot;&gt;');
    const line = lineChart(
      'p<99>',
      [
        {
          name: 'p50',
          points: [
            [0, 1],
            [1, 2],
          ],
        },
      ],
      1,
      'ms',
    );
    expect(line).toContain('aria-label="p&lt;99&gt;"');
    expect(barChart('errors', [{ label: 'auth', value: 3 }], 'errors').match(/<rect /g)?.length).toBe(1);
  });

  it('keeps the timeline to about 300 points', () => {
    expect(timelineIntervalMs(60_000)).toBe(1_000);
    expect(timelineIntervalMs(3_600_000)).toBe(12_000);
    expect(timelineIntervalMs(null)).toBe(1_000);
  });
});

describe('progress', () => {
  const p = {
    elapsedMs: 15_000,
    ok: 120,
    errors: 3,
    sessions: 8,
    logins: 120,
    okPerSec: 8,
    loginsPerSec: 8,
    errorsPerSec: 0.2,
  };

  it('shows a bar by time, or by count', () => {
    expect(fractionDone(p, { durationMs: 30_000, count: null })).toBe(0.5);
    expect(fractionDone(p, { durationMs: null, count: 246 })).toBe(0.5);
    const bar = progressBar(p, { durationMs: 30_000, count: null });
    expect(bar).toMatch(
      /^\[#{12}\.{12}\] {2}50% {2}15\.0s\/30s {2}sessions 8 {2}ok 120 \(8\.0\/s\) {2}logins 8\.0\/s {2}errors 3 \(0\.2\/s\)$/,
    );
  });
});

describe('command line values', () => {
  it('parses durations, sizes and targets', () => {
    expect(['60s', '5m', '1h', '500ms', '2', '1.5s'].map((d) => parseDuration(d, '--duration'))).toEqual([
      60_000, 300_000, 3_600_000, 500, 2_000, 1_500,
    ]);
    expect(() => parseDuration('forever', '--duration')).toThrow(UsageError);
    expect(['2048', '2k', '2KiB', '1M'].map((s) => parseSize(s, '--message-size'))).toEqual([
      2048, 2048, 2048, 1_048_576,
    ]);
    expect(parseTarget('127.0.0.1:993')).toEqual({ host: '127.0.0.1', port: 993 });
    expect(parseTarget('[::1]:143')).toEqual({ host: '::1', port: 143 });
    expect(parseTarget('localhost:1143')).toEqual({ host: 'localhost', port: 1143 });
    for (const bad of ['127.0.0.1', '::1:143', 'host:0', 'host:70000'])
      expect(() => parseTarget(bad)).toThrow(UsageError);
  });

  it('knows loopback, and refuses anything else unless allowed', async () => {
    expect(['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1'].every(isLoopback)).toBe(true);
    expect(['10.0.0.1', '192.0.2.1', '::', '0.0.0.0', '::ffff:8.8.8.8'].some(isLoopback)).toBe(false);
    await expect(checkTarget('127.0.0.1', false)).resolves.toBeUndefined();
    await expect(checkTarget('localhost', false)).resolves.toBeUndefined();
    await expect(checkTarget('192.0.2.1', false)).rejects.toThrow(/--allow-remote/);
    await expect(checkTarget('192.0.2.1', true)).resolves.toBeUndefined();
  });

  it('requires a bound on every run', () => {
    const base: LoadtestOptions = {
      scenario: 'login',
      target: { host: '127.0.0.1', port: 993, tls: 'implicit', insecure: true },
      accounts: [{ login: 'a', password: 'b' }],
      concurrency: 1,
      ratePerSec: null,
      durationMs: 1_000,
      count: null,
      rampUpMs: 0,
      timeoutMs: 1_000,
      proxy: null,
      messageBytes: 100,
      seed: 1,
      allowRemote: false,
    };
    expect(() => checkOptions(base)).not.toThrow();
    expect(() => checkOptions({ ...base, durationMs: null })).toThrow(/--duration or --count/);
    expect(() => checkOptions({ ...base, concurrency: 20_000 })).toThrow(/--concurrency/);
    expect(() => checkOptions({ ...base, durationMs: 48 * 3_600_000 })).toThrow(/24h/);
    expect(() => checkOptions({ ...base, scenario: 'idle', durationMs: null, count: 5 })).toThrow(/idle/);
  });
});
