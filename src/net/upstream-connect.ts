import net from 'node:net';
import tls from 'node:tls';
import { MailgateError } from '../util/errors.js';

/**
 * The connect step every upstream (IMAP store, SMTP relay) shares: plain TCP or implicit TLS,
 * bounded by a timeout, with failures turned into the caller's connect-error class so it can
 * tell "try the next server" from anything else.
 */

export function parseHostPort(hp: string): { host: string; port: number } | null {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(hp);
  if (!m) return null;
  const port = Number(m[2]);
  return port > 0 && port < 65536 ? { host: m[1]!, port } : null;
}

export interface UpstreamConnectOptions {
  tls: 'none' | 'starttls' | 'implicit';
  tlsVerify: boolean;
  connectTimeoutMs: number;
}

export function connectUpstream(
  server: string,
  cfg: UpstreamConnectOptions,
  connectError: (message: string, cause?: unknown) => MailgateError,
): Promise<net.Socket> {
  const hp = parseHostPort(server);
  if (!hp) return Promise.reject(connectError(`bad upstream address ${server}`));
  const { host, port } = hp;
  return new Promise((resolve, reject) => {
    const socket =
      cfg.tls === 'implicit'
        ? tls.connect({
            host,
            port,
            servername: net.isIP(host) ? '' : host,
            rejectUnauthorized: cfg.tlsVerify,
          })
        : net.connect({ host, port });
    const ready = cfg.tls === 'implicit' ? 'secureConnect' : 'connect';
    const timer = setTimeout(() => fail(connectError(`${server}: connect timed out`)), cfg.connectTimeoutMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err instanceof MailgateError ? err : connectError(`${server}: ${err.message}`, err));
    };
    socket.once('error', fail);
    socket.once(ready, () => {
      clearTimeout(timer);
      socket.off('error', fail);
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}
