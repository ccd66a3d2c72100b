import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { parseConfig } from '../config/load.js';
import { loadBundledAsnTable } from '../geo/asn.js';
import { parseIp } from '../net/cidr.js';
import { type NoticeSpec, RedisOutbox } from '../notify/outbox.js';
import { DeliveryWorker } from '../notify/worker.js';
import { createLogger } from '../observability/logger.js';
import { startRedis } from './servers.js';

/**
 * scripts/notify-bench: the figures of the notifications work.
 * 1. The bundled ASN table: wall time to load (CSV parsed in a worker thread), memory on this
 *    thread afterwards (heap, ArrayBuffers, RSS), the longest event-loop stall while it loads
 *    (what a login would have waited), and lookups per second.
 * 2. The delivery worker: NOTICES notices (default 20,000) queued into a private local Redis,
 *    then delivered by one in-process DeliveryWorker to a local webhook that answers 200 at
 *    once, at each concurrency in CONCURRENCY (default "8,32"); notices per second.
 */

const NOTICES = Number(process.env.NOTICES ?? 20_000);
const CONCURRENCY = (process.env.CONCURRENCY ?? '8,32').split(',').map(Number);
const MB = 1024 * 1024;

function mem() {
  const m = process.memoryUsage();
  return { heap: m.heapUsed, arrayBuffers: m.arrayBuffers, external: m.external, rss: m.rss };
}

async function asnFigures(): Promise<void> {
  globalThis.gc?.();
  const before = mem();
  const stall = monitorEventLoopDelay({ resolution: 1 });
  stall.enable();
  const started = performance.now();
  const { table } = await loadBundledAsnTable();
  const ms = performance.now() - started;
  stall.disable();
  globalThis.gc?.();
  const after = mem();
  const d = (k: keyof typeof before) => ((after[k] - before[k]) / MB).toFixed(1);
  console.log(
    `ASN table: ${table.ranges.v4} IPv4 + ${table.ranges.v6} IPv6 ranges, ${table.ranges.providers} ASes; ` +
      `loaded in ${Math.round(ms)} ms (worker thread)`,
  );
  console.log(
    `  memory: table arrays ${(table.bytes / MB).toFixed(1)} MB; on this thread heap +${d('heap')} MB, ` +
      `ArrayBuffers +${d('arrayBuffers')} MB, RSS +${d('rss')} MB`,
  );
  console.log(`  longest event-loop stall while loading: ${(stall.max / 1e6).toFixed(1)} ms`);
  const addrs = Array.from({ length: 200_000 }, (_, i) =>
    parseIp(
      i % 4 === 3
        ? `2001:${(i * 7) % 0xffff}:${i % 0xffff}::1`
        : `${1 + ((i * 7919) % 223)}.${i % 256}.${(i * 31) % 256}.${i % 251}`,
    ),
  ).filter((a) => a !== null);
  let hits = 0;
  const t0 = performance.now();
  for (let r = 0; r < 5; r++) for (const a of addrs) if (table.lookup(a)) hits++;
  const perS = (addrs.length * 5) / ((performance.now() - t0) / 1000);
  console.log(
    `  lookups: ${(perS / 1e6).toFixed(2)} M/s (${Math.round((hits / addrs.length / 5) * 100)}% found)`,
  );
}

async function workerFigures(): Promise<void> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"accepted":true}'));
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/sms`;
  const redis = await startRedis();
  const client = new Redis(redis.url);
  const log = createLogger('silent');
  try {
    for (const concurrency of CONCURRENCY) {
      const prefix = `bench${concurrency}:`;
      const notifyConfig = parseConfig({
        redis: { url: redis.url },
        geo: { domesticCountries: ['JP'] },
        notify: { webhook: { url }, worker: { concurrency }, dailyCap: 0, dedupeWindowMs: 0 },
      }).notify;
      const outbox = new RedisOutbox({ redis: client, prefix, config: notifyConfig, log, clock: Date.now });
      const specs: NoticeSpec[] = Array.from({ length: NOTICES }, (_, i) => ({
        template: 'login-notification',
        login: `user${i}@example.jp`,
        msisdn: `+8190${String(i).padStart(8, '0')}`,
        params: { at: Date.now(), protocol: 'imap', country: 'US', asn: 15169, org: 'Google LLC' },
      }));
      let t0 = performance.now();
      await outbox.enqueueMany(specs);
      const enqueueMs = performance.now() - t0;
      const worker = new DeliveryWorker({
        redis: client,
        prefix,
        config: { ...notifyConfig, webhook: notifyConfig.webhook! },
        log,
      });
      t0 = performance.now();
      worker.start();
      while (worker.stats.sent < NOTICES) await new Promise((r) => setTimeout(r, 10));
      const sendMs = performance.now() - t0;
      await worker.stop();
      console.log(
        `worker, concurrency ${concurrency}: ${NOTICES} notices delivered in ${(sendMs / 1000).toFixed(2)} s = ` +
          `${Math.round(NOTICES / (sendMs / 1000))} notices/s (queueing them: ${Math.round(NOTICES / (enqueueMs / 1000))}/s)`,
      );
    }
  } finally {
    client.disconnect();
    await redis.stop();
    server.close();
  }
}

async function main(): Promise<void> {
  await asnFigures();
  await workerFigures();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
