import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { type OperatorService, operatorServiceOn } from '../../src/admin/service.js';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { makeCertificate } from '../../src/devenv/cert.js';
import type { DovecotServer, PostfixServer, RedisServer } from '../../src/devenv/servers.js';
import { type Gateway, startGateway } from '../../src/main.js';
import { createLogger } from '../../src/observability/logger.js';

/** The loopback address that tests use as a trusted PROXY-protocol peer. */
export const LOAD_BALANCER_IP = '127.0.0.2';

/** Cheap argon2 parameters: the production ones are exercised in a few tests only. */
export const TEST_ARGON2 = { memoryKiB: 64, iterations: 1, parallelism: 1 };

/** Log lines the gateway wrote, parsed, for assertions on auth and session events. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  readonly raw: string[] = [];

  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line) continue;
      this.raw.push(line);
      this.lines.push(JSON.parse(line) as Record<string, unknown>);
    }
    done();
  }

  events(event: string): Array<Record<string, unknown>> {
    return this.lines.filter((l) => l.event === event);
  }

  async waitFor(
    pred: (l: Record<string, unknown>) => boolean,
    timeoutMs = 5_000,
  ): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`no log line matched within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** The config before validation, for tests to change freely. */
// biome-ignore lint/suspicious/noExplicitAny: tests reach into arbitrary keys before zod validates them
export type RawConfig = Record<string, any>;

export interface TestGateway {
  gateway: Gateway;
  config: Config;
  logs: LogCapture;
  ops: OperatorService;
  /** A separate Redis client for the test's own writes and checks. */
  redis: Redis;
  port(tls: 'implicit' | 'starttls' | 'none'): number;
  /** The SMTP submission listener of that TLS mode (only with the `smtp` option). */
  smtpPort(tls: 'implicit' | 'starttls' | 'none'): number;
  close(): Promise<void>;
}

/**
 * A gateway in this process, with listeners of every TLS mode on free ports, in front of the
 * given Redis and Dovecot. `configure` may change the raw config before validation.
 */
export async function startTestGateway(opts: {
  redis: RedisServer;
  dovecot: DovecotServer;
  keyPrefix?: string;
  /** Also SMTP submission listeners (implicit, starttls, none) relaying to this Postfix by XCLIENT. */
  smtp?: { postfix: PostfixServer };
  configure?: (raw: RawConfig) => void;
}): Promise<TestGateway> {
  const certDir = mkdtempSync(join(tmpdir(), 'mailgate-cert-'));
  const tls = makeCertificate(certDir);
  const raw: RawConfig = {
    log: { level: 'info' },
    redis: { url: opts.redis.url, keyPrefix: opts.keyPrefix ?? `t${Date.now()}:` },
    tls,
    // Clients that send a PROXY header connect from 127.0.0.2, the stand-in for a load balancer;
    // everyone else (imapflow, Python) connects straight from 127.0.0.1.
    proxyProtocol: { trusted: [`${LOAD_BALANCER_IP}/32`] },
    imap: {
      listen: [
        { host: '127.0.0.1', port: 0, tls: 'implicit' },
        { host: '127.0.0.1', port: 0, tls: 'starttls' },
        { host: '127.0.0.1', port: 0, tls: 'none' },
      ],
      upstream: {
        servers: [`127.0.0.1:${opts.dovecot.port}`],
        tls: 'none',
        login: {
          style: 'master',
          user: opts.dovecot.masterUser,
          password: opts.dovecot.masterPassword,
          separator: '*',
        },
      },
    },
    geo: {
      countryDb: 'bundled',
      domesticCountries: ['JP'],
      unknownCountry: 'overseas',
      overrides: [
        { cidr: '203.0.113.0/24', country: 'JP', asn: 9605, org: 'carrier network' },
        { cidr: '198.51.100.0/24', country: 'US' },
      ],
    },
    passwords: { argon2: TEST_ARGON2 },
    // Tests share one client address; lockout tests set their own thresholds.
    lockout: {
      sourceMaxFailures: 100_000,
      tarpitAfter: 100_000,
      pairMaxFailures: 100_000,
      accountMaxFailures: 100_000,
    },
  };
  if (opts.smtp) {
    raw.smtp = {
      listen: [
        { host: '127.0.0.1', port: 0, tls: 'implicit' },
        { host: '127.0.0.1', port: 0, tls: 'starttls' },
        { host: '127.0.0.1', port: 0, tls: 'none' },
      ],
      hostname: 'gateway.mailgate.test',
      upstream: {
        servers: [`${opts.smtp.postfix.host}:${opts.smtp.postfix.port}`],
        login: { style: 'xclient' },
      },
    };
  }
  opts.configure?.(raw);
  const config = parseConfig(raw);
  const logs = new LogCapture();
  const log = createLogger('debug', logs);
  const gateway = await startGateway(config, { log });
  const redis = new Redis(opts.redis.url);
  // Outage tests stop Redis under it; its reconnect errors are expected, not "unhandled".
  redis.on('error', () => {});
  const ops = operatorServiceOn(redis, config, { log, actor: 'test' });
  return {
    gateway,
    config,
    logs,
    ops,
    redis,
    port(mode) {
      const a = gateway.imapAddresses.find((x) => x.tls === mode);
      if (!a) throw new Error(`no ${mode} listener`);
      return a.port;
    },
    smtpPort(mode) {
      const a = gateway.smtpAddresses.find((x) => x.tls === mode);
      if (!a) throw new Error(`no SMTP ${mode} listener`);
      return a.port;
    },
    async close() {
      await gateway.close();
      redis.disconnect();
      rmSync(certDir, { recursive: true, force: true });
    },
  };
}

/** Writes a config file for tests that run bin/mailgate as a process. */
export function writeConfigFile(config: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'mailgate-config-'));
  const file = join(dir, 'mailgate.yaml');
  writeFileSync(file, JSON.stringify(config, null, 2)); // JSON is YAML
  return file;
}
