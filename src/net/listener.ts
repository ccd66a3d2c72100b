import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { ListenerConfig } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { ConfigError, type MailgateError } from '../util/errors.js';
import { RandomIds } from '../util/random-ids.js';
import { type CidrSet, normalizeIp } from './cidr.js';
import { readProxyHeader } from './proxy-protocol.js';
import { ignoreErrors } from './splice.js';

/**
 * The protocol-neutral front of every listener: accept, limit connections per client IP,
 * read the PROXY header from trusted peers (and only from them), terminate implicit TLS, then
 * hand a ready connection to the protocol. Protocols never see a raw accept.
 */

/** A TLS handshake must finish within this, or the connection is dropped. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/** A refused connection gets this long for its BYE to leave before the socket is destroyed. */
const REFUSED_LINGER_MS = 1_000;

export interface ClientConnection {
  id: string;
  socket: net.Socket;
  clientIp: string;
  clientPort: number;
  /** True once TLS is active (implicit TLS listeners start that way). */
  secure: boolean;
  /** Bytes already read from the socket that belong to the protocol (e.g. after a PROXY header). */
  initialData: Buffer;
  listener: ListenerConfig;
}

export type ConnectionHandler = (conn: ClientConnection) => void;

/** The certificate and key, reloaded in place on SIGHUP; connections in progress keep the old ones. */
export class TlsContext {
  #ctx: tls.SecureContext | null = null;

  constructor(private readonly files: { cert: string; key: string } | undefined) {
    if (files) this.reload();
  }

  get available(): boolean {
    return this.#ctx !== null;
  }

  get(): tls.SecureContext {
    if (!this.#ctx) throw new ConfigError('tls: a listener needs TLS but tls.cert and tls.key are not set');
    return this.#ctx;
  }

  reload(): void {
    if (!this.files) return;
    let cert: Buffer;
    let key: Buffer;
    try {
      cert = readFileSync(this.files.cert);
      key = readFileSync(this.files.key);
    } catch (err) {
      throw new ConfigError(`tls: cannot read certificate or key: ${(err as Error).message}`);
    }
    try {
      this.#ctx = tls.createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
    } catch (err) {
      throw new ConfigError(`tls: certificate or key not usable: ${(err as Error).message}`);
    }
  }

  /** Starts server-side TLS on a connected socket; resolves when the handshake is done. */
  upgrade(socket: net.Socket): Promise<tls.TLSSocket> {
    return new Promise((resolve, reject) => {
      // Bytes still in the socket's read buffer are fed to TLS by Node (_tls_wrap "Socket
      // already has some buffered data"), so a ClientHello read with a PROXY header is kept.
      const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: this.get() });
      const timer = setTimeout(
        () => secure.destroy(new Error('TLS handshake timed out')),
        TLS_HANDSHAKE_TIMEOUT_MS,
      );
      secure.once('secure', () => {
        clearTimeout(timer);
        secure.off('error', onError);
        resolve(secure);
      });
      const onError = (err: Error) => {
        clearTimeout(timer);
        secure.destroy();
        reject(err);
      };
      secure.once('error', onError);
    });
  }
}

export interface ListenerOptions {
  protocol: 'imap' | 'smtp';
  config: ListenerConfig;
  trustedProxies: CidrSet;
  proxyTimeoutMs: number;
  maxConnectionsPerIp: number;
  tls: TlsContext;
  log: Logger;
  /** Said to a connection refused before the protocol starts (too many connections, bad PROXY header). */
  refuse: (reason: string) => string;
  handler: ConnectionHandler;
  metrics?: Pick<GatewayMetrics, 'connectionRefused'>;
}

/** Session ids: 6 random bytes, 8 base64url characters. */
const SESSION_ID_BYTES = 6;

export class Listener {
  readonly server: net.Server;
  readonly #perIp = new Map<string, number>();
  readonly #ids = new RandomIds(SESSION_ID_BYTES);

  constructor(private readonly opts: ListenerOptions) {
    if (opts.config.tls !== 'none') opts.tls.get(); // fail at start, not at the first client
    this.server = net.createServer({ pauseOnConnect: true, noDelay: true }, (s) => this.#accept(s));
  }

  listen(): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.config.port, this.opts.config.host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  async #accept(socket: net.Socket): Promise<void> {
    const { log, config } = this.opts;
    const id = this.#ids.next();
    ignoreErrors(socket); // errors surface as 'close'; the protocol logs the session end
    const peerIp = normalizeIp(socket.remoteAddress ?? '');
    let clientIp = peerIp;
    let clientPort = socket.remotePort ?? 0;
    let initialData: Buffer = Buffer.alloc(0);
    try {
      if (this.opts.trustedProxies.has(peerIp)) {
        const reading = readProxyHeader(socket, { timeoutMs: this.opts.proxyTimeoutMs });
        socket.resume(); // accepted paused (pauseOnConnect); the reader pauses it again when done
        const { header, rest } = await reading;
        if (header.command === 'proxy') {
          clientIp = normalizeIp(header.sourceAddress);
          clientPort = header.sourcePort;
        }
        initialData = rest;
      }
    } catch (err) {
      log.info(
        {
          event: 'connection',
          session: id,
          peer: peerIp,
          result: 'refused',
          reason: (err as MailgateError).code,
        },
        (err as Error).message,
      );
      this.opts.metrics?.connectionRefused(this.opts.protocol, (err as MailgateError).code ?? 'error');
      socket.destroy();
      return;
    }

    const count = (this.#perIp.get(clientIp) ?? 0) + 1;
    this.#perIp.set(clientIp, count);
    socket.on('close', () => {
      const n = (this.#perIp.get(clientIp) ?? 1) - 1;
      if (n <= 0) this.#perIp.delete(clientIp);
      else this.#perIp.set(clientIp, n);
    });
    if (count > this.opts.maxConnectionsPerIp) {
      log.info(
        { event: 'connection', session: id, ip: clientIp, result: 'refused', reason: 'per-ip-limit' },
        'too many connections',
      );
      this.opts.metrics?.connectionRefused(this.opts.protocol, 'per-ip-limit');
      if (config.tls === 'implicit') socket.destroy();
      else {
        socket.end(this.opts.refuse('Too many connections from your address.'));
        // Accepted paused (pauseOnConnect), the socket would never read the client's FIN, never
        // emit 'close', and so hold its per-IP slot (and the fd) for good. Read and drop, to see
        // the close; and bound the wait for a client that never closes.
        socket.resume();
        setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
      }
      return;
    }

    let conn: net.Socket = socket;
    if (config.tls === 'implicit') {
      if (initialData.length) socket.unshift(initialData);
      initialData = Buffer.alloc(0);
      try {
        conn = await this.opts.tls.upgrade(socket);
      } catch (err) {
        log.info(
          { event: 'connection', session: id, ip: clientIp, result: 'refused', reason: 'tls' },
          (err as Error).message,
        );
        this.opts.metrics?.connectionRefused(this.opts.protocol, 'tls');
        socket.destroy();
        return;
      }
    }
    this.opts.handler({
      id,
      socket: conn,
      clientIp,
      clientPort,
      secure: config.tls === 'implicit',
      initialData,
      listener: config,
    });
  }
}
