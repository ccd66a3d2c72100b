// The outbox and the delivery worker against a real Redis and a loopback HTTP server standing in
// for the SMS gateway: backoff, dead letters, quiet hours, dedupe and the daily cap.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { NotifyConfig } from '../../src/config/schema.js';
import { type RedisServer, startRedis } from '../../src/devenv/servers.js';
import { NotifyAdmin } from '../../src/notify/admin.js';
import { type NoticeSpec, RedisOutbox } from '../../src/notify/outbox.js';
import { DeliveryWorker } from '../../src/notify/worker.js';
import { createLogger } from '../../src/observability/logger.js';
import { LogCapture } from '../support/gateway.js';
import { FakeSmsGateway } from '../support/sms-gateway.js';

let redis: RedisServer;
let sms: FakeSmsGateway;
let conn: Redis;
const workers: DeliveryWorker[] = [];
const logs = new LogCapture();
const log = createLogger('debug', logs);

function notifyConfig(
  over: Record<string, unknown> = {},
): NotifyConfig & { webhook: NonNullable<NotifyConfig['webhook']> } {
  const config = parseConfig({
    redis: { url: redis.url },
    geo: { domesticCountries: ['JP'] },
    notify: {
      webhook: { url: sms.url, timeoutMs: 3_000 },
      worker: { concurrency: 4, maxAttempts: 3, backoff: { baseMs: 60, maxMs: 400 }, claimIdleMs: 5_000 },
      dailyCap: 0,
      dedupeWindowMs: 0,
      ...over,
    },
  });
  return config.notify as NotifyConfig & { webhook: NonNullable<NotifyConfig['webhook']> };
}

function setup(prefix: string, over: Record<string, unknown> = {}, clock: () => number = Date.now) {
  const config = notifyConfig(over);
  const outbox = new RedisOutbox({ redis: conn, prefix, config, log, clock });
  const worker = new DeliveryWorker({
    redis: conn,
    prefix,
    config,
    log,
    clock,
    blockMs: 50,
    housekeepingMs: 20,
  });
  workers.push(worker);
  return { outbox, worker, admin: new NotifyAdmin(conn, prefix) };
}

const notice = (login: string, over: Partial<NoticeSpec> = {}): NoticeSpec => ({
  template: 'connection-error',
  login,
  msisdn: '+819012345678',
  params: { at: Date.parse('2026-06-17T10:05Z'), protocol: 'imap', country: 'JP' },
  ...over,
});

beforeAll(async () => {
  [redis, sms] = await Promise.all([startRedis(), FakeSmsGateway.start()]);
  conn = new Redis(redis.url);
});

afterAll(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  conn?.disconnect();
  await Promise.all([sms?.close(), redis?.stop()]);
});

