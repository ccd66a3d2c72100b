import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { operatorServiceOn } from '../admin/service.js';
import { loadConfig } from '../config/load.js';
import type { LoadtestAccount } from '../loadtest/accounts.js';
import type { LoadtestReport } from '../loadtest/report.js';
import { runLoadtest } from '../loadtest/run.js';
import { createLogger } from '../observability/logger.js';
import { cacheLookups, loginRun, median, treeCpuMs, waitForLogin, warmCredentialCache } from './measure.js';
import { freePort } from './ports.js';
import { startDovecot, startRedis } from './servers.js';

/**
 * scripts/login-cpu: what a login costs the gateway in CPU, with the credential cache warm and
 * with it off (passwords.cache.ttlMs 0), with one worker and one per core. The driver is
 * runLoadtest() (the login scenario of bin/mailgate loadtest: connect, LOGIN, SELECT, LOGOUT)
 * in this process, on loopback, plain front; the gateway runs as its own process tree
 * (bin/mailgate serve) with production argon2id parameters and info logging. CPU comes from
 * /proc (measure.ts: the gateway's supervisor and workers, and Dovecot's processes),
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
  const g0 = pids.gateway ? treeCpuMs([pids.gateway]) : 0;
  const d0 = treeCpuMs([pids.dovecot]);
  const c0 = process.cpuUsage();
  const report = await runLoadtest(
    loginRun(port, accounts, { concurrency: CONCURRENCY, durationMs: SECONDS * 1000, count: null }),
  );
  const c1 = process.cpuUsage(c0);
  return {
    report,
    gatewayMs: pids.gateway ? treeCpuMs([pids.gateway]) - g0 : 0,
    dovecotMs: treeCpuMs([pids.dovecot]) - d0,
    driverMs: (c1.user + c1.system) / 1000,
  };
}

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
          if (cache === 'warm') await warmCredentialCache(port, adminPort, accounts);
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
