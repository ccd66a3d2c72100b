// `bin/mailgate loadtest` as an operator runs it, for a few seconds against a test gateway in
// front of real Redis, Dovecot and Postfix: the JSON report's counts, errors classified by
// kind, PROXY v2 source mixes, the HTML report, and the loopback guard.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DovecotServer,
  type PostfixServer,
  type RedisServer,
  startDovecot,
  startPostfix,
  startRedis,
} from '../../src/devenv/servers.js';
import type { LoadtestReport } from '../../src/loadtest/report.js';
import { runMailgate } from '../support/cli.js';
import { LOAD_BALANCER_IP, startTestGateway, type TestGateway } from '../support/gateway.js';

const USERS = ['lt0', 'lt1', 'lt2', 'lt3'];
const PASSWORD = (u: string) => `pw-${u}-primary`;
/** About 20 KB, as in issue 6's benchmark mailboxes. */
const MESSAGE_BYTES = 20_000;
const MESSAGES_PER_USER = 3;

let redis: RedisServer;
let dovecot: DovecotServer;
let postfix: PostfixServer;
let t: TestGateway;
let dir: string;
let goodAccounts: string;
let mixedAccounts: string;

function message(i: number): string {
  const head = `From: <sender@example.jp>\r\nTo: <lt@example.jp>\r\nSubject: load ${i}\r\nMessage-ID: <load-${i}@example.jp>\r\n\r\n`;
  return (
    head +
    'x'
      .repeat(76)
      .concat('\r\n')
      .repeat(Math.ceil(MESSAGE_BYTES / 78))
  );
}

