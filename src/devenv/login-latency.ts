import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { operatorServiceOn } from '../admin/service.js';
import { loadConfig } from '../config/load.js';
import { createLogger } from '../observability/logger.js';
import { freePort } from './ports.js';
import { startDovecot, startRedis } from './servers.js';

/**
 * scripts/login-latency: LOGIN latency through the gateway against straight to Dovecot, on
 * loopback, plain front (no TLS) so the figures isolate the gateway. Each login: connect, read
 * the greeting, LOGIN, read the tagged reply, LOGOUT. The gateway runs as its own process
 * (bin/mailgate serve), as in production. Rounds alternate between targets so machine noise
 * hits both alike.
 */

const BIN = resolve(import.meta.dirname, '../../bin/mailgate');
const COUNT = Number(process.env.LOGINS ?? 200);

async function oneLogin(port: number, user: string, password: string): Promise<number> {
  const started = process.hrtime.bigint();
  await new Promise<void>((done, fail) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    let sent = false;
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      if (!sent && buf.includes('\r\n')) {
        sent = true;
        s.write(`a LOGIN "${user}" "${password}"\r\n`);
      }
      const m = /^a (OK|NO|BAD)/m.exec(buf);
      if (m) {
        if (m[1] !== 'OK')
          fail(new Error(`login refused: ${buf.split('\r\n').find((l) => l.startsWith('a '))}`));
        s.end('z LOGOUT\r\n');
        done();
      }
    });
    s.on('error', fail);
    setTimeout(() => fail(new Error('login timed out')), 10_000).unref();
  });
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mailgate-latency-'));
  const redis = await startRedis({ appendOnly: false });
  const dovecot = await startDovecot({ users: [{ user: 'bench', password: 'direct-password' }] });
  const argon2 = { memoryKiB: 19456, iterations: 2, parallelism: 1 }; // production defaults
  const port = await freePort();
  const configFile = join(dir, 'mailgate.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      log: { level: 'warn' },
      redis: { url: redis.url },
      imap: {
        listen: [{ host: '127.0.0.1', port, tls: 'none' }],
        upstream: {
          servers: [`127.0.0.1:${dovecot.port}`],
          login: { style: 'master', user: dovecot.masterUser, password: dovecot.masterPassword },
        },
      },
      geo: { domesticCountries: ['JP'], overrides: [{ cidr: '127.0.0.0/8', country: 'JP' }] },
      passwords: { argon2 },
    }),
  );
  const client = new Redis(redis.url);
  const ops = operatorServiceOn(client, loadConfig(configFile), {
    log: createLogger('silent'),
    actor: 'bench',
  });
  await ops.addAccount({ login: 'bench', primaryPassword: 'unused-primary' });
  const { password } = await ops.issueImapPassword('bench', { ifAbsent: false });
  client.disconnect();

  const gw = spawn(process.execPath, [BIN, 'serve', '--config', configFile], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    for (let i = 0; i < 100; i++) {
      try {
        await oneLogin(port, 'bench', password!);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const direct: number[] = [];
    const gateway: number[] = [];
    for (let i = 0; i < COUNT; i++) {
      direct.push(await oneLogin(dovecot.port, 'bench', 'direct-password'));
      gateway.push(await oneLogin(port, 'bench', password!));
    }
    const row = (name: string, xs: number[]) => {
      const s = [...xs].sort((a, b) => a - b);
      return `| ${name} | ${xs.length} | ${pct(s, 50).toFixed(2)} | ${pct(s, 95).toFixed(2)} | ${pct(s, 99).toFixed(2)} |`;
    };
    process.stdout.write(
      [
        `LOGIN latency, sequential, loopback, plain front; gateway verifies argon2id m=${argon2.memoryKiB} t=${argon2.iterations} p=${argon2.parallelism}`,
        '',
        '| target | logins | p50 ms | p95 ms | p99 ms |',
        '| --- | --- | --- | --- | --- |',
        row('Dovecot direct', direct),
        row('mailgate -> Dovecot', gateway),
        '',
      ].join('\n'),
    );
  } finally {
    gw.kill('SIGTERM');
    await new Promise((r) => gw.once('exit', r));
    await Promise.allSettled([dovecot.stop(), redis.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`login-latency: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
