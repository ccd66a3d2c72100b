import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  type BenchFigures,
  checkTargets,
  type FetchCell,
  type IdleCell,
  type LoginCell,
  renderBench,
} from '../../src/devenv/bench-report.js';
import { median, processTree, treeCpuMs, treePssKiB } from '../../src/devenv/measure.js';

const peers: BenchFigures['peers'] = [
  { id: 'direct', group: 'direct', auth: 'cheap', label: 'Dovecot direct' },
  { id: 'mg-argon2', group: 'mailgate', auth: 'argon2', label: 'mailgate' },
  { id: 'mg-cache', group: 'mailgate', auth: 'cheap', label: 'mailgate (credential cache warm)' },
  { id: 'ngx-argon2', group: 'nginx', auth: 'argon2', label: 'nginx mail proxy' },
  { id: 'ngx', group: 'nginx', auth: 'cheap', label: 'nginx mail proxy' },
  { id: 'ngx-64k', group: 'nginx', auth: 'cheap', label: 'nginx mail proxy, proxy_buffer 64k' },
];

const login = (peer: string, concurrency: number, cpu: number, p99: number, round = 1): LoginCell => ({
  peer,
  front: 'none',
  concurrency,
  round,
  logins: 100,
  loginsPerSec: 100 / cpu,
  p50: p99 / 2,
  p99,
  cpuMsPerLogin: cpu,
  errors: 0,
});
const fetchCell = (peer: string, mbPerSec: number, cpuMsPerMb: number): FetchCell => ({
  peer,
  front: 'none',
  mbPerSec,
  cpuMsPerMb,
  errors: 0,
});
const idle = (peer: string, sessions: number, kib: number): IdleCell => ({
  peer,
  front: 'none',
  sessions,
  established: sessions,
  kibPerSession: kib,
  errors: 0,
});

function figures(): BenchFigures {
  return {
    settings: {
      cores: 2,
      accounts: 10,
      mailboxes: 1,
      messages: 2,
      messageKiB: 20,
      repeats: 3,
      runSeconds: 2,
    },
    peers,
    login: [
      login('direct', 64, 1.0, 20),
      login('mg-argon2', 64, 30, 900),
      login('ngx-argon2', 64, 20, 800),
      // Three rounds for mailgate's cache and nginx: the medians are 2.0 and 1.0.
      login('mg-cache', 64, 2.0, 30, 1),
      login('mg-cache', 64, 9.0, 50, 2),
      login('mg-cache', 64, 1.5, 10, 3),
      login('ngx', 64, 1.0, 40, 1),
      login('ngx', 64, 0.5, 40, 2),
      login('ngx', 64, 4.0, 40, 3),
    ],
    fetch: [
      fetchCell('direct', 200, 1),
      fetchCell('mg-cache', 190, 1.1),
      fetchCell('ngx', 2, 5),
      fetchCell('ngx-64k', 150, 1.0),
    ],
    idle: [idle('direct', 1000, 500), idle('mg-cache', 1000, 14), idle('ngx', 1000, 10)],
    elapsedSeconds: 1,
  };
}

describe('bench report', () => {
  it('takes medians over rounds and marks each target met or missed against the right peer', () => {
    const checks = Object.fromEntries(checkTargets(figures()).map((c) => [c.target, c]));
    expect(checks['CPU-ms per login, warm credentials, c=64']).toMatchObject({
      mailgate: 2.0,
      reference: 1.0,
      met: false,
    });
    expect(checks['LOGIN p99 ms at c=64, warm credentials']).toMatchObject({
      mailgate: 30,
      reference: 40,
      met: true,
    });
    // Against both nginx buffer sizes: met against the stalled 4k one, missed against 64k.
    expect(checks['CPU-ms per MB fetched (nginx with proxy_buffer 4k)']).toMatchObject({ met: true });
    expect(checks['CPU-ms per MB fetched (nginx with proxy_buffer 64k)']).toMatchObject({
      mailgate: 1.1,
      reference: 1.0,
      met: false,
    });
    expect(checks['FETCH MB/s']).toMatchObject({ mailgate: 190, reference: 200, met: true });
    expect(checks['KiB per idle session, 1000 sessions']).toMatchObject({ met: true });
  });

  it('prints each figure with its ratios to nginx (same auth) and to direct Dovecot', () => {
    const md = renderBench(figures());
    // mailgate with argon2 on every login is compared with nginx's argon2 responder: 30/20, 30/1.
    expect(md).toContain(
      '| mailgate | argon2id every login | 64 | 3 (0.67×, 0.03×) | 450 | 900 (1.13×, 45.00×) | 30.0 (1.50×, 30.00×) | 0 |',
    );
    // The warm cache is compared with nginx's cheap auth: median 2.0 over median 1.0.
    expect(md).toContain('| 2.00 (2.00×, 2.00×) |');
    expect(md).toContain('| KiB per idle session, 1000 sessions | 14.0 | 10.0 | ≤ 1.5 × nginx | met |');
    expect(md).toContain('| CPU-ms per login, warm credentials, c=64 | 2.00 | 1.00 | ≤ nginx | **missed** |');
    expect(md).not.toContain('NaN');
  });

  it('leaves out what was not measured', () => {
    const md = renderBench({ ...figures(), fetch: [], idle: [] });
    expect(md).toContain('### Logins, plain front');
    expect(md).not.toContain('### FETCH');
    expect(md).not.toContain('### Idle');
  });
});

/** Node code that burns `ms` of user CPU time. */
const SPIN = (ms: number) => `while (process.cpuUsage().user < ${ms * 1000});`;

describe('process measurements', () => {
  it('counts the CPU of a child process and its memory', async () => {
    // Spins until it has used 400 ms of CPU (however busy the machine), then says so and waits.
    const child = spawn(process.execPath, [
      '-e',
      `${SPIN(400)}; console.log('spun'); setTimeout(() => {}, 10000)`,
    ]);
    try {
      await new Promise((r) => child.stdout.once('data', r));
      expect(processTree([process.pid])).toContain(child.pid);
      const mine = treeCpuMs([process.pid]);
      const its = treeCpuMs([child.pid!]);
      expect(its).toBeGreaterThan(300);
      expect(mine).toBeGreaterThanOrEqual(its);
      expect(treePssKiB([child.pid!])).toBeGreaterThan(1_000);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('keeps the CPU of a child that has exited and been reaped', async () => {
    const before = treeCpuMs([process.pid]);
    const child = spawn(process.execPath, ['-e', SPIN(300)]);
    await new Promise((r) => child.once('exit', r));
    expect(treeCpuMs([process.pid]) - before).toBeGreaterThan(200);
  });

  it('takes the median', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([])).toBeNaN();
  });
});
