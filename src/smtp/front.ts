import { hostname } from 'node:os';
import type { SecureContext } from 'node:tls';
import {
  SMTPServer,
  type SMTPServerAddress,
  type SMTPServerOptions,
  type SMTPServerSession,
} from 'smtp-server';
import type { Authenticator } from '../auth/authenticator.js';
import type { ListenerConfig, SmtpConfig } from '../config/schema.js';
import type { ClientConnection, TlsContext } from '../net/listener.js';
import { looksLikeProxyHeader } from '../net/proxy-protocol.js';
import type { SessionRegistry } from '../net/session-registry.js';
import type { Logger } from '../observability/logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { SHUTTING_DOWN, type SmtpReply, UNTRUSTED_PROXY_HEADER } from './replies.js';
import { Submission } from './submission.js';

/**
 * The SMTP submission front end: smtp-server speaks the protocol (greeting gates, EHLO,
 * STARTTLS, SASL PLAIN/LOGIN steps, pipelining, dot-unstuffing, SIZE), our Listener owns the
 * socket before it (PROXY v1/v2 from trusted peers, implicit TLS, per-IP limit) and hands it
 * over with server.connect(). One SMTPServer per TLS mode, none of them listening itself.
 *
 * Ports: 465 implicit TLS (RFC 8314), 587 STARTTLS (RFC 6409) with AUTH refused before TLS
 * (538, RFC 3207), and `none` (plaintext AUTH) only for a local TLS-terminating front or tests.
 */

export interface SmtpDeps {
  config: SmtpConfig;
  authenticator: Authenticator;
  tls: TlsContext;
  log: Logger;
  clock: () => number;
  sessions?: Pick<SessionRegistry, 'add'>;
  metrics?: Pick<GatewayMetrics, 'sessionOpened' | 'sessionClosed' | 'upstreamError' | 'connectionRefused'>;
}

type Mode = ListenerConfig['tls'];

/** After a shutdown 421, the client gets this long to read it before the socket is destroyed. */
const SHUTDOWN_LINGER_MS = 500;

/**
 * smtp-server's TLS contexts for STARTTLS, always answering with the gateway's current
 * certificate, so that SIGHUP's reload (TlsContext.reload) applies to the next handshake.
 * smtp-server reads `secureContext.get(servername)`, falling back to get('*').
 */
class CurrentContext extends Map<string, SecureContext> {
  constructor(private readonly tls: TlsContext) {
    super();
  }

  override get(_servername: string): SecureContext {
    return this.tls.get();
  }
}

type Callback = (err?: Error | null) => void;

function smtpError(r: SmtpReply): Error {
  return Object.assign(new Error(r.text), { responseCode: r.code });
}

export class SmtpFront {
  readonly #servers = new Map<Mode, SMTPServer>();
  readonly #sessions = new Map<string, Submission>();
  readonly #localName: string;
  #closing = false;

  constructor(private readonly deps: SmtpDeps) {
    this.#localName = deps.config.hostname ?? hostname();
  }

