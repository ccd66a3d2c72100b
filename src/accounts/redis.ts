import { Redis } from 'ioredis';
import type { Config } from '../config/schema.js';
import { StoreUnavailableError } from '../util/errors.js';

/** Reconnect delay grows to this and stays there while Redis is away. */
const MAX_RECONNECT_DELAY_MS = 2_000;

/**
 * One Redis client per process. Commands fail fast while Redis is away (no offline queue), so
 * a login during an outage gets [UNAVAILABLE] at once instead of hanging; the client keeps
 * reconnecting in the background and the gateway recovers by itself (an outage never lets a login through unchecked).
 */
export function createRedis(cfg: Config['redis']): Redis {
  const redis = new Redis(cfg.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: cfg.commandTimeoutMs,
    connectTimeout: cfg.commandTimeoutMs,
    retryStrategy: (attempt) => Math.min(attempt * 100, MAX_RECONNECT_DELAY_MS),
  });
  redis.on('error', () => {}); // connection errors surface on commands; readiness is logged by the caller
  return redis;
}

/** Connects, or throws StoreUnavailableError naming the server (never the password in the URL). */
export async function connectRedis(redis: Redis, url: string): Promise<void> {
  // ioredis rejects connect() with a generic "Connection is closed."; the cause is the last 'error'.
  let cause: Error | undefined;
  const onError = (err: Error) => {
    cause = err;
  };
  redis.on('error', onError);
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect(false);
    const reason = cause?.message ?? (err as Error).message;
    throw new StoreUnavailableError(`Redis unreachable at ${safeUrl(url)}: ${reason}`, {
      cause: cause ?? err,
    });
  } finally {
    redis.off('error', onError);
  }
}

export function safeUrl(url: string): string {
  return url.replace(/^(rediss?:\/\/)[^@/]*@/, '$1');
}
