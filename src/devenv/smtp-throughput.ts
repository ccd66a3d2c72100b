import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import nodemailer from 'nodemailer';
import { freePort } from './ports.js';
import { type DovecotServer, startDovecot, startPostfix, startRedis } from './servers.js';

/**
 * scripts/smtp-throughput: small messages submitted through the gateway against straight to
 * Postfix, on loopback, plain front (no TLS) so the figures isolate the relay. The client is
 * nodemailer, in two shapes:
 *   - pooled: CONCURRENCY connections, each sending message after message (an outbox flush;
 *     one login per connection);
 *   - per-connection: CONCURRENCY workers, each message on a new connection (a login each).
 * A message counts when the client has its 250; the gateway gives that only after Postfix's
 * own 250. The gateway runs as its own process (bin/mailgate serve) with production argon2id
 * parameters and info logging (one submission line per message). Between runs the script
 * waits until Postfix has delivered everything, so no run pays for the last one's queue.
 */

const BIN = resolve(import.meta.dirname, '../../bin/mailgate');
const MESSAGES = Number(process.env.MESSAGES ?? 1000);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 10);
const USER = 'bench';
const ADDRESS = `${USER}@example.jp`;
const PASSWORD = 'bench-primary-password';

type Target = { name: string; port: number; auth: boolean };
type Shape = 'pooled' | 'per-connection';

function transport(target: Target, pooled: boolean) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port: target.port,
    secure: false,
    ignoreTLS: true,
    pool: pooled,
    ...(pooled ? { maxConnections: CONCURRENCY, maxMessages: Number.POSITIVE_INFINITY } : {}),
    ...(target.auth ? { auth: { user: ADDRESS, pass: PASSWORD } } : {}),
  });
}

const mail = (i: number) => ({
  from: ADDRESS,
  to: ADDRESS,
  subject: `throughput ${i}`,
  text: `Small message number ${i}.\n${'The quick brown fox jumps over the lazy dog. '.repeat(6)}\n`,
});

async function runOnce(target: Target, shape: Shape, count: number): Promise<number> {
  const started = process.hrtime.bigint();
  if (shape === 'pooled') {
    const t = transport(target, true);
    await Promise.all(Array.from({ length: count }, (_, i) => t.sendMail(mail(i))));
    t.close();
  } else {
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        for (let i = next++; i < count; i = next++) {
          const t = transport(target, false);
          await t.sendMail(mail(i));
          t.close();
        }
      }),
    );
  }
  return Number(process.hrtime.bigint() - started) / 1e9;
}

function delivered(dovecot: DovecotServer): number {
  let n = 0;
  for (const sub of ['new', 'cur']) {
    try {
      n += readdirSync(join(dovecot.dir, 'home', USER, 'Maildir', sub)).length;
    } catch {
      // not created yet
    }
  }
  return n;
}

async function drained(dovecot: DovecotServer, expected: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (delivered(dovecot) < expected) {
    if (Date.now() > deadline)
      throw new Error(`only ${delivered(dovecot)} of ${expected} messages delivered`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function cli(args: string[], stdin: string): Promise<void> {
  return new Promise((done, fail) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    p.stdin.end(stdin);
    p.once('exit', (code) =>
      code === 0 ? done() : fail(new Error(`mailgate ${args.join(' ')}: exit ${code}\n${err}`)),
    );
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mailgate-throughput-'));
  const redis = await startRedis({ appendOnly: false });
  const dovecot = await startDovecot({ users: [{ user: USER, password: 'store-only' }], lmtp: true });
  const postfix = await startPostfix({ deliverTo: dovecot, users: [USER] });
  const port = await freePort();
  const configFile = join(dir, 'mailgate.yaml');
  const argon2 = { memoryKiB: 19456, iterations: 2, parallelism: 1 }; // production defaults
  writeFileSync(
    configFile,
    JSON.stringify({
      log: { level: 'info' },
      redis: { url: redis.url },
      smtp: {
        listen: [{ host: '127.0.0.1', port, tls: 'none' }],
        upstream: { servers: [`${postfix.host}:${postfix.port}`], login: { style: 'xclient' } },
        limits: { maxMessagesPerSession: MESSAGES, maxConnectionsPerIp: CONCURRENCY * 2 },
      },
      geo: { domesticCountries: ['JP'], overrides: [{ cidr: '127.0.0.0/8', country: 'JP' }] },
      passwords: { argon2 },
    }),
  );
  let gw: ChildProcess | undefined;
  try {
    await cli(
      [
        'account',
        'add',
        ADDRESS,
        '--primary-password-stdin',
        '--upstream-user',
        USER,
        '--config',
        configFile,
      ],
      PASSWORD,
    );
    gw = spawn(process.execPath, [BIN, 'serve', '--config', configFile], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const targets: Target[] = [
      { name: 'Postfix direct', port: postfix.port, auth: false },
      { name: 'mailgate -> Postfix', port, auth: true },
    ];
    // Warm-up (and wait for the gateway to listen).
    for (let i = 0; ; i++) {
      try {
        await runOnce(targets[1]!, 'pooled', 5);
        break;
      } catch (err) {
        if (i > 50) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await runOnce(targets[0]!, 'pooled', 5);
    let sent = 10;
    await drained(dovecot, sent);

    const rows: string[] = [];
    for (const shape of ['pooled', 'per-connection'] as const) {
      for (const target of targets) {
        const seconds = await runOnce(target, shape, MESSAGES);
        sent += MESSAGES;
        await drained(dovecot, sent);
        rows.push(
          `| ${target.name} | ${shape} | ${MESSAGES} | ${seconds.toFixed(2)} | ${(MESSAGES / seconds).toFixed(0)} |`,
        );
      }
    }
    process.stdout.write(
      [
        `SMTP submission throughput, ${MESSAGES} small messages (~0.5 KB), ${CONCURRENCY} concurrent connections,`,
        `loopback, plain front, nodemailer client; gateway verifies argon2id m=${argon2.memoryKiB} t=${argon2.iterations} p=${argon2.parallelism}, relays with XCLIENT`,
        '',
        '| target | connections | messages | seconds | msgs/s |',
        '| --- | --- | --- | --- | --- |',
        ...rows,
        '',
      ].join('\n'),
    );
  } finally {
    if (gw) {
      gw.kill('SIGTERM');
      await new Promise((r) => gw!.once('exit', r));
    }
    await postfix.stop();
    await Promise.allSettled([dovecot.stop(), redis.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`smtp-throughput: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