  /** The Listener's handler: a ready client connection, after PROXY header and implicit TLS. */
  handle(conn: ClientConnection): void {
    const { socket } = conn;
    if (this.#closing) {
      this.#refuse(conn, SHUTTING_DOWN);
      return;
    }
    // SMTP clients wait for the greeting; the first bytes of one that does not are checked
    // for a PROXY header from a peer we do not trust (PROXY headers are trusted only from configured peers): refused with a reason, not
    // parsed as commands. A trusted peer's header was read by the Listener already.
    const isProxyHeader = (chunk: Buffer): boolean => {
      if (chunk.length < 6 || !looksLikeProxyHeader(chunk)) return false;
      this.deps.log.info(
        {
          event: 'connection',
          session: conn.id,
          ip: conn.clientIp,
          result: 'refused',
          reason: 'untrusted-proxy-header',
        },
        'PROXY header from a peer not in proxyProtocol.trusted',
      );
      this.deps.metrics?.connectionRefused('smtp', 'untrusted-proxy-header');
      return true;
    };
    if (conn.initialData.length) {
      if (isProxyHeader(conn.initialData)) {
        this.#refuse(conn, UNTRUSTED_PROXY_HEADER);
        return;
      }
      socket.unshift(conn.initialData);
    } else {
      // Registered before smtp-server's own reader, so it sees the first chunk first; once the
      // socket is ended, smtp-server writes nothing more to it.
      socket.once('data', (chunk: Buffer) => {
        if (isProxyHeader(chunk)) this.#refuse(conn, UNTRUSTED_PROXY_HEADER);
      });
    }
    this.#sessions.set(
      conn.id,
      new Submission(conn, {
        config: this.deps.config,
        authenticator: this.deps.authenticator,
        log: this.deps.log,
        clock: this.deps.clock,
        localName: this.#localName,
        ...(this.deps.sessions ? { sessions: this.deps.sessions } : {}),
        ...(this.deps.metrics ? { metrics: this.deps.metrics } : {}),
        kick: (r) => this.#kick(conn.id, r),
      }),
    );
    this.#server(conn.listener.tls).connect(socket, {
      id: conn.id,
      remoteAddress: conn.clientIp,
      remotePort: conn.clientPort,
    });
  }

  #refuse(conn: ClientConnection, r: SmtpReply): void {
    conn.socket.end(`${r.code} ${r.text}\r\n`);
    setTimeout(() => conn.socket.destroy(), SHUTDOWN_LINGER_MS).unref();
  }

  /** Tells every client 421 and closes; a message in DATA is abandoned at the store (never acknowledged). */
  async close(): Promise<void> {
    this.#closing = true;
    for (const server of this.#servers.values()) {
      for (const c of server.connections) c.send(SHUTTING_DOWN.code, SHUTTING_DOWN.text);
    }
    await new Promise((r) => setTimeout(r, this.#sessions.size ? SHUTDOWN_LINGER_MS : 0));
    for (const s of this.#sessions.values()) s.conn.socket.destroy();
  }

  /** Sends the reply on the session's current socket (TLS or not) and closes: 4xx/5xx through smtp-server. */
  #kick(id: string, r: SmtpReply): void {
    for (const server of this.#servers.values()) {
      for (const c of server.connections) {
        if (c.id !== id) continue;
        c.send(r.code, r.text);
        c.close();
        return;
      }
    }
  }

  #server(mode: Mode): SMTPServer {
    let server = this.#servers.get(mode);
    if (!server) {
      server = this.#create(mode);
      this.#servers.set(mode, server);
    }
    return server;
  }

  #create(mode: Mode): SMTPServer {
    const { config, log } = this.deps;
    const limits = config.limits;
    const disabled = ['XCLIENT', 'XFORWARD', 'WIZ', 'SHELL', 'KILL'];
    if (mode !== 'starttls') disabled.push('STARTTLS');
    const options: SMTPServerOptions = {
      // implicit: the Listener did the handshake; `secure` only tells smtp-server the socket
      // it gets is TLS (it does no handshake of its own in connect()).
      secure: mode === 'implicit',
      name: this.#localName,
      logger: false,
      disableReverseLookup: true,
      authMethods: ['PLAIN', 'LOGIN'],
      allowInsecureAuth: mode === 'none',
      hideSTARTTLS: mode !== 'starttls',
      disabledCommands: disabled,
      authRequiredMessage: '5.7.0 Authentication required.',
      size: limits.maxMessageBytes,
      rejectOversized: true,
      maxRecipients: limits.maxRecipientsPerMessage,
      maxAllowedUnauthenticatedCommands: limits.maxUnauthenticatedCommands,
      socketTimeout: limits.idleTimeoutMs,
      onSecure: (_socket, session, cb: Callback) => {
        this.#session(session)?.resetAfterTls();
        cb();
      },
      onAuth: (auth, session, cb) => {
        const sub = this.#session(session);
        if (!sub || this.#closing)
          return cb(null, { responseCode: SHUTTING_DOWN.code, message: SHUTTING_DOWN.text });
        sub
          .auth({
            method: auth.method,
            username: auth.username ?? '',
            password: auth.password ?? '',
            authzid: auth.authzid ?? '',
            helo: session.hostNameAppearsAs || null,
          })
          .then(
            (o) =>
              o.ok
                ? cb(null, { user: o.login })
                : cb(null, { responseCode: o.reply.code, message: o.reply.text }),
            (err: unknown) => this.#internal(session, err, cb),
          );
      },
      onMailFrom: (address: SMTPServerAddress, session, cb: Callback) => {
        const sub = this.#session(session);
        if (!sub) return cb(smtpError(SHUTTING_DOWN));
        const args = address.args || {};
        const size = typeof args.SIZE === 'string' ? args.SIZE : undefined;
        sub
          .mailFrom(address.address, {
            ...(size !== undefined ? { size } : {}),
            ...(session.envelope.bodyType !== undefined ? { bodyType: session.envelope.bodyType } : {}),
            smtpUtf8: session.envelope.smtpUtf8 === true,
          })
          .then(
            (r) => cb(r ? smtpError(r) : null),
            (err: unknown) => this.#internal(session, err, cb),
          );
      },
      onRcptTo: (address: SMTPServerAddress, session, cb: Callback) => {
        const sub = this.#session(session);
        if (!sub) return cb(smtpError(SHUTTING_DOWN));
        sub.rcptTo(address.address, session.envelope.smtpUtf8 === true).then(
          (r) => cb(r ? smtpError(r) : null),
          (err: unknown) => this.#internal(session, err, cb),
        );
      },
      onData: (stream, session, cb) => {
        const sub = this.#session(session);
        if (!sub) return cb(smtpError(SHUTTING_DOWN));
        sub.data(stream).then(
          (o) => (o.ok ? cb(null, o.text) : cb(smtpError(o.reply))),
          (err: unknown) => this.#internal(session, err, cb),
        );
      },
      onClose: (session) => {
        const sub = this.#sessions.get(session.id);
        if (!sub) return;
        this.#sessions.delete(session.id);
        sub.close(this.#closing ? 'shutdown' : 'closed');
      },
    };
    const server = new SMTPServer(options);
    if (mode === 'starttls') server.secureContext = new CurrentContext(this.deps.tls);
    // Connection errors surface here (e.g. a reset mid-transaction); without a listener they
    // would crash the process.
    server.on('error', (err: Error & { code?: string }) => {
      log.debug(
        { event: 'connection', protocol: 'smtp', error: err.message, code: err.code ?? null },
        'smtp error',
      );
    });
    return server;
  }

  #session(session: SMTPServerSession): Submission | undefined {
    return this.#sessions.get(session.id);
  }

  #internal(session: SMTPServerSession, err: unknown, cb: Callback): void {
    this.deps.log.error(
      { event: 'error', session: session.id, protocol: 'smtp', err },
      'SMTP handler failed',
    );
    cb(smtpError({ code: 451, text: '4.3.0 Internal error, please try again later.' }));
  }
}
