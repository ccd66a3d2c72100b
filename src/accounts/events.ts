import type { Redis } from 'ioredis';
import type { CredentialVersions, SessionRegistry } from '../net/session-registry.js';
import type { Logger } from '../observability/logger.js';
import type { CredentialEvent } from './store.js';

/**
 * Keeps a SessionRegistry in step with credential changes made anywhere (CLI, admin API,
 * another gateway): a subscription to the events channel ends stale sessions within
 * milliseconds, and a sweep that compares live sessions with the stored versions covers
 * whatever was announced while the subscription was down (on every reconnect, and every
 * SESSION_SWEEP_INTERVAL_MS as a safety net).
 */

export const SESSION_SWEEP_INTERVAL_MS = 30_000;

export async function watchCredentials(opts: {
  redis: Redis;
  prefix: string;
  registry: SessionRegistry;
  log: Logger;
}): Promise<{ stop(): Promise<void>; sweep(): Promise<number> }> {
  const { redis, prefix, registry, log } = opts;
  const channel = `${prefix}events`;
  // A connection in subscriber mode can do nothing else; it reconnects and resubscribes by itself.
  const sub = redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null });
  sub.on('error', () => {});

  const sweep = async (): Promise<number> => {
    const logins = registry.logins();
    if (logins.length === 0) return 0;
    const p = redis.pipeline();
    for (const l of logins)
      p.hmget(`${prefix}account:${l}`, 'login', 'imapVersion', 'primaryVersion', 'imapHash');
    const rows = (await p.exec()) ?? [];
    const versions = new Map<string, CredentialVersions>();
    rows.forEach(([err, value], i) => {
      if (err) return;
      const [login, imap, primary, imapHash] = value as Array<string | null>;
      versions.set(
        logins[i]!,
        login === null
          ? null
          : {
              imapVersion: Number(imap ?? 0),
              primaryVersion: Number(primary ?? 0),
              hasImapPassword: imapHash !== null,
            },
      );
    });
    const closed = registry.sweep(versions);
    if (closed)
      log.info({ event: 'session', action: 'sweep', closed }, 'ended sessions with a changed credential');
    return closed;
  };

  sub.on('message', (_ch: string, message: string) => {
    let ev: CredentialEvent;
    try {
      ev = JSON.parse(message) as CredentialEvent;
    } catch {
      return;
    }
    if (ev.type !== 'credential' || typeof ev.login !== 'string') return;
    const closed = registry.onCredentialEvent(ev);
    if (closed) {
      log.info(
        {
          event: 'session',
          action: 'credential-changed',
          login: ev.login,
          credential: ev.credential,
          closed,
        },
        'ended sessions opened with the old credential',
      );
    }
  });
  let first = true;
  sub.on('ready', () => {
    if (first) {
      first = false;
      return;
    }
    sweep().catch(() => {}); // announcements may have been missed while disconnected
  });
  await sub.subscribe(channel);
  const timer = setInterval(() => sweep().catch(() => {}), SESSION_SWEEP_INTERVAL_MS);
  timer.unref();
  return {
    sweep,
    async stop() {
      clearInterval(timer);
      sub.disconnect();
    },
  };
}
