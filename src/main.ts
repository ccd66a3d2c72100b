import type { Redis } from 'ioredis';
import { watchCredentials } from './accounts/events.js';
import { LockoutStore } from './accounts/lockout-store.js';
import { connectRedis, createRedis } from './accounts/redis.js';
import { AccountStore } from './accounts/store.js';
import { RedisAuditLog } from './admin/audit.js';
import { AdminServer } from './admin/http.js';
import { createOperatorService } from './admin/service.js';
import { createAuthenticator } from './auth/authenticator.js';
import { CredentialCache } from './auth/credential-cache.js';
import { PasswordHasher } from './auth/passwords.js';
import type { Config, ListenerConfig } from './config/schema.js';
import { Geo } from './geo/geo.js';
import { handleImapConnection } from './imap/connection.js';
import { CidrSet } from './net/cidr.js';
import { type ConnectionHandler, Listener, TlsContext } from './net/listener.js';
import { SessionRegistry } from './net/session-registry.js';
import { LogNoticeSink, type NoticeSink } from './notify/notices.js';
import { RedisOutbox } from './notify/outbox.js';
import { DeliveryWorker } from './notify/worker.js';
import { createLogger, type Logger } from './observability/logger.js';
import { Metrics } from './observability/metrics.js';
import { RolloutStore } from './rollout/store.js';
import { SmtpFront } from './smtp/front.js';

/**
 * The composition root: config → dependencies → listeners. Nothing below it reaches for a
 * module-level singleton, so tests build a gateway with a real Redis and Dovecot, or with
 * fakes, the same way.
 */

export interface Gateway {
  /** Sessions joined to a mail store in this process. */
  sessions: SessionRegistry;
  /** Bound addresses, in the order of the config's listeners. */
  imapAddresses: Array<{ host: string; port: number; tls: string }>;
  /** The admin API's bound address; null when the config has no admin section. */
  adminAddress: { host: string; port: number } | null;
  metrics: Metrics;
  /** Bound SMTP submission addresses, in the order of smtp.listen. */
  smtpAddresses: Array<{ host: string; port: number; tls: string }>;
  redis: Redis;
  log: Logger;
  geo: Geo;
  /** The SMS outbox (notify.webhook configured), else null: notices are only logged. */
  outbox: RedisOutbox | null;
  /** The delivery worker running in this process (notify.worker.inServe), else null. */
  notifyWorker: DeliveryWorker | null;
  /** Compares live sessions with the stored credential versions now; returns how many it ended. */
  credentialSweep(): Promise<number>;
  /** Re-reads the TLS certificate and the GeoIP database (SIGHUP). */
  reload(): Promise<void>;
  close(): Promise<void>;
}

export interface GatewayOverrides {
  log?: Logger;
  notices?: NoticeSink;
  clock?: () => number;
  /**
   * Under the supervisor (supervisor.ts): whether this worker serves the admin API (one worker
   * does), and /metrics summed over every worker.
   */
  worker?: { admin: boolean; exposeMetrics(): Promise<{ contentType: string; body: string }> } | null;
}