describe('delivery', () => {
  it('webhook down: retried with growing backoff under the same idempotency key, then delivered once', async () => {
    const { outbox, worker } = setup('d1:', {
      worker: { concurrency: 4, maxAttempts: 5, backoff: { baseMs: 60, maxMs: 400 }, claimIdleMs: 5_000 },
    });
    sms.failNext(3);
    expect(await outbox.enqueue(notice('down@example.jp'))).toBe('queued');
    worker.start();
    // Settled: the worker counts a notice once its acknowledgement is written, after the 200.
    await sms.waitFor(() => worker.stats.sent === 1, 5_000, 'delivery');
    const tries = sms.received.filter(
      (r) => r.payload.idempotencyKey === sms.to('+819012345678')[0]!.idempotencyKey,
    );
    expect(tries.map((r) => r.status)).toEqual([503, 503, 503, 200]);
    const gaps = tries.slice(1).map((r, i) => r.at - tries[i]!.at);
    // 60, 120, 240 ms ±20%, plus the worker's 20 ms pacing.
    expect(gaps[0]).toBeGreaterThanOrEqual(45);
    expect(gaps[1]).toBeGreaterThanOrEqual(95);
    expect(gaps[2]).toBeGreaterThanOrEqual(190);
    expect(gaps[2]!).toBeGreaterThan(gaps[0]!);
    expect(worker.stats).toMatchObject({ sent: 1, retried: 3, dead: 0 });
    await worker.stop();
  });

  it('a notice that keeps failing goes to the dead-letter stream; a 400 goes at once; dlq retry delivers both', async () => {
    const { outbox, worker, admin } = setup('d2:');
    sms.failAlways(503);
    await outbox.enqueue(notice('flaky@example.jp', { msisdn: '+819011112222' }));
    worker.start();
    await sms.waitFor(() => worker.stats.dead === 1, 5_000, 'dead letter');
    expect(sms.received.filter((r) => r.payload.msisdn === '+819011112222')).toHaveLength(3); // maxAttempts
    sms.failAlways(400);
    await outbox.enqueue(notice('refused@example.jp', { msisdn: '+819033334444' }));
    await sms.waitFor(() => worker.stats.dead === 2, 5_000, 'second dead letter');
    expect(sms.received.filter((r) => r.payload.msisdn === '+819033334444')).toHaveLength(1);

    const dead = await admin.dlqList(10);
    expect(dead.map((d) => [d.login, d.msisdn, d.attempts, d.error])).toEqual([
      ['flaky@example.jp', '+8190****2222', 3, 'HTTP 503'],
      ['refused@example.jp', '+8190****4444', 1, 'HTTP 400'],
    ]);
    expect((await admin.status()).deadLetters).toBe(2);

    sms.failAlways(null);
    expect((await admin.dlqRetry([])).retried).toHaveLength(2);
    await sms.waitFor(
      () => sms.to('+819011112222').length + sms.to('+819033334444').length === 2,
      5_000,
      'redelivery',
    );
    expect(sms.to('+819011112222')[0]!.idempotencyKey).toBe(dead[0]!.key);
    expect(await admin.dlqList(10)).toEqual([]);
    await worker.stop();
  });

  it('quiet hours: a notice is deferred to their end in the subscriber time zone, not dropped', async () => {
    let now = Date.parse('2026-06-17T23:30:00+09:00');
    const { outbox, worker, admin } = setup(
      'd3:',
      { quietHours: { start: '22:00', end: '08:00' } },
      () => now,
    );
    const spec = notice('night@example.jp', { msisdn: '+819055556666' });
    expect(await outbox.enqueue(spec)).toBe('deferred');
    // A London subscriber's 15:30 is not quiet.
    expect(
      await outbox.enqueue({ ...spec, login: 'uk@example.jp', msisdn: '+447700900123', tz: 'Europe/London' }),
    ).toBe('queued');
    worker.start();
    await sms.waitFor(() => sms.to('+447700900123').length === 1, 5_000, 'the London notice');
    const status = await admin.status();
    expect(status.deferred).toBe(1);
    expect(status.nextDeferredDue).toBe(new Date(Date.parse('2026-06-18T08:00:00+09:00')).toISOString());
    now = Date.parse('2026-06-18T07:59:00+09:00');
    await new Promise((r) => setTimeout(r, 200));
    expect(sms.to('+819055556666')).toEqual([]);
    now = Date.parse('2026-06-18T08:00:00+09:00');
    await sms.waitFor(() => worker.stats.sent === 2, 5_000, 'the deferred notice');
    expect(sms.to('+819055556666')[0]!.text).toContain('日時：2026年6月17日 19:05 JST'); // when it happened
    expect((await admin.tail(10)).map((e) => [e.event, e.msisdn])).toEqual([
      ['deferred', '+8190****6666'],
      ['queued', '+4477****0123'],
      ['sent', '+4477****0123'],
      ['sent', '+8190****6666'],
    ]);
    await worker.stop();
  });
});

describe('entries the worker cannot use', () => {
  it('an unreadable entry or an unknown template is dead-lettered, not retried forever', async () => {
    const { worker, admin } = setup('d5:');
    await conn.xadd('d5:notify:outbox', '*', 'notice', 'not json');
    const alien = {
      ...notice('alien@example.jp'),
      key: 'k-alien',
      tz: 'Asia/Tokyo',
      lang: 'ja',
      template: 'from-v9',
    };
    await conn.xadd('d5:notify:outbox', '*', 'notice', JSON.stringify({ ...alien, queuedAt: 0, attempt: 0 }));
    worker.start();
    await sms.waitFor(() => worker.stats.dead === 2, 5_000, 'two dead letters');
    const dead = await admin.dlqList(10);
    expect(dead.map((d) => d.error)).toEqual([
      expect.stringMatching(/^unreadable entry/),
      expect.stringMatching(/^cannot render: unexpected template/),
    ]);
    await worker.stop();
  });
});

describe('dedupe and the daily cap', () => {
  it('the same notice to the same account once per window; at most dailyCap a day', async () => {
    const { outbox } = setup('d4:', { dedupeWindowMs: 3_600_000, dailyCap: 2 });
    expect(await outbox.enqueue(notice('busy@example.jp'))).toBe('queued');
    expect(await outbox.enqueue(notice('busy@example.jp'))).toBe('duplicate');
    expect(await outbox.enqueue(notice('other@example.jp'))).toBe('queued'); // another account
    expect(await outbox.enqueue(notice('busy@example.jp', { template: 'overseas-restricted' }))).toBe(
      'queued',
    );
    expect(
      await outbox.enqueue(
        notice('busy@example.jp', {
          template: 'restriction-warning',
          params: { at: 0, restriction: 'overseas' },
        }),
      ),
    ).toBe('capped');
    expect(await outbox.enqueue(notice('nomsisdn@example.jp', { msisdn: null }))).toBe('no-msisdn');
    expect(await conn.xlen('d4:notify:outbox')).toBe(3);
  });
});
