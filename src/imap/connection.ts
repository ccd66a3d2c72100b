import type net from 'node:net';
import type { Authenticator, AuthResult } from '../auth/authenticator.js';
import type { ImapConfig } from '../config/schema.js';
import type { ClientConnection, TlsContext } from '../net/listener.js';
import { looksLikeProxyHeader } from '../net/proxy-protocol.js';
import type { SessionRegistry } from '../net/session-registry.js';
import { ignoreErrors, splice } from '../net/splice.js';
import type { Logger } from '../observability/logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { MailgateError } from '../util/errors.js';
import { ImapCommandReader, type ReaderEvent } from './parser.js';
import { TEMP_FAILED } from './replies.js';
import { type Action, ImapSession } from './session.js';
import { loginUpstream, type UpstreamSession } from './upstream.js';

/**
 * The one driver that owns a client socket: it feeds bytes to the reader, events to the
 * session, carries out the session's actions, and after a successful login joins the client
 * to its mail store with back-pressure (stream.pipe both ways).
 */

/** After the store closes, the client gets this long to take the last bytes. */
const CLIENT_DRAIN_TIMEOUT_MS = 30_000;

export interface ImapDeps {
  config: ImapConfig;
  sessions: SessionRegistry;
  authenticator: Authenticator;
  tls: TlsContext;
  log: Logger;
  clock: () => number;
  metrics?: Pick<GatewayMetrics, 'sessionOpened' | 'sessionClosed' | 'upstreamError' | 'connectionRefused'>;
}

export function handleImapConnection(conn: ClientConnection, deps: ImapDeps): void {
  new ImapConnection(conn, deps).start();
}

class ImapConnection {
  socket: net.Socket;
  readonly session: ImapSession;
  readonly reader: ImapCommandReader;
  readonly started: number;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  #sawData = false;
  /** Waiting for the authenticator, a TLS handshake or the store: input stays in the kernel. */
  #busy = false;
  /**
   * Reply lines not yet written: everything one input produces leaves in one write (one TCP
   * segment, one TLS record) instead of one per line. Flushed before any other action, so
   * STARTTLS's OK goes out in plaintext before the handshake and a BYE before the close.
   */
  #out = '';
  /** Inside #process: replies wait for the end of the input, then go out together. */
  #batching = false;

  constructor(
    readonly conn: ClientConnection,
    readonly deps: ImapDeps,
  ) {
    this.socket = conn.socket;
    const limits = deps.config.limits;
    this.session = new ImapSession({ tlsMode: conn.listener.tls, limits, greeting: deps.config.greeting });
    this.session.secure = conn.secure;
    this.reader = new ImapCommandReader({
      maxLineBytes: limits.maxLineBytes,
      maxLiteralBytes: limits.maxLiteralBytes,
    });
    this.started = deps.clock();
  }

  start(): void {
    this.#timer = setTimeout(
      () => this.#run(this.session.onTimeout()),
      this.deps.config.limits.preauthTimeoutMs,
    );
    this.#attach(this.socket);
    this.#batching = true;
    this.#run(this.session.greet());
    this.#batching = false;
    if (this.conn.initialData.length) this.#onData(this.conn.initialData);
    else this.#flush();
    if (!this.#closed && !this.#busy) this.socket.resume();
  }