export async function startGateway(config: Config, overrides: GatewayOverrides = {}): Promise<Gateway> {
  const log = overrides.log ?? createLogger(config.log.level);
  const clock = overrides.clock ?? Date.now;
  const redis = createRedis(config.redis);
  await connectRedis(redis, config.redis.url);
  const geo = await Geo.open(config.geo);
  const tls = new TlsContext(config.tls);
  const accounts = new AccountStore(redis, config.redis.keyPrefix);
  const hasher = new PasswordHasher(config.passwords.argon2, {
    maxConcurrent: config.passwords.maxConcurrentVerifies,
    maxQueued: config.passwords.maxQueuedVerifies,
  });
  const credentialCache = new CredentialCache(config.passwords.cache, clock);
  geo.providersReady.then(
    (ready) =>
      ready &&
      log.info(
        { event: 'geo', asnSource: ready.source, ms: Math.round(ready.ms), bytes: ready.bytes },
        'ASN data loaded: provider facts available',
      ),
    (err: Error) =>
      log.warn({ event: 'geo', error: err.message }, 'ASN data not loaded: provider facts unavailable'),
  );
  const metrics = new Metrics({
    passwordQueue: () => hasher.load,
    credentialCache: () => credentialCache.stats,
  });
  const outbox = config.notify.webhook
    ? new RedisOutbox({ redis, prefix: config.redis.keyPrefix, config: config.notify, log, clock, metrics })
    : null;
  const notices = overrides.notices ?? outbox ?? new LogNoticeSink(log);
  const authenticator = createAuthenticator({
    accounts,
    lockout: new LockoutStore(redis, config.redis.keyPrefix, config.lockout),
    lockoutConfig: config.lockout,
    rollout: new RolloutStore(redis, config.redis.keyPrefix),
    geo,
    hasher,
    notices,
    log,
    clock,
    metrics,
    credentialCache,
  });
  const trustedProxies = new CidrSet(config.proxyProtocol.trusted);
  const sessions = new SessionRegistry();
  const credentials = await watchCredentials({
    redis,
    prefix: config.redis.keyPrefix,
    registry: sessions,
    log,
  });

  const listeners: Listener[] = [];
  const imapAddresses: Gateway['imapAddresses'] = [];
  const smtpAddresses: Gateway['smtpAddresses'] = [];
  let admin: AdminServer | null = null;
  let adminAddress: Gateway['adminAddress'] = null;
  const smtp = config.smtp
    ? new SmtpFront({ config: config.smtp, authenticator, tls, log, clock, sessions, metrics })
    : null;
  try {
    /** One listener: the protocol-neutral front (PROXY, TLS, per-IP limit) before `handler`. */
    const open = async (
      protocol: 'imap' | 'smtp',
      l: ListenerConfig,
      opts: { maxConnectionsPerIp: number; refuse: (text: string) => string; handler: ConnectionHandler },
    ) => {
      const listener = new Listener({
        protocol,
        config: l,
        trustedProxies,
        proxyTimeoutMs: config.proxyProtocol.timeoutMs,
        tls,
        log,
        metrics,
        ...opts,
      });
      const addr = await listener.listen();
      listeners.push(listener);
      log.info({ event: 'listen', protocol, host: addr.address, port: addr.port, tls: l.tls }, 'listening');
      return { host: addr.address, port: addr.port, tls: l.tls };
    };
    const imap = config.imap;
    for (const l of imap?.listen ?? []) {
      imapAddresses.push(
        await open('imap', l, {
          maxConnectionsPerIp: imap!.limits.maxConnectionsPerIp,
          refuse: (text) => `* BYE ${text}\r\n`,
          handler: (conn) =>
            handleImapConnection(conn, { config: imap!, authenticator, tls, log, clock, sessions, metrics }),
        }),
      );
    }
    for (const l of config.smtp?.listen ?? []) {
      smtpAddresses.push(
        await open('smtp', l, {
          maxConnectionsPerIp: config.smtp!.limits.maxConnectionsPerIp,
          refuse: (text) => `421 4.7.0 ${text}\r\n`,
          handler: (conn) => smtp!.handle(conn),
        }),
      );
    }
    if (config.admin && (overrides.worker?.admin ?? true)) {
      const audit = new RedisAuditLog(redis, config.redis.keyPrefix, log);
      // The API's operator service shares the gateway's stores and hasher; only the actor differs.
      const operator = {
        accounts,
        rollout: new RolloutStore(redis, config.redis.keyPrefix),
        lockout: new LockoutStore(redis, config.redis.keyPrefix, config.lockout),
        hasher,
        log,
        clock,
        audit,
        ...(outbox ? { notices: outbox } : {}),
      };
      const server = new AdminServer({
        config: config.admin,
        operatorService: (actor) => createOperatorService({ ...operator, actor }),
        audit,
        metrics: overrides.worker ? { expose: () => overrides.worker!.exposeMetrics() } : metrics,
        readiness: { redis: () => redis.ping(), geo: () => geo.database },
        log,
      });
      const addr = await server.listen();
      admin = server;
      adminAddress = { host: addr.address, port: addr.port };
      log.info({ event: 'listen', protocol: 'admin', host: addr.address, port: addr.port }, 'listening');
    }
  } catch (err) {
    await credentials.stop();
    await Promise.all(listeners.map((l) => l.close()));
    redis.disconnect();
    throw err;
  }
  const webhook = config.notify.webhook;
  const notifyWorker =
    webhook && config.notify.worker.inServe
      ? new DeliveryWorker({
          redis,
          prefix: config.redis.keyPrefix,
          config: { ...config.notify, webhook },
          log,
          clock,
          blockMs: Math.floor(config.redis.commandTimeoutMs / 2),
          metrics,
        })
      : null;
  notifyWorker?.start();

  return {
    sessions,
    imapAddresses,
    smtpAddresses,
    adminAddress,
    metrics,
    redis,
    log,
    geo,
    outbox,
    notifyWorker,
    credentialSweep: () => credentials.sweep(),
    async reload() {
      tls.reload();
      await geo.reload();
      log.info({ event: 'reload' }, 'TLS certificate and GeoIP database reloaded');
    },
    async close() {
      await credentials.stop();
      await Promise.all([...listeners.map((l) => l.close()), smtp?.close(), admin?.close()]);
      await outbox?.flush();
      await notifyWorker?.stop();
      redis.disconnect();
    },
  };
}
