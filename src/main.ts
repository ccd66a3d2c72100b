import type { Redis } from 'ioredis';
import { connectRedis, createRedis } from './accounts/redis.js';
import { AccountStore } from './accounts/store.js';
import { createAuthenticator } from './auth/authenticator.js';
import { PasswordHasher } from './auth/passwords.js';
import type { Config } from './config/schema.js';
import { Geo } from './geo/geo.js';
import { handleImapConnection } from './imap/connection.js';
import { CidrSet } from './net/cidr.js';
import { Listener, TlsContext } from './net/listener.js';
import { LogNoticeSink, type NoticeSink } from './notify/notices.js';
import { createLogger, type Logger } from './observability/logger.js';

/**
 * The composition root: config → dependencies → listeners. Nothing below it reaches for a
 * module-level singleton, so tests build a gateway with a real Redis and Dovecot, or with
 * fakes, the same way.
 */

export interface Gateway {
  /** Bound addresses, in the order of the config's listeners. */
  imapAddresses: Array<{ host: string; port: number; tls: string }>;
  redis: Redis;
  log: Logger;
  /** Re-reads the TLS certificate and the GeoIP database (SIGHUP). */
  reload(): Promise<void>;
  close(): Promise<void>;
}

export interface GatewayOverrides {
  log?: Logger;
  notices?: NoticeSink;
  clock?: () => number;
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
  const notices = overrides.notices ?? new LogNoticeSink(log);
  const authenticator = createAuthenticator({ accounts, geo, hasher, notices, log, clock });
  const trustedProxies = new CidrSet(config.proxyProtocol.trusted);

  const listeners: Listener[] = [];
  const imapAddresses: Gateway['imapAddresses'] = [];
  try {
    if (config.imap) {
      const imap = config.imap;
      for (const l of imap.listen) {
        const listener = new Listener({
          protocol: 'imap',
          config: l,
          trustedProxies,
          proxyTimeoutMs: config.proxyProtocol.timeoutMs,
          maxConnectionsPerIp: imap.limits.maxConnectionsPerIp,
          tls,
          log,
          refuse: (text) => `* BYE ${text}\r\n`,
          handler: (conn) => handleImapConnection(conn, { config: imap, authenticator, tls, log, clock }),
        });
        const addr = await listener.listen();
        listeners.push(listener);
        imapAddresses.push({ host: addr.address, port: addr.port, tls: l.tls });
        log.info(
          { event: 'listen', protocol: 'imap', host: addr.address, port: addr.port, tls: l.tls },
          'listening',
        );
      }
    }
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    redis.disconnect();
    throw err;
  }

  return {
    imapAddresses,
    redis,
    log,
    async reload() {
      tls.reload();
      await geo.reload();
      log.info({ event: 'reload' }, 'TLS certificate and GeoIP database reloaded');
    },
    async close() {
      await Promise.all(listeners.map((l) => l.close()));
      redis.disconnect();
    },
  };
}
