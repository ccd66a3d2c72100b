import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { operatorServiceOn } from '../admin/service.js';
import { loadConfig } from '../config/load.js';
import type { LoadtestAccount } from '../loadtest/accounts.js';
import type { LoadtestReport } from '../loadtest/report.js';
import { runLoadtest } from '../loadtest/run.js';
import { createLogger } from '../observability/logger.js';
import { freePort } from './ports.js';
import { startDovecot, startRedis } from './servers.js';

/**
 * scripts/login-cpu: what a login costs the gateway in CPU, with the credential cache warm and
 * with it off (passwords.cache.ttlMs 0), with one worker and one per core. The driver is
 * runLoadtest() (the login scenario of bin/mailgate loadtest: connect, LOGIN, SELECT, LOGOUT)
 * in this process, on loopback, plain front; the gateway runs as its own process tree
 * (bin/mailgate serve) with production argon2id parameters and info logging. CPU comes from
 * /proc (utime + stime of the gateway's supervisor and workers, and of Dovecot's processes),
 * read before and after each run; the driver's own CPU from process.cpuUsage(). Dovecot direct
 * (the same scenario straight to the store) is the reference.
 *
 * ACCOUNTS, CONCURRENCY, RUN_SECONDS and RUNS (medians over runs) change the run.
 */

const BIN = resolve(import.meta.dirname, '../../bin/mailgate');
const ACCOUNTS = Number(process.env.ACCOUNTS ?? 100);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 16);
const SECONDS = Number(process.env.RUN_SECONDS ?? 10);
const RUNS = Number(process.env.RUNS ?? 1);
const TICK_MS = 1000 / 100; // CLK_TCK is 100 on Linux

/** utime + stime of a process and all its descendants, in ms. */
function treeCpuMs(root: number): number {
  const parents = new Map<number, number>();
  const cpu = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parents.set(Number(name), Number(fields[1]));
      cpu.set(Number(name), (Number(fields[11]) + Number(fields[12])) * TICK_MS);
    } catch {
      // gone meanwhile
    }
  }
  let total = 0;
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop()!;
    total += cpu.get(pid) ?? 0;
    for (const [child, parent] of parents) if (parent === pid) stack.push(child);
  }
  return total;
}

interface Row {
  target: string;
  workers: string;
  cache: string;
  /** Share of the measured logins answered from the credential cache. */
  hitRatio: number | null;
  report: LoadtestReport;
  gatewayMs: number;
  dovecotMs: number;
  driverMs: number;
}

async function measure(
  port: number,
  accounts: LoadtestAccount[],
  pids: { gateway: number | null; dovecot: number },
): Promise<Omit<Row, 'target' | 'workers' | 'cache' | 'hitRatio'>> {
  const g0 = pids.gateway ? treeCpuMs(pids.gateway) : 0;
  const d0 = treeCpuMs(pids.dovecot);
  const c0 = process.cpuUsage();
  const report = await runLoadtest({
    scenario: 'login',
    target: { host: '127.0.0.1', port, tls: 'none', insecure: true },
    accounts,
    concurrency: CONCURRENCY,
    ratePerSec: null,
    durationMs: SECONDS * 1000,
    count: null,
    rampUpMs: 0,
    timeoutMs: 30_000,
    proxy: null,
    messageBytes: 0,
    seed: 1,
    allowRemote: false,
  });
  const c1 = process.cpuUsage(c0);
  return {
    report,
    gatewayMs: pids.gateway ? treeCpuMs(pids.gateway) - g0 : 0,
    dovecotMs: treeCpuMs(pids.dovecot) - d0,
    driverMs: (c1.user + c1.system) / 1000,
  };
}

/** The gateway's credential cache counters, from /metrics (summed over its workers). */
async function cacheLookups(adminPort: number): Promise<{ hit: number; miss: number }> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const value = (result: string) =>
    Number(
      new RegExp(`^mailgate_credential_cache_lookups_total\\{result="${result}"\\} (\\S+)$`, 'm').exec(
        text,
      )?.[1] ?? 0,
    );
  return { hit: value('hit'), miss: value('miss') };
}

