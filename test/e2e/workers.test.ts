// `bin/mailgate serve` with a supervisor and two workers on one port (README, Workers): logins are
// served by both, a worker killed with SIGKILL is restarted while logins keep succeeding,
// SIGHUP reaches every worker, /metrics sums them, and SIGTERM stops everything.

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { operatorServiceOn } from '../../src/admin/service.js';
import { loadConfig } from '../../src/config/load.js';
import { freePort } from '../../src/devenv/ports.js';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';
import { createLogger } from '../../src/observability/logger.js';
import { BIN, ROOT, runMailgate } from '../support/cli.js';
import { TEST_ARGON2 } from '../support/gateway.js';
import { quote, RawClient } from '../support/raw-client.js';

const TOKEN = 'workers-test-token-0123456789';
const PASSWORD = 'primary-password-w';

let redis: RedisServer;
let dovecot: DovecotServer;
let dir: string;
let configFile: string;
let imapPort: number;
let adminPort: number;

/** A running `serve` and the JSON log lines it (and its workers) wrote on stdout. */
interface Served {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
  waitFor(
    pred: (l: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stderr(): string;
}

function startServe(args: string[]): Served {
  const child = spawn(process.execPath, [BIN, 'serve', '--config', configFile, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const lines: Array<Record<string, unknown>> = [];
  let buf = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      // Every line must be whole JSON: workers share stdout and must never interleave.
      lines.push(JSON.parse(line) as Record<string, unknown>);
    }
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    lines,
    exited,
    stderr: () => stderr,
    async waitFor(pred, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = lines.find(pred);
        if (hit) return hit;
        if (Date.now() > deadline) throw new Error(`no log line matched within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
  };
}

async function login(): Promise<string> {
  const c = await RawClient.connect(imapPort);
  try {
    await c.waitFor(/^\* OK/);
    return await c.command('a', `LOGIN ${quote('mika@example.jp')} ${quote(PASSWORD)}`);
  } finally {
    c.close();
  }
}

/** Single-process serve buffers its log (4 KiB); readiness is a login that works. */
async function untilLoginWorks(): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      if (/^a OK/.test(await login())) return;
    } catch (err) {
      if (i > 150) throw err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const alive = (pid: number) => {
  try {
    // A zombie still answers kill(0); its state in /proc says it is gone.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis({ appendOnly: false }),
    startDovecot({ users: [{ user: 'mika', password: 'store-secret' }] }),
  ]);
  dir = mkdtempSync(join(tmpdir(), 'mailgate-workers-'));
  [imapPort, adminPort] = [await freePort(), await freePort()];
  configFile = join(dir, 'mailgate.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      log: { level: 'info' },
      workers: 2,
      redis: { url: redis.url, keyPrefix: 'wk:' },
      imap: {
        listen: [{ host: '127.0.0.1', port: imapPort, tls: 'none' }],
        upstream: {
          servers: [`127.0.0.1:${dovecot.port}`],
          login: { style: 'master', user: dovecot.masterUser, password: dovecot.masterPassword },
        },
      },
      geo: { domesticCountries: ['JP'], overrides: [{ cidr: '127.0.0.0/8', country: 'JP' }] },
      passwords: { argon2: TEST_ARGON2 },
      admin: { listen: { host: '127.0.0.1', port: adminPort }, token: TOKEN },
    }),
  );
  const client = new Redis(redis.url);
  const ops = operatorServiceOn(client, loadConfig(configFile), {
    log: createLogger('silent'),
    actor: 'test',
  });
  await ops.addAccount({ login: 'mika@example.jp', primaryPassword: PASSWORD, upstreamUser: 'mika' });
  client.disconnect();
});

afterAll(async () => {
  await Promise.all([dovecot?.stop(), redis?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('serve with workers (supervisor)', () => {
  it('serves logins from two workers on one port, restarts a killed worker, and stops on SIGTERM', async () => {
    const served = startServe([]);
    try {
      await served.waitFor((l) => l.msg === 'all workers ready');
      const started = served.lines.filter((l) => l.msg === 'worker started');
      expect(started.map((l) => l.slot).sort()).toEqual([0, 1]);
      const workerPids = started.map((l) => l.worker as number);
      expect(new Set(workerPids).size).toBe(2);

      for (let i = 0; i < 12; i++) expect(await login()).toMatch(/^a OK/);
      // Round-robin: both workers answered, and none of it was the supervisor.
      const authPids = new Set(served.lines.filter((l) => l.event === 'auth').map((l) => l.pid));
      expect([...authPids].sort()).toEqual([...workerPids].sort());

      // The admin API runs in one worker; its /metrics counts the logins of both.
      const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      const allowed = metrics
        .split('\n')
        .filter((l) => l.startsWith('mailgate_auth_attempts_total{') && l.includes('result="allow"'))
        .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
      expect(allowed).toBe(12);
      expect(served.lines.filter((l) => l.event === 'listen' && l.protocol === 'admin')).toHaveLength(1);

      // SIGHUP is passed on: every worker reloads.
      served.child.kill('SIGHUP');
      for (const pid of workerPids) await served.waitFor((l) => l.event === 'reload' && l.pid === pid);

      // A worker killed outright is restarted; logins go on meanwhile.
      const victim = workerPids[0]!;
      process.kill(victim, 'SIGKILL');
      const exit = await served.waitFor((l) => l.msg === 'worker exited; restarting' && l.worker === victim);
      expect(exit.signal).toBe('SIGKILL');
      for (let i = 0; i < 6; i++) expect(await login()).toMatch(/^a OK/);
      const replacement = await served.waitFor(
        (l) => l.msg === 'worker ready' && l.slot === exit.slot && l.worker !== victim,
      );
      for (let i = 0; i < 6; i++) expect(await login()).toMatch(/^a OK/);
      const livePids = [workerPids[1]!, replacement.worker as number];

      served.child.kill('SIGTERM');
      expect(await served.exited).toBe(0);
      await served.waitFor((l) => l.msg === 'all workers stopped');
      for (const pid of livePids) expect(alive(pid)).toBe(false);
    } finally {
      if (served.child.exitCode === null) served.child.kill('SIGKILL');
    }
  });

  it('--workers 1 runs the gateway in the one process, as before', async () => {
    const served = startServe(['--workers', '1']);
    try {
      await untilLoginWorks();
      served.child.kill('SIGTERM');
      expect(await served.exited).toBe(0);
      const auth = await served.waitFor((l) => l.event === 'auth');
      expect(auth.pid).toBe(served.child.pid);
      expect(served.lines.some((l) => l.event === 'worker')).toBe(false);
    } finally {
      if (served.child.exitCode === null) served.child.kill('SIGKILL');
    }
  });

  it('a worker that cannot start stops the supervisor with exit 1 instead of restarting forever', async () => {
    // The port is taken by a gateway already running.
    const first = startServe(['--workers', '1']);
    try {
      await untilLoginWorks();
      const second = startServe(['--workers', '2']);
      expect(await second.exited).toBe(1);
      expect(second.lines.some((l) => l.msg === 'worker failed to start; stopping')).toBe(true);
      expect(second.stderr()).toContain('EADDRINUSE');
      expect(second.stderr()).toContain('mailgate: a worker failed to start');
    } finally {
      first.child.kill('SIGTERM');
      await first.exited;
    }
  });

  it('refuses a bad --workers value with exit 2', async () => {
    const r = await runMailgate(['serve', '--config', configFile, '--workers', 'many']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--workers must be');
  });
});
