// Two `bin/mailgate serve` processes on one Redis: an operator's change through the CLI reaches
// both at once (within one second, without restart).

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/devenv/ports.js';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';
import { encodeProxyV1 } from '../../src/net/proxy-protocol.js';
import { BIN, ROOT } from '../support/cli.js';
import { LOAD_BALANCER_IP } from '../support/gateway.js';
import { RawClient } from '../support/raw-client.js';

const run = promisify(execFile);
const ABROAD = '8.8.8.8';

let redis: RedisServer;
let dovecot: DovecotServer;
let dir: string;
let configs: string[] = [];
const ports: number[] = [];
const gateways: ChildProcess[] = [];

function mailgate(...args: string[]) {
  return run(process.execPath, [BIN, ...args], { cwd: ROOT });
}

async function login(port: number): Promise<string> {
  const prefix = encodeProxyV1({
    command: 'proxy',
    family: 'tcp4',
    sourceAddress: ABROAD,
    sourcePort: 50000,
    destinationAddress: '127.0.0.1',
    destinationPort: 143,
  });
  const c = await RawClient.connect(port, { prefix, localAddress: LOAD_BALANCER_IP });
  try {
    await c.waitFor(/^\* OK/);
    return await c.command('a', 'LOGIN "traveller@example.jp" "primary-pw"');
  } finally {
    c.close();
  }
}

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis(),
    startDovecot({ users: [{ user: 'traveller', password: 'store-secret' }] }),
  ]);
  dir = mkdtempSync(join(tmpdir(), 'mailgate-propagation-'));
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    ports.push(port);
    const file = join(dir, `gateway${i}.yaml`);
    writeFileSync(
      file,
      JSON.stringify({
        log: { level: 'warn' },
        redis: { url: redis.url, keyPrefix: 'prop:' },
        proxyProtocol: { trusted: [`${LOAD_BALANCER_IP}/32`] },
        imap: {
          listen: [{ host: '127.0.0.1', port, tls: 'none' }],
          upstream: {
            servers: [`127.0.0.1:${dovecot.port}`],
            login: { style: 'master', user: dovecot.masterUser, password: dovecot.masterPassword },
          },
        },
        geo: { domesticCountries: ['JP'] },
        passwords: { argon2: { memoryKiB: 64, iterations: 1, parallelism: 1 } },
      }),
    );
    configs.push(file);
    gateways.push(spawn(process.execPath, [BIN, 'serve', '--config', file], { stdio: 'ignore' }));
  }
  const add = spawn(process.execPath, [
    BIN,
    'account',
    'add',
    'traveller@example.jp',
    '--primary-password-stdin',
    '--upstream-user',
    'traveller',
    '--config',
    configs[0]!,
  ]);
  add.stdin.end('primary-pw');
  await new Promise((r) => add.once('close', r));
  for (const port of ports) {
    for (let i = 0; ; i++) {
      try {
        expect(await login(port)).toMatch(/^a OK/);
        break;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
});

afterAll(async () => {
  for (const g of gateways) g.kill('SIGTERM');
  await Promise.all(
    gateways.map((g) => new Promise((r) => (g.exitCode !== null ? r(null) : g.once('exit', r)))),
  );
  await Promise.all([dovecot?.stop(), redis?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
  configs = [];
});

describe('a rollout change reaches every gateway process', () => {
  it('both refuse within one second of `rollout overseas enforce`, and both let in again after `off`', async () => {
    for (const [phase, expected] of [
      ['enforce', /^a NO \[ALERT\] Access from abroad/],
      ['off', /^a OK/],
    ] as const) {
      await mailgate('rollout', 'overseas', phase, '--config', configs[0]!);
      const changed = Date.now();
      const seen: number[] = [];
      for (const port of ports) {
        for (;;) {
          if (expected.test(await login(port))) break;
          if (Date.now() - changed > 5_000) throw new Error(`gateway on ${port} never saw ${phase}`);
        }
        seen.push(Date.now() - changed);
      }
      expect(Math.max(...seen)).toBeLessThan(1_000);
    }
  });
});