async function loadtest(
  args: string[],
): Promise<{ code: number | null; report: LoadtestReport; stderr: string; stdout: string }> {
  const out = join(dir, `report-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  const r = await runMailgate(['loadtest', '--no-progress', '--json', out, ...args]);
  let report: LoadtestReport;
  try {
    report = JSON.parse(readFileSync(out, 'utf8')) as LoadtestReport;
  } catch {
    throw new Error(`no report (exit ${r.code}):\n${r.stderr}\n${r.stdout}`);
  }
  return { code: r.code, report, stderr: r.stderr, stdout: r.stdout };
}

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis({ appendOnly: false }),
    startDovecot({ users: USERS.map((user) => ({ user, password: 'store-only' })), lmtp: true }),
  ]);
  postfix = await startPostfix({ deliverTo: dovecot, users: USERS });
  t = await startTestGateway({ redis, dovecot, keyPrefix: 'lt:', smtp: { postfix } });
  for (const u of USERS) {
    await t.ops.addAccount({ login: `${u}@example.jp`, primaryPassword: PASSWORD(u), upstreamUser: u });
    for (let i = 0; i < MESSAGES_PER_USER; i++) await dovecot.deliver(u, message(i));
  }
  dir = mkdtempSync(join(tmpdir(), 'mailgate-loadtest-'));
  goodAccounts = join(dir, 'good.csv');
  writeFileSync(
    goodAccounts,
    `login,password\n${USERS.map((u) => `${u}@example.jp,${PASSWORD(u)}`).join('\n')}\n`,
  );
  // JSON lines, with one wrong password among them.
  mixedAccounts = join(dir, 'mixed.jsonl');
  writeFileSync(
    mixedAccounts,
    [
      ...USERS.slice(0, 3).map((u) => JSON.stringify({ login: `${u}@example.jp`, password: PASSWORD(u) })),
      JSON.stringify({ login: 'lt3@example.jp', password: 'not-the-password' }),
    ].join('\n'),
  );
});

afterAll(async () => {
  await t?.close();
  await Promise.all([postfix?.stop(), dovecot?.stop()]);
  await redis?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('mailgate loadtest', () => {
  it('login over implicit TLS: counts add up and a wrong password shows as an auth error', async () => {
    const html = join(dir, 'login.html');
    const { code, report, stdout } = await loadtest([
      '--target',
      `127.0.0.1:${t.port('implicit')}`,
      '--tls',
      'implicit',
      '--insecure',
      '--accounts',
      mixedAccounts,
      '--concurrency',
      '4',
      '--duration',
      '3s',
      '--html',
      html,
    ]);
    expect(code).toBe(0);
    expect(report.scenario).toBe('login');
    expect(report.stoppedBy).toBe('duration');
    const { totals } = report;
    expect(totals.iterations).toBe(totals.ok + totals.errors);
    expect(totals.ok).toBeGreaterThan(8);
    // Round-robin over four accounts, one of them with a wrong password: about a quarter fail.
    expect(Object.keys(report.errors)).toEqual(['auth']);
    expect(report.errors.auth).toBe(totals.errors);
    expect(totals.errors).toBeGreaterThan(0);
    expect(totals.errors).toBeLessThan(totals.ok);
    expect(report.errorSamples.auth).toContain('AUTHENTICATIONFAILED');
    expect(report.errorSamples.auth).not.toContain('not-the-password');
    expect(totals.logins).toBe(totals.ok);
    expect(report.latency.login?.count).toBe(totals.ok);
    expect(report.latency.session?.count).toBe(totals.ok);
    expect(report.latency.login!.p50).toBeGreaterThan(0);
    expect(report.timeline.points.reduce((s, p) => s + p.ok, 0)).toBe(totals.ok);
    // Connections: never more than the sessions, all closed at the end.
    expect(totals.peakSessions).toBeGreaterThan(0);
    expect(totals.peakSessions).toBeLessThanOrEqual(4);
    expect(report.timeline.points.at(-1)?.sessions).toBe(0);
    expect(stdout).toMatch(/^mailgate loadtest: login against 127\.0\.0\.1:\d+ \(implicit\)/);
    expect(stdout).toContain('auth');
    const page = readFileSync(html, 'utf8');
    expect(page.match(/<svg /g)?.length).toBeGreaterThanOrEqual(4);
    expect(page).not.toMatch(/https?:\/\//);
  });

  it('fetch over STARTTLS: --count bounds the fetches, bytes are counted', async () => {
    const { code, report } = await loadtest([
      '--scenario',
      'fetch',
      '--target',
      `127.0.0.1:${t.port('starttls')}`,
      '--tls',
      'starttls',
      '--insecure',
      '--accounts',
      goodAccounts,
      '--concurrency',
      '3',
      '--count',
      '30',
    ]);
    expect(code).toBe(0);
    expect(report.stoppedBy).toBe('count');
    expect(report.totals).toMatchObject({ iterations: 30, ok: 30, errors: 0, logins: 3 });
    expect(report.totals.bytes).toBeGreaterThan(30 * MESSAGE_BYTES);
    expect(report.latency.fetch?.count).toBe(30);
    expect(report.rates.mbPerSec).toBeGreaterThan(0);
  });

  it('PROXY v2 with a source mix: overseas clients are refused by policy, domestic ones get in', async () => {
    await t.ops.setOverseasPhase('enforce');
    try {
      const { code, report } = await loadtest([
        '--target',
        `127.0.0.1:${t.port('none')}`,
        '--tls',
        'none',
        '--accounts',
        goodAccounts,
        '--proxy',
        'v2',
        '--source-mix',
        'JP:50,US:50',
        '--local-address',
        LOAD_BALANCER_IP,
        '--concurrency',
        '3',
        '--count',
        '40',
        '--rate',
        '40',
        '--seed',
        '7',
      ]);
      expect(code).toBe(0);
      expect(report.options.proxy).toBe('v2');
      expect(report.totals.iterations).toBe(40);
      expect(report.sources?.JP).toBeGreaterThan(5);
      expect(report.sources?.US).toBeGreaterThan(5);
      expect((report.sources?.JP ?? 0) + (report.sources?.US ?? 0)).toBe(40);
      expect(report.errors).toEqual({ refused: report.sources?.US });
      expect(report.errorSamples.refused).toContain('ALERT');
      expect(report.totals.ok).toBe(report.sources?.JP);
    } finally {
      await t.ops.setOverseasPhase('off');
    }
  });

  it('idle: holds every session in IDLE until the end, then logs out', async () => {
    const before = t.gateway.sessions.size;
    const run = loadtest([
      '--scenario',
      'idle',
      '--target',
      `127.0.0.1:${t.port('implicit')}`,
      '--tls',
      'implicit',
      '--insecure',
      '--accounts',
      goodAccounts,
      '--concurrency',
      '4',
      '--duration',
      '3s',
    ]);
    // Meanwhile the gateway holds the four sessions, joined to Dovecot.
    await expect.poll(() => t.gateway.sessions.size - before, { timeout: 10_000 }).toBe(4);
    const { code, report } = await run;
    expect(code).toBe(0);
    expect(report.totals).toMatchObject({ ok: 4, errors: 0, logins: 4, peakSessions: 4 });
    await expect.poll(() => t.gateway.sessions.size - before, { timeout: 10_000 }).toBe(0);
  });

  it('smtp: each iteration logs in and submits one message through the gateway to Postfix', async () => {
    const { code, report } = await loadtest([
      '--scenario',
      'smtp',
      '--target',
      `127.0.0.1:${t.smtpPort('implicit')}`,
      '--tls',
      'implicit',
      '--insecure',
      '--accounts',
      goodAccounts,
      '--concurrency',
      '2',
      '--count',
      '6',
      '--message-size',
      '4k',
    ]);
    expect(code).toBe(0);
    expect(report.target.tls).toBe('implicit');
    expect(report.totals).toMatchObject({ iterations: 6, ok: 6, errors: 0, messages: 6, logins: 6 });
    expect(report.timeline.points.at(-1)?.sessions).toBe(0);
    expect(report.latency.send?.count).toBe(6);
    await postfix.waitForLog(/status=sent/);
  });

  it('--json without a file prints the report on stdout', async () => {
    const r = await runMailgate([
      'loadtest',
      '--no-progress',
      '--target',
      `127.0.0.1:${t.port('none')}`,
      '--tls',
      'none',
      '--accounts',
      goodAccounts,
      '--count',
      '2',
      '--concurrency',
      '1',
      '--json',
    ]);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as LoadtestReport;
    expect(report.totals).toMatchObject({ iterations: 2, ok: 2 });
  });

  it('exits 1 when no iteration succeeds', async () => {
    const bad = join(dir, 'bad.csv');
    writeFileSync(bad, 'lt0@example.jp,wrong-password\n');
    const { code, report, stderr } = await loadtest([
      '--target',
      `127.0.0.1:${t.port('none')}`,
      '--tls',
      'none',
      '--accounts',
      bad,
      '--count',
      '2',
      '--concurrency',
      '1',
    ]);
    expect(code).toBe(1);
    expect(report.errors).toEqual({ auth: 2 });
    expect(stderr).toContain('no iteration succeeded');
  });

  it('refuses a target that is not loopback with exit 2, unless --allow-remote', async () => {
    const r = await runMailgate([
      'loadtest',
      '--target',
      '192.0.2.1:993',
      '--accounts',
      goodAccounts,
      '--duration',
      '1s',
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('not loopback');
    expect(r.stderr).toContain('--allow-remote');
  });

  it('refuses bad arguments with exit 2 before connecting', async () => {
    for (const args of [
      ['--source-mix', 'JP:95,MARS:5'],
      ['--duration', 'forever'],
      ['--proxy', 'v2'],
      ['--concurrency', '0'],
      ['--scenario', 'idle', '--count', '5'],
      ['--rate', 'fast'],
    ]) {
      const r = await runMailgate([
        'loadtest',
        '--target',
        `127.0.0.1:${t.port('none')}`,
        '--tls',
        'none',
        '--accounts',
        goodAccounts,
        ...args,
      ]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout, args.join(' ')).toBe('');
    }
  });
});
