// `bin/mailgate notify worker` as a process, killed with SIGKILL in the middle of a batch and
// started again: every notice reaches the SMS gateway, and each idempotency key is accepted
// exactly once (the gateway honours the key; the worker only ever re-sends under the same key).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { type RedisServer, startRedis } from '../../src/devenv/servers.js';
import { type NoticeSpec, RedisOutbox } from '../../src/notify/outbox.js';
import { createLogger } from '../../src/observability/logger.js';
import { BIN, ROOT, runMailgate } from '../support/cli.js';
import { FakeSmsGateway } from '../support/sms-gateway.js';

const NOTICES = 300;
const PREFIX = 'nw:';

let redis: RedisServer;
let sms: FakeSmsGateway;
let conn: Redis;
let dir: string;
let configFile: string;
let outbox: RedisOutbox;
const children: ChildProcess[] = [];

function startWorker(): ChildProcess {
  const child = spawn(process.execPath, [BIN, 'notify', 'worker', '--config', configFile], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(child);
  return child;
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
}

beforeAll(async () => {
  [redis, sms] = await Promise.all([startRedis(), FakeSmsGateway.start()]);
  conn = new Redis(redis.url);
  dir = mkdtempSync(join(tmpdir(), 'mailgate-notify-worker-'));
  const raw = {
    log: { level: 'warn' },
    redis: { url: redis.url, keyPrefix: PREFIX },
    geo: { domesticCountries: ['JP'] },
    notify: {
      webhook: { url: sms.url, timeoutMs: 1_000 },
      worker: { concurrency: 8, maxAttempts: 5, backoff: { baseMs: 50, maxMs: 200 }, claimIdleMs: 1_500 },
      dailyCap: 0,
      dedupeWindowMs: 0,
    },
  };
  configFile = join(dir, 'mailgate.yaml');
  writeFileSync(configFile, JSON.stringify(raw)); // JSON is YAML
  const config = parseConfig(raw);
  outbox = new RedisOutbox({
    redis: conn,
    prefix: PREFIX,
    config: config.notify,
    log: createLogger('silent'),
    clock: Date.now,
  });
  const specs: NoticeSpec[] = Array.from({ length: NOTICES }, (_, i) => ({
    template: 'login-notification',
    login: `user${i}@example.jp`,
    msisdn: `+8190${String(i).padStart(8, '0')}`,
    params: { at: Date.now(), protocol: 'imap', country: 'US', asn: 15169, org: 'Google LLC' },
  }));
  expect(new Set(await outbox.enqueueMany(specs))).toEqual(new Set(['queued']));
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  conn?.disconnect();
  await Promise.all([sms?.close(), redis?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('notify worker killed mid-batch', () => {
  it('delivers every notice exactly once per idempotency key after a SIGKILL and a restart', async () => {
    sms.delayMs = 25; // requests are in flight when the kill comes
    const first = startWorker();
    await sms.waitFor(() => sms.received.length >= 60, 15_000, 'the first worker delivering');
    first.kill('SIGKILL');
    expect((await exited(first)).signal).toBe('SIGKILL');
    const pending = (await conn.xpending(`${PREFIX}notify:outbox`, 'delivery')) as [number, ...unknown[]];
    expect(pending[0]).toBeGreaterThan(0); // handed to the dead worker, never acknowledged
    const deliveredByFirst = sms.sms.size;
    expect(deliveredByFirst).toBeLessThan(NOTICES);

    const second = startWorker();
    await sms.waitFor(() => sms.sms.size === NOTICES, 20_000, 'every notice delivered');
    const stream = `${PREFIX}notify:outbox`;
    for (let i = 0; i < 100 && (await conn.xlen(stream)) > 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(await conn.xlen(stream)).toBe(0);

    // Every notice reached the gateway; no key was accepted twice. Re-sent requests (the ones
    // in flight at the kill) came back with the same key and were recognised as duplicates.
    const accepted = sms.received.filter((r) => r.status === 200);
    expect(new Set(accepted.map((r) => r.payload.idempotencyKey)).size).toBe(NOTICES);
    expect(accepted.length).toBe(NOTICES + sms.duplicates);
    expect(sms.to('+819000000042')).toHaveLength(1);

    const status = await runMailgate(['notify', 'status', '--json', '--config', configFile]);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ ready: 0, inDelivery: 0, deferred: 0, deadLetters: 0 });
    const tail = await runMailgate(['notify', 'tail', '-n', '3', '--config', configFile]);
    expect(tail.stdout.trim().split('\n')).toHaveLength(3);
    expect(tail.stdout).toMatch(/ sent +login-notification +user\d+@example\.jp \+8190\*\*\*\*\d{4} /);
    expect(tail.stdout).not.toMatch(/\+8190\d{8}/); // numbers masked

    // A notice the SMS gateway refuses outright: dead-lettered, listed, retried by the CLI.
    sms.failAlways(400);
    await outbox.enqueue({
      template: 'connection-error',
      login: 'refused@example.jp',
      msisdn: '+819099999999',
      params: { at: Date.now(), protocol: 'smtp' },
    });
    let dead: Array<{ id: string; msisdn: string; error: string }> = [];
    for (let i = 0; i < 100 && dead.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      dead = JSON.parse(
        (await runMailgate(['notify', 'dlq', 'list', '--json', '--config', configFile])).stdout,
      );
    }
    expect(dead).toMatchObject([{ msisdn: '+8190****9999', error: 'HTTP 400' }]);
    sms.failAlways(null);
    const retry = await runMailgate(['notify', 'dlq', 'retry', dead[0]!.id, '--config', configFile]);
    expect(retry).toMatchObject({ code: 0, stdout: '1 notice(s) back in the outbox\n' });
    await sms.waitFor(() => sms.to('+819099999999').length === 1, 5_000, 'the retried dead letter');
    expect((await runMailgate(['notify', 'dlq', 'retry', '--config', configFile])).code).toBe(2);

    second.kill('SIGTERM');
    expect(await exited(second)).toEqual({ code: 0, signal: null });
  });
});