async function waitForLogin(port: number, account: LoadtestAccount): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const r = await runLoadtest({
      scenario: 'login',
      target: { host: '127.0.0.1', port, tls: 'none', insecure: true },
      accounts: [account],
      concurrency: 1,
      ratePerSec: null,
      durationMs: null,
      count: 1,
      rampUpMs: 0,
      timeoutMs: 5_000,
      proxy: null,
      messageBytes: 0,
      seed: 1,
      allowRemote: false,
    }).catch(() => null);
    if (r?.totals.ok === 1) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no login through port ${port}`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mailgate-login-cpu-'));
  const redis = await startRedis({ appendOnly: false });
  const dovecot = await startDovecot({ users: [{ user: 'bench', password: 'direct-password' }] });
  const argon2 = { memoryKiB: 19456, iterations: 2, parallelism: 1 }; // production defaults
  const rows: Row[] = [];
  const gateways: ChildProcess[] = [];
  try {
    const base = {
      log: { level: 'info' },
      redis: { url: redis.url },
      geo: { domesticCountries: ['JP'], overrides: [{ cidr: '127.0.0.0/8', country: 'JP' }] },
      passwords: { argon2 },
      imap: {
        listen: [{ host: '127.0.0.1', port: 0, tls: 'none' }],
        upstream: {
          servers: [`127.0.0.1:${dovecot.port}`],
          login: { style: 'master', user: dovecot.masterUser, password: dovecot.masterPassword },
        },
        limits: { maxConnectionsPerIp: 10_000 },
      },
    };
    const seedConfig = join(dir, 'seed.yaml');
    writeFileSync(seedConfig, JSON.stringify(base));
    const client = new Redis(redis.url);
    const ops = operatorServiceOn(client, loadConfig(seedConfig), {
      log: createLogger('silent'),
      actor: 'bench',
    });
    const accounts: LoadtestAccount[] = [];
    process.stderr.write(`login-cpu: creating ${ACCOUNTS} accounts with IMAP-only passwords (argon2id)...\n`);
    for (let i = 0; i < ACCOUNTS; i++) {
      const login = `bench${i}@example.jp`;
      await ops.addAccount({ login, primaryPassword: `unused-primary-${i}`, upstreamUser: 'bench' });
      const { password } = await ops.issueImapPassword(login, { ifAbsent: false });
      accounts.push({ login, password: password! });
    }
    client.disconnect();

    for (let run = 0; run < RUNS; run++) {
      rows.push({
        target: 'Dovecot direct',
        workers: '-',
        cache: '-',
        hitRatio: null,
        ...(await measure(dovecot.port, [{ login: 'bench', password: 'direct-password' }], {
          gateway: null,
          dovecot: dovecot.pid,
        })),
      });
      for (const workers of [1, 2]) {
        for (const cache of ['off', 'warm'] as const) {
          const port = await freePort();
          const adminPort = await freePort();
          const file = join(dir, `gw-${workers}-${cache}.yaml`);
          writeFileSync(
            file,
            JSON.stringify({
              ...base,
              imap: { ...base.imap, listen: [{ host: '127.0.0.1', port, tls: 'none' }] },
              passwords: { argon2, ...(cache === 'off' ? { cache: { ttlMs: 0 } } : {}) },
              admin: {
                listen: { host: '127.0.0.1', port: adminPort },
                token: 'login-cpu-admin-token-0123456789',
              },
            }),
          );
          const gw = spawn(process.execPath, [BIN, 'serve', '--config', file, '--workers', String(workers)], {
            stdio: ['ignore', 'ignore', 'inherit'],
          });
          gateways.push(gw);
          await waitForLogin(port, accounts[0]!);
          // Warm: every credential verified once by every worker (each has its own cache)
          // before the measured run: passes over all accounts until one misses no more than 1%.
          for (let pass = 0; cache === 'warm' && pass < 10; pass++) {
            const before = await cacheLookups(adminPort);
            await runLoadtest({
              scenario: 'login',
              target: { host: '127.0.0.1', port, tls: 'none', insecure: true },
              accounts,
              concurrency: 4,
              ratePerSec: null,
              durationMs: null,
              count: accounts.length,
              rampUpMs: 0,
              timeoutMs: 30_000,
              proxy: null,
              messageBytes: 0,
              seed: 1,
              allowRemote: false,
            });
            const after = await cacheLookups(adminPort);
            if (after.miss - before.miss <= accounts.length / 100) break;
          }
          const before = await cacheLookups(adminPort);
          const measured = await measure(port, accounts, { gateway: gw.pid!, dovecot: dovecot.pid });
          const after = await cacheLookups(adminPort);
          const lookups = after.hit - before.hit + (after.miss - before.miss);
          rows.push({
            target: 'mailgate -> Dovecot',
            workers: String(workers),
            cache,
            hitRatio: lookups > 0 ? (after.hit - before.hit) / lookups : null,
            ...measured,
          });
          gw.kill('SIGTERM');
          await new Promise((r) => (gw.exitCode !== null ? r(null) : gw.once('exit', r)));
        }
      }
    }

    const keys = [...new Set(rows.map((r) => `${r.target}|${r.workers}|${r.cache}`))];
    const lines = [
      `Login scenario (connect, LOGIN, SELECT, LOGOUT), ${CONCURRENCY} sessions, ${SECONDS} s per run, ${RUNS} run(s) (medians), ` +
        `loopback, plain front, ${ACCOUNTS} accounts; argon2id m=${argon2.memoryKiB} t=${argon2.iterations} p=${argon2.parallelism}`,
      '',
      '| target | workers | credential cache | cache hits | logins/s | gateway CPU-ms/login | Dovecot CPU-ms/login | driver CPU-ms/login | login p50 ms | login p99 ms | errors |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ];
    for (const key of keys) {
      const rs = rows.filter((r) => `${r.target}|${r.workers}|${r.cache}` === key);
      const per = (f: (r: Row) => number) =>
        median(rs.map((r) => f(r) / Math.max(1, r.report.totals.logins)));
      const first = rs[0]!;
      lines.push(
        `| ${first.target} | ${first.workers} | ${first.cache} | ${first.hitRatio === null ? '-' : `${(median(rs.map((r) => r.hitRatio ?? 0)) * 100).toFixed(1)}%`} | ${median(rs.map((r) => r.report.rates.loginsPerSec)).toFixed(0)} | ` +
          `${first.target.startsWith('Dovecot') ? '-' : per((r) => r.gatewayMs).toFixed(2)} | ${per((r) => r.dovecotMs).toFixed(2)} | ` +
          `${per((r) => r.driverMs).toFixed(2)} | ${median(rs.map((r) => r.report.latency.login?.p50 ?? 0)).toFixed(2)} | ` +
          `${median(rs.map((r) => r.report.latency.login?.p99 ?? 0)).toFixed(2)} | ${median(rs.map((r) => r.report.totals.errors))} |`,
      );
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    for (const gw of gateways) if (gw.exitCode === null) gw.kill('SIGKILL');
    await Promise.allSettled([dovecot.stop(), redis.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`login-cpu: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