  #attach(socket: net.Socket) {
    socket.on('data', this.#onData);
    socket.on('close', this.#onClose);
    ignoreErrors(socket); // reported through 'close'
  }

  #detach(socket: net.Socket) {
    socket.off('data', this.#onData);
    socket.off('close', this.#onClose);
  }

  #onData = (chunk: Buffer) => {
    if (!this.#sawData) {
      this.#sawData = true;
      // A PROXY header here was not expected from this peer (PROXY headers are trusted only from configured peers): refuse, do not parse it as IMAP.
      if (chunk.length >= 6 && looksLikeProxyHeader(chunk)) {
        this.deps.log.info(
          {
            event: 'connection',
            session: this.conn.id,
            ip: this.conn.clientIp,
            result: 'refused',
            reason: 'untrusted-proxy-header',
          },
          'PROXY header from a peer not in proxyProtocol.trusted',
        );
        this.deps.metrics?.connectionRefused('imap', 'untrusted-proxy-header');
        this.#run([
          { type: 'send', line: '* BYE PROXY protocol header not accepted from this address.' },
          { type: 'close', reason: 'untrusted-proxy-header' },
        ]);
        return;
      }
    }
    this.#process(this.reader.push(chunk));
  };

  #process(events: ReaderEvent[]): void {
    let pending = events;
    this.#batching = true;
    while (!this.#closed && !this.#busy && pending.length) {
      for (const ev of pending) this.#run(this.session.onEvent(ev));
      // The reader holds after a command or line; it continues only when nothing is in flight.
      pending = !this.#closed && !this.#busy && this.reader.paused ? this.reader.resume() : [];
    }
    this.#batching = false;
    this.#flush();
  }

  #flush(): void {
    if (this.#out.length === 0) return;
    const out = this.#out;
    this.#out = '';
    if (!this.#closed) this.socket.write(out);
  }

  #run(actions: Action[]): void {
    for (const action of actions) {
      if (this.#closed) return;
      if (action.type === 'send') {
        this.#out += `${action.line}\r\n`;
        continue;
      }
      this.#flush();
      switch (action.type) {
        case 'line-mode':
          this.reader.setLineMode(action.on);
          break;
        case 'close':
          this.#finish(action.reason);
          return;
        case 'start-tls':
          void this.#startTls();
          return;
        case 'authenticate':
          void this.#authenticate(action.tag, action.credentials.login, action.credentials.password);
          return;
      }
    }
    if (!this.#batching) this.#flush();
  }

  async #startTls(): Promise<void> {
    this.#busy = true;
    const plain = this.socket;
    plain.pause();
    this.#detach(plain);
    // RFC 9051 §6.2.1: anything the client pipelined after STARTTLS is discarded, not executed.
    this.reader.takeBuffered();
    try {
      this.socket = await this.deps.tls.upgrade(plain);
    } catch (err) {
      this.#log('tls-failed', { error: (err as Error).message });
      plain.destroy();
      this.#finish('tls-failed');
      return;
    }
    this.#busy = false;
    this.#attach(this.socket);
    this.#process(this.reader.resume());
    if (!this.#closed && !this.#busy) this.socket.resume();
  }

  async #authenticate(tag: string, login: string, password: Buffer): Promise<void> {
    this.#busy = true;
    this.socket.pause();
    const result: AuthResult = await this.deps.authenticator.authenticate({
      login,
      password,
      protocol: 'imap',
      clientIp: this.conn.clientIp,
      sessionId: this.conn.id,
    });
    password.fill(0);
    if (this.#closed) return;
    if (result.kind !== 'allow') {
      // Tarpit: a source that keeps failing waits for its answer (nothing else is read meanwhile).
      if (result.kind === 'deny' && result.delayMs > 0)
        await new Promise((r) => setTimeout(r, result.delayMs));
      if (this.#closed) return;
      this.#busy = false;
      this.#run(this.session.onAuthResult(tag, result));
      if (this.#closed) return;
      this.#process(this.reader.resume());
      if (!this.#closed && !this.#busy) this.socket.resume();
      return;
    }
    this.session.onAuthResult(tag, result);
    const account = result.account;
    let upstream: UpstreamSession;
    try {
      upstream = await loginUpstream(this.deps.config.upstream, {
        servers: account.upstream ? [account.upstream] : this.deps.config.upstream.servers,
        user: account.upstreamUser ?? account.login,
        clientIp: this.conn.clientIp,
        clientPort: this.conn.clientPort,
        sessionId: this.conn.id,
      });
    } catch (err) {
      const code = err instanceof MailgateError ? err.code : 'MG_INTERNAL';
      this.deps.log.error(
        {
          event: 'upstream',
          session: this.conn.id,
          login: account.login,
          code,
          error: (err as Error).message,
        },
        'upstream login failed',
      );
      this.deps.metrics?.upstreamError('imap', code);
      this.socket.write(`${tag} ${TEMP_FAILED}\r\n`);
      this.#finish('upstream-failed');
      return;
    }
    if (this.#closed) {
      upstream.socket.destroy();
      return;
    }
    this.#splice(tag, upstream, account.login, result.credential, result.version);
  }

  #splice(
    tag: string,
    upstream: UpstreamSession,
    login: string,
    credential: 'imap-only' | 'primary',
    version: number,
  ): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#detach(this.socket);
    this.#closed = true; // the IMAP session is over; from here on the streams carry the bytes
    const reply = `${tag} OK [CAPABILITY ${upstream.capabilities}] Logged in\r\n`;
    // Commands the client pipelined after its LOGIN go to the store first, in order (docs/rules.md, after the decision).
    const pipelined = this.reader.takeBuffered();
    joinStore(this.socket, upstream.socket, this.deps, reply, pipelined, {
      id: this.conn.id,
      ip: this.conn.clientIp,
      login,
      credential,
      version,
      upstream: upstream.server,
      started: this.started,
    });
  }

  #onClose = () => {
    if (!this.#closed) this.#finish('client-closed');
  };

  #finish(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.socket.end();
    // Give the last reply a moment to leave, then make sure the socket is gone.
    setTimeout(() => this.socket.destroy(), 1_000).unref();
    this.#log(reason, {});
  }

  #log(reason: string, extra: Record<string, unknown>): void {
    this.deps.log.info(
      {
        event: 'session',
        session: this.conn.id,
        ip: this.conn.clientIp,
        protocol: 'imap',
        result: 'closed-before-login',
        reason,
        ms: this.deps.clock() - this.started,
        ...extra,
      },
      'connection closed',
    );
  }
}

