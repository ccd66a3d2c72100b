import net from 'node:net';
import tls from 'node:tls';
import type { ImapFlowOptions } from 'imapflow';
import { encodeProxyV1, encodeProxyV2 } from '../net/proxy-protocol.js';
import type { Source } from './source-mix.js';

/**
 * Opening load-test connections: plain TCP, implicit TLS or STARTTLS, optionally bound to a
 * local address (a load balancer's, which the gateway trusts for PROXY headers) and prefixed
 * with a PROXY protocol header that names a client address drawn from the source mix.
 * imapflow gets a custom transport (its `transport` option) and nodemailer an open socket
 * (`connection`), so that the header goes out before the first byte of IMAP, SMTP or TLS.
 */

export type TlsMode = 'implicit' | 'starttls' | 'none';

export interface Target {
  host: string;
  port: number;
  tls: TlsMode;
  /** SNI and the name the certificate must carry; default: the host when it is not an IP. */
  servername?: string;
  /** Accept any certificate (self-signed test gateways). */
  insecure: boolean;
  localAddress?: string;
}

/** The PROXY header for one connection from `source` to the target (spec §2.1, §2.2). */
export function proxyHeader(version: 1 | 2, source: Source, target: Target, sourcePort: number): Buffer {
  const v6 = source.family === 'tcp6';
  const header = {
    command: 'proxy' as const,
    family: source.family,
    sourceAddress: source.address,
    sourcePort,
    // The gateway reads only the source; the destination must be of the same family.
    destinationAddress: v6 ? '::1' : '127.0.0.1',
    destinationPort: target.port,
  };
  return version === 1 ? encodeProxyV1(header) : encodeProxyV2(header);
}

function tcpConnect(target: Target, header: Buffer | null): net.Socket {
  const socket = net.connect({
    host: target.host,
    port: target.port,
    ...(target.localAddress ? { localAddress: target.localAddress } : {}),
  });
  socket.setNoDelay(true);
  // Written before anything else (queued until the connection is up).
  if (header) socket.write(header);
  return socket;
}

function tlsOptions(
  target: Target,
  socket: net.Socket,
  extra?: tls.ConnectionOptions,
): tls.ConnectionOptions {
  const servername = target.servername ?? (net.isIP(target.host) ? undefined : target.host);
  return {
    ...extra,
    socket,
    ...(servername ? { servername } : {}),
    rejectUnauthorized: !target.insecure,
  };
}

/** imapflow options for one session: where, how, and as whom. */
export function imapOptions(
  target: Target,
  header: Buffer | null,
  auth: { user: string; pass: string },
  timeoutMs: number,
): ImapFlowOptions {
  const transport: NonNullable<ImapFlowOptions['transport']> = {
    connect(options, onConnect) {
      const raw = tcpConnect(target, header);
      if (!options.secure) {
        raw.once('connect', onConnect);
        return raw;
      }
      const secure = tls.connect(tlsOptions(target, raw, options.tls), onConnect);
      raw.once('error', (err) => secure.destroy(err));
      return secure;
    },
    upgrade(socket, options, onSecure) {
      return tls.connect(tlsOptions(target, socket as net.Socket, options.tls), onSecure);
    },
  };
  return {
    host: target.host,
    port: target.port,
    secure: target.tls === 'implicit',
    doSTARTTLS: target.tls === 'starttls',
    auth,
    transport,
    logger: false,
    disableAutoIdle: true,
    disableCompression: true,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
  };
}

/** An open TCP connection (PROXY header sent) for nodemailer's SMTPConnection `connection`. */
export function smtpSocket(target: Target, header: Buffer | null, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(target, header);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    socket.once('error', onError);
  });
}
