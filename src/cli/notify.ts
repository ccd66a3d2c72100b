/**
 * bin/mailgate notify ...: the SMS delivery worker and the outbox as operators see it.
 * Exit codes as everywhere: 0 done, 1 refused or failed, 2 usage.
 */
import type { Command } from 'commander';
import type { Redis } from 'ioredis';
import { connectRedis, createRedis } from '../accounts/redis.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { formatLogLine, NotifyAdmin } from '../notify/admin.js';
import type { NotifyLogEntry } from '../notify/outbox.js';
import { DeliveryWorker } from '../notify/worker.js';
import { createLogger } from '../observability/logger.js';
import { ConfigError, RefusedError, UsageError } from '../util/errors.js';

interface Opts {
  config: string;
  json?: boolean;
}

async function withRedis<T>(opts: Opts, fn: (redis: Redis, config: Config) => Promise<T>): Promise<T> {
  const config = loadConfig(opts.config);
  const redis = createRedis(config.redis);
  await connectRedis(redis, config.redis.url);
  try {
    return await fn(redis, config);
  } finally {
    redis.disconnect();
  }
}

function count(value: string, option: string): number {
  if (!/^\d{1,9}$/.test(value)) throw new UsageError(`${option} must be a number, not "${value}"`);
  return Number(value);
}

function print(json: boolean | undefined, value: unknown, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text}\n`);
}

/** Until SIGINT or SIGTERM. */
function untilSignal(onSignal: () => void): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      onSignal();
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}

export function addNotifyCommands(program: Command, common: (cmd: Command) => Command): void {
  const notify = program
    .command('notify')
    .description('subscriber SMS notices: the delivery worker, the outbox log, dead letters')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate notify worker\n  mailgate notify tail -n 50 --follow\n  mailgate notify dlq list\n  mailgate notify dlq retry --all',
    );

  common(notify.command('worker'))
    .description('deliver queued notices to the SMS gateway webhook until SIGTERM or Ctrl-C')
    .addHelpText(
      'after',
      '\nExample:\n  mailgate notify worker --config /etc/mailgate/mailgate.yaml\n\nAny number of workers (and gateways with notify.worker.inServe) may run at once; each notice\nis delivered by one of them. Logs (event notify) go to standard output.',
    )
    .action(async (opts: Opts) => {
      const config = loadConfig(opts.config);
      const webhook = config.notify.webhook;
      if (!webhook) throw new ConfigError('notify.webhook: is required to deliver notices');
      const log = createLogger(config.log.level);
      const redis = createRedis(config.redis);
      await connectRedis(redis, config.redis.url);
      const worker = new DeliveryWorker({
        redis,
        prefix: config.redis.keyPrefix,
        config: { ...config.notify, webhook },
        log,
        blockMs: Math.floor(config.redis.commandTimeoutMs / 2),
      });
      worker.start();
      await untilSignal(() => log.info({ event: 'notify', result: 'stopping' }, 'delivery worker stopping'));
      await worker.stop();
      log.info({ event: 'notify', result: 'stopped', ...worker.stats }, 'delivery worker stopped');
      log.flush();
      redis.disconnect();
    });

  common(notify.command('tail'))
    .description('print the latest outbox events (queued, deferred, sent, retry, dead), oldest first')
    .option('-n, --lines <n>', 'how many events', '20')
    .option('-f, --follow', 'then keep printing new events until Ctrl-C')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate notify tail -n 100\n  mailgate notify tail --follow --json\n\nColumns: time, event, template, login, msisdn (masked), idempotency key, details.',
    )
    .action(async (opts: Opts & { lines: string; follow?: boolean }) => {
      const n = count(opts.lines, '-n');
      await withRedis(opts, async (redis, config) => {
        const admin = new NotifyAdmin(redis, config.redis.keyPrefix);
        const show = (e: NotifyLogEntry) => print(opts.json, e, formatLogLine(e));
        const entries = await admin.tail(n);
        for (const e of entries) show(e);
        if (!opts.follow) return;
        const stop = new AbortController();
        void untilSignal(() => {
          stop.abort();
          redis.disconnect(); // ends the XREAD that is blocking now
        });
        const blockMs = Math.max(1, Math.min(5_000, Math.floor(config.redis.commandTimeoutMs / 2)));
        for await (const e of admin.follow(entries.at(-1)?.id ?? '$', { signal: stop.signal, blockMs }))
          show(e);
      });
    });

  common(notify.command('status'))
    .description('notices ready, in delivery, deferred and dead, and the workers in the group')
    .addHelpText('after', '\nExample:\n  mailgate notify status --json')
    .action(async (opts: Opts) => {
      await withRedis(opts, async (redis, config) => {
        const s = await new NotifyAdmin(redis, config.redis.keyPrefix).status();
        const text = [
          `ready:        ${s.ready} (${s.inDelivery} in delivery)`,
          `deferred:     ${s.deferred}${s.nextDeferredDue ? ` (next due ${s.nextDeferredDue})` : ''}`,
          `dead letters: ${s.deadLetters}`,
          'workers:',
          ...(s.consumers.length
            ? s.consumers.map(
                (c) => `  ${c.name}  pending ${c.pending}, idle ${Math.round(c.idleMs / 1000)} s`,
              )
            : ['  none yet']),
        ].join('\n');
        print(opts.json, s, text);
      });
    });

  const dlq = notify
    .command('dlq')
    .description('dead letters: notices the webhook kept refusing')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate notify dlq list\n  mailgate notify dlq retry 1718600000000-0',
    );
  common(dlq.command('list'))
    .description(
      'list dead letters, oldest first: id, time, template, login, msisdn (masked), attempts, error',
    )
    .option('-n, --lines <n>', 'at most this many', '100')
    .addHelpText('after', '\nExample:\n  mailgate notify dlq list --json')
    .action(async (opts: Opts & { lines: string }) => {
      const n = count(opts.lines, '-n');
      await withRedis(opts, async (redis, config) => {
        const rows = await new NotifyAdmin(redis, config.redis.keyPrefix).dlqList(n);
        const text = rows.length
          ? rows
              .map(
                (d) =>
                  `${d.id} ${d.ts} ${d.template} ${d.login} ${d.msisdn} attempts=${d.attempts} error=${d.error}`,
              )
              .join('\n')
          : 'no dead letters';
        print(opts.json, rows, text);
      });
    });
  common(dlq.command('retry [ids...]'))
    .description('put dead letters back into the outbox (same idempotency key, attempts reset)')
    .option('--all', 'every dead letter')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate notify dlq retry 1718600000000-0 1718600000123-0\n  mailgate notify dlq retry --all',
    )
    .action(async (ids: string[], opts: Opts & { all?: boolean }) => {
      if (Boolean(opts.all) === ids.length > 0) throw new UsageError('give dead-letter ids, or --all');
      await withRedis(opts, async (redis, config) => {
        const r = await new NotifyAdmin(redis, config.redis.keyPrefix).dlqRetry(opts.all ? [] : ids);
        print(
          opts.json,
          r,
          `${r.retried.length} notice(s) back in the outbox${r.missing.length ? `; not found: ${r.missing.join(', ')}` : ''}`,
        );
        if (r.missing.length && ids.length) throw new RefusedError(`no dead letter ${r.missing.join(', ')}`);
      });
    });
}