/**
 * After the login: the client and its store joined both ways (net/splice.ts), the session
 * registered so a credential change can end it, and one log line when it ends. Written as a
 * function of what the session still needs, so the connection object, its reader and the
 * store's greeting are garbage once the streams carry the bytes (memory per idle session).
 */
function joinStore(
  client: net.Socket,
  store: net.Socket,
  deps: ImapDeps,
  reply: string,
  pipelined: Buffer,
  s: {
    id: string;
    ip: string;
    login: string;
    credential: 'imap-only' | 'primary';
    version: number;
    upstream: string;
    started: number;
  },
): void {
  client.write(reply);
  if (pipelined.length) store.write(pipelined);
  deps.metrics?.sessionOpened('imap');
  splice(client, store);
  const clientIn = client.bytesRead;
  const clientOut = client.bytesWritten;
  let closedBy: 'client' | 'upstream' | 'credential-changed' | null = null;
  const unregister = deps.sessions.add({
    id: s.id,
    login: s.login,
    credential: s.credential,
    version: s.version,
    // The credential this session logged in with was replaced or revoked (rules.md R4): end it. No
    // BYE: a line injected into the stream could land inside a literal the store is sending.
    close: (reason) => {
      closedBy ??= reason === 'credential-changed' ? 'credential-changed' : 'upstream';
      client.destroy();
      store.destroy();
    },
  });
  // The store hung up (LOGOUT, shutdown): the client is ended once the bytes already read are
  // written, so a slow client still gets the end of its FETCH and the BYE. Destroy it only if
  // it never drains.
  let drain: NodeJS.Timeout | null = null;
  // 'close' comes once: on() rather than once(), which wraps each listener in a bound function.
  store.on('close', () => {
    closedBy ??= 'upstream';
    if (!client.writableEnded) client.end();
    if (!client.destroyed) drain = setTimeout(() => client.destroy(), CLIENT_DRAIN_TIMEOUT_MS).unref();
  });
  client.on('close', () => {
    if (drain) clearTimeout(drain);
    closedBy ??= 'client';
    unregister();
    store.destroy();
    deps.metrics?.sessionClosed('imap');
    deps.log.info(
      {
        event: 'session',
        session: s.id,
        login: s.login,
        ip: s.ip,
        protocol: 'imap',
        credential: s.credential,
        upstream: s.upstream,
        closedBy,
        bytesIn: client.bytesRead - clientIn,
        bytesOut: client.bytesWritten - clientOut,
        ms: deps.clock() - s.started,
      },
      'session closed',
    );
  });
  client.resume();
  store.resume();
}
