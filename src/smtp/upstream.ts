import net from 'node:net';
import type { Readable } from 'node:stream';
import tls from 'node:tls';
import type { SmtpUpstreamConfig } from '../config/schema.js';
import { connectUpstream } from '../net/upstream-connect.js';
import { MailgateError } from '../util/errors.js';
import { DotStuffer } from './dot-stuffing.js';

/**
 * A small streaming SMTP client for the mail store (docs/rules.md, after the decision): one connection per client
 * session, the user identified by XCLIENT or a master AUTH, then one command at a time, each
 * reply returned as a value so the front end can pass it on to the client unchanged.
 *
 * Not nodemailer's SMTPConnection: its send() runs a whole transaction (MAIL, every RCPT,
 * DATA) in one call and only reports rejected recipients at the end, while a relay has to
 * answer each of the client's RCPT commands with the store's own answer before the client
 * sends the message; and it has no XCLIENT.
 *
 * Failures are classified before anyone reacts (as in imap/upstream.ts): connect failures
 * move on to the next server; everything else ends this upstream connection with a coded
 * error. A 4xx/5xx reply is not an error: it is the store's answer, for the client.
 */

export class SmtpUpstreamConnectError extends MailgateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MG_SMTP_UPSTREAM_CONNECT', message, options);
  }
}
export class SmtpUpstreamProtocolError extends MailgateError {
  constructor(message: string) {
    super('MG_SMTP_UPSTREAM_PROTOCOL', message);
  }
}
/** The store refused to let the gateway act for the user (XCLIENT or master AUTH refused). */
export class SmtpUpstreamAuthError extends MailgateError {
  constructor(message: string) {
    super('MG_SMTP_UPSTREAM_AUTH', message);
  }
}
export class SmtpUpstreamTimeoutError extends MailgateError {
  constructor(message: string) {
    super('MG_SMTP_UPSTREAM_TIMEOUT', message);
  }
}
/** The store's connection ended (or it announced 421) while the gateway needed it. */
export class SmtpUpstreamClosedError extends MailgateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MG_SMTP_UPSTREAM_CLOSED', message, options);
  }
}
/** The client's message stream ended without its final dot: the transaction was abandoned. */
export class SmtpClientAbortedError extends MailgateError {
  constructor(message: string) {
    super('MG_SMTP_CLIENT_ABORTED', message);
  }
}
/** The message grew past the size limit; the store's transaction was abandoned. */
export class SmtpMessageTooLargeError extends MailgateError {
  constructor(message: string) {
    super('MG_SMTP_MESSAGE_TOO_LARGE', message);
  }
}

/** A reply line longer than this is a protocol violation (RFC 5321 §4.5.3.1.5 says 512). */
const MAX_REPLY_LINE_BYTES = 16 * 1024;
/** Lines in one multi-line reply (EHLO has about a dozen). */
const MAX_REPLY_LINES = 200;
/** After QUIT, the store gets this long to close before the socket is destroyed. */
const QUIT_LINGER_MS = 2_000;

export interface UpstreamReply {
  code: number;
  /** The text of each line, after "250-" / "250 ". */
  lines: string[];
}

/** One line for the client: the first line's text (enhanced code included), then the rest. */
export function replyText(r: UpstreamReply): string {
  const [first = '', ...rest] = r.lines;
  return [first, ...rest.map((l) => l.replace(/^\d\.\d{1,3}\.\d{1,3} /, ''))].join(' ').trim();
}

export function isPositive(r: UpstreamReply): boolean {
  return r.code >= 200 && r.code < 400;
}

/** Reads SMTP replies (RFC 5321 §4.2: "250-" continues, "250 " ends) from the store. */
class ReplyReader {
  #buf: Buffer = Buffer.alloc(0);
  #lines: string[] = [];
  #replies: UpstreamReply[] = [];
  #waiter: ((r: UpstreamReply | Error) => void) | null = null;
  #error: Error | null = null;

  constructor(private socket: net.Socket) {
    socket.on('data', this.#onData);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
  }

  get pending(): number {
    return this.#replies.length;
  }

  get failed(): boolean {
    return this.#error !== null;
  }

  #onData = (chunk: Buffer) => {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    for (;;) {
      const nl = this.#buf.indexOf(10);
      if (nl < 0) break;
      const line = this.#buf.subarray(0, nl).toString('utf8').replace(/\r$/, '');
      this.#buf = this.#buf.subarray(nl + 1);
      const m = /^(\d{3})([ -]|$)(.*)$/.exec(line);
      if (!m) return this.#fail(new SmtpUpstreamProtocolError(`malformed reply line: ${line.slice(0, 80)}`));
      this.#lines.push(m[3] ?? '');
      if (this.#lines.length > MAX_REPLY_LINES)
        return this.#fail(new SmtpUpstreamProtocolError('reply has too many lines'));
      if (m[2] !== '-') {
        this.#replies.push({ code: Number(m[1]), lines: this.#lines });
        this.#lines = [];
      }
    }
    if (this.#buf.length > MAX_REPLY_LINE_BYTES)
      return this.#fail(new SmtpUpstreamProtocolError('reply line too long'));
    this.#deliver();
  };

  #onError = (err: Error) => {
    this.#fail(
      err instanceof MailgateError
        ? err
        : new SmtpUpstreamClosedError(`connection to the mail server failed: ${err.message}`, { cause: err }),
    );
  };

  #onClose = () => this.#fail(new SmtpUpstreamClosedError('the mail server closed the connection'));

  #fail(err: Error) {
    this.#error ??= err;
    this.socket.destroy();
    this.#deliver();
  }

  #deliver() {
    if (!this.#waiter) return;
    const next = this.#replies.shift() ?? this.#error;
    if (!next) return;
    const w = this.#waiter;
    this.#waiter = null;
    w(next);
  }

  next(timeoutMs: number, what: string): Promise<UpstreamReply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = null;
        const err = new SmtpUpstreamTimeoutError(`no reply to ${what} within ${timeoutMs} ms`);
        this.#fail(err);
        reject(err);
      }, timeoutMs);
      this.#waiter = (v) => {
        clearTimeout(timer);
        if (v instanceof Error) reject(v);
        else resolve(v);
      };
      this.#deliver();
    });
  }

  /** Stops reading (before a TLS upgrade); bytes after the last reply are a protocol error. */
  detach(): void {
    this.socket.off('data', this.#onData);
    this.socket.off('error', this.#onError);
    this.socket.off('close', this.#onClose);
    if (this.#buf.length || this.#replies.length)
      throw new SmtpUpstreamProtocolError('mail server sent data after its STARTTLS reply');
  }
}

export interface SmtpUpstreamRequest {
  /** HOST:PORT candidates, tried in order on connect failure. */
  servers: readonly string[];
  /** The user name at the store (XCLIENT LOGIN, or the authzid of the master AUTH). */
  user: string;
  clientIp: string;
  clientPort: number;
  /** The client's EHLO/HELO argument, if it gave a usable one. */
  clientHelo: string | null;
  /** The gateway's own name, for EHLO before XCLIENT. */
  localName: string;
}

/** An EHLO argument the store can take verbatim: printable ASCII, no spaces. */
const HELO_RE = /^[\x21-\x7e]{1,255}$/;

export class SmtpUpstream {
  readonly #cfg: SmtpUpstreamConfig;
  #socket: net.Socket;
  #reader: ReplyReader;
  #extensions = new Map<string, string>();
  #closed = false;

  private constructor(
    cfg: SmtpUpstreamConfig,
    socket: net.Socket,
    readonly server: string,
  ) {
    this.#cfg = cfg;
    this.#socket = socket;
    this.#reader = new ReplyReader(socket);
    socket.once('close', () => {
      this.#closed = true;
    });
  }

  /** Connects to the first server that answers and identifies the user (XCLIENT or master AUTH). */
  static async open(cfg: SmtpUpstreamConfig, req: SmtpUpstreamRequest): Promise<SmtpUpstream> {
    let lastError: unknown = new SmtpUpstreamConnectError('no upstream servers configured');
    for (const server of req.servers) {
      let up: SmtpUpstream;
      try {
        up = new SmtpUpstream(
          cfg,
          await connectUpstream(server, cfg, (m, cause) => new SmtpUpstreamConnectError(m, { cause })),
          server,
        );
        // A store that cannot greet (421 while it starts or is overloaded) counts as not
        // reachable: the next server may do better.
        await up.#greeting();
      } catch (err) {
        lastError = err;
        continue;
      }
      try {
        await up.#login(req);
        return up;
      } catch (err) {
        up.destroy();
        throw err;
      }
    }
    throw lastError;
  }

  /** Usable for a new command: connected, and nothing unsolicited (such as a 421) arrived. */
  get alive(): boolean {
    return !this.#closed && !this.#reader.failed && this.#reader.pending === 0;
  }

  /** The value of an EHLO keyword (upper case), '' for one without parameters, undefined if absent. */
  extension(keyword: string): string | undefined {
    return this.#extensions.get(keyword);
  }

  async #greeting(): Promise<void> {
    const greeting = await this.#reader.next(this.#cfg.loginTimeoutMs, 'the connection');
    if (greeting.code !== 220) {
      this.destroy();
      throw new SmtpUpstreamConnectError(
        `${this.server} greeted with ${greeting.code} ${replyText(greeting)}`,
      );
    }
  }

  async #login(req: SmtpUpstreamRequest): Promise<void> {
    const t = this.#cfg.loginTimeoutMs;
    await this.#ehlo(req.localName, t);
    if (this.#cfg.tls === 'starttls') {
      if (this.#extensions.get('STARTTLS') === undefined)
        throw new SmtpUpstreamProtocolError(`${this.server} does not offer STARTTLS`);
      const r = await this.command('STARTTLS', t);
      if (r.code !== 220) throw new SmtpUpstreamProtocolError(`STARTTLS refused: ${r.code} ${replyText(r)}`);
      this.#reader.detach();
      this.#socket = await upgrade(this.#socket, this.#cfg.tlsVerify, this.server, t);
      this.#reader = new ReplyReader(this.#socket);
      this.#socket.once('close', () => {
        this.#closed = true;
      });
      await this.#ehlo(req.localName, t); // RFC 3207 §4.2: forget what was learnt before TLS
    }
    const helo = req.clientHelo !== null && HELO_RE.test(req.clientHelo) ? req.clientHelo : req.localName;
    const login = this.#cfg.login;
    switch (login.style) {
      case 'xclient': {
        const offered = this.#extensions.get('XCLIENT');
        if (offered === undefined)
          throw new SmtpUpstreamAuthError(
            `${this.server} does not offer XCLIENT to the gateway (smtpd_authorized_xclient_hosts)`,
          );
        const r = await this.command(`XCLIENT ${xclientAttributes(offered, req, helo)}`, t);
        // XCLIENT_README: success starts a new session with a new greeting.
        if (r.code !== 220) throw new SmtpUpstreamAuthError(`XCLIENT refused: ${r.code} ${replyText(r)}`);
        await this.#ehlo(helo, t);
        break;
      }
      case 'master': {
        const forward = this.#extensions.get('XFORWARD');
        if (forward !== undefined) {
          // Only for the store's logs (XFORWARD_README); a refusal changes nothing.
          await this.command(`XFORWARD ${xclientAttributes(forward, { ...req, user: '' }, helo)}`, t);
        }
        const mechanisms = (this.#extensions.get('AUTH') ?? '').toUpperCase().split(/\s+/);
        if (!mechanisms.includes('PLAIN'))
          throw new SmtpUpstreamAuthError(`${this.server} does not offer AUTH PLAIN`);
        // RFC 4616: authzid NUL authcid NUL passwd. Never logged.
        const ir = Buffer.from(`${req.user}\0${login.user}\0${login.password}`, 'utf8').toString('base64');
        const r = await this.command(`AUTH PLAIN ${ir}`, t);
        if (r.code !== 235)
          throw new SmtpUpstreamAuthError(`master AUTH for ${req.user} refused: ${r.code} ${replyText(r)}`);
        break;
      }
    }
  }

  async #ehlo(name: string, timeoutMs: number): Promise<void> {
    const r = await this.command(`EHLO ${name}`, timeoutMs);
    if (r.code !== 250) throw new SmtpUpstreamProtocolError(`EHLO refused: ${r.code} ${replyText(r)}`);
    this.#extensions = new Map();
    for (const line of r.lines.slice(1)) {
      const [keyword = '', ...params] = line.trim().split(/\s+/);
      this.#extensions.set(keyword.toUpperCase(), params.join(' '));
    }
  }

  /** Sends one command line and returns the store's reply (any code). */
  async command(line: string, timeoutMs = this.#cfg.replyTimeoutMs): Promise<UpstreamReply> {
    if (!this.alive) {
      this.destroy();
      throw new SmtpUpstreamClosedError('the mail server connection is no longer usable');
    }
    this.#socket.write(`${line}\r\n`);
    const r = await this.#reader.next(timeoutMs, line.split(' ', 1)[0] ?? 'command');
    // 421: the store is closing this connection (RFC 5321 §3.8), whatever the command was.
    if (r.code === 421) this.destroy();
    return r;
  }

  /**
   * Streams the message after the store's 354: stuffed, with back-pressure both ways, then
   * the final dot, then the store's reply. The final dot is written only after the source's
   * 'end', which smtp-server emits only when the client's own final dot arrived; if the source
   * is destroyed instead (the client went away) or grows past maxBytes, the store's connection
   * is destroyed before any final dot, so the store discards the partial message.
   */
  streamMessage(source: Readable, opts: { maxBytes: number }): Promise<UpstreamReply> {
    const socket = this.#socket;
    const stuffer = new DotStuffer();
    return new Promise<UpstreamReply>((resolve, reject) => {
      let settled = false;
      const cleanup = () => {
        source.off('data', onData);
        source.off('end', onEnd);
        source.off('close', onSourceClose);
        source.off('error', onSourceError);
        socket.off('close', onSocketClose);
        socket.off('drain', onDrain);
      };
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        cleanup();
        this.destroy();
        // Whatever the client still sends of this message is read and dropped, so that
        // smtp-server reaches the final dot and can answer.
        if (!source.destroyed) source.resume();
        reject(err);
      };
      const onDrain = () => source.resume();
      const onData = (chunk: Buffer) => {
        if (stuffer.bytes + chunk.length > opts.maxBytes) {
          fail(new SmtpMessageTooLargeError(`message larger than ${opts.maxBytes} bytes`));
          return;
        }
        if (!socket.write(stuffer.push(chunk))) {
          source.pause();
          socket.once('drain', onDrain);
        }
      };
      const onEnd = () => {
        if (settled) return;
        settled = true;
        cleanup();
        socket.write(stuffer.end());
        this.#reader.next(this.#cfg.dataTimeoutMs, 'the end of the message').then((r) => {
          if (r.code === 421) this.destroy();
          resolve(r);
        }, reject);
      };
      const onSourceClose = () => {
        // 'close' without 'end' first: smtp-server destroyed the stream (client gone).
        if (!source.readableEnded) fail(new SmtpClientAbortedError('client went away during DATA'));
      };
      const onSourceError = (err: Error) =>
        fail(new SmtpClientAbortedError(`client stream failed: ${err.message}`));
      const onSocketClose = () =>
        fail(new SmtpUpstreamClosedError('the mail server closed the connection during DATA'));
      source.on('data', onData);
      source.once('end', onEnd);
      source.once('close', onSourceClose);
      source.once('error', onSourceError);
      socket.once('close', onSocketClose);
      if (source.destroyed && !source.readableEnded) onSourceClose();
      else if (this.#closed) onSocketClose();
    });
  }

  /** Ends the session politely: QUIT, then close; a store that lingers is cut off. */
  quit(): void {
    if (this.#closed) return;
    this.#closed = true;
    const socket = this.#socket;
    socket.end('QUIT\r\n');
    setTimeout(() => socket.destroy(), QUIT_LINGER_MS).unref();
  }

  destroy(): void {
    this.#closed = true;
    this.#socket.destroy();
  }
}

/** xtext (RFC 3461 §4): "+" and "=", controls, space and non-ASCII as +HH ("[UNAVAILABLE]" is unchanged). */
export function xtext(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    out +=
      byte < 0x21 || byte > 0x7e || byte === 0x2b || byte === 0x3d
        ? `+${byte.toString(16).toUpperCase().padStart(2, '0')}`
        : String.fromCharCode(byte);
  }
  return out;
}

/**
 * XCLIENT (or XFORWARD) attributes for the client, limited to those the store offers
 * (Postfix XCLIENT_README): ADDR with the IPV6: prefix for IPv6, NAME unavailable (the
 * gateway does no reverse lookups), the client's HELO name, LOGIN the user at the store.
 */
export function xclientAttributes(
  offered: string,
  req: Omit<SmtpUpstreamRequest, 'servers'>,
  helo: string,
): string {
  const names = new Set(offered.toUpperCase().split(/\s+/));
  const attrs: Array<[string, string]> = [
    ['ADDR', net.isIPv6(req.clientIp) ? `IPV6:${req.clientIp}` : req.clientIp],
    ['PORT', String(req.clientPort)],
    ['NAME', '[UNAVAILABLE]'],
    ['HELO', helo],
    ['PROTO', 'ESMTP'],
  ];
  if (req.user) attrs.push(['LOGIN', req.user]);
  return attrs
    .filter(([k]) => names.has(k))
    .map(([k, v]) => `${k}=${xtext(v)}`)
    .join(' ');
}

function upgrade(
  socket: net.Socket,
  verify: boolean,
  server: string,
  timeoutMs: number,
): Promise<net.Socket> {
  const host = server.replace(/^\[?([^\]]+?)\]?:\d+$/, '$1');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => secure.destroy(new Error('TLS handshake timed out')), timeoutMs);
    const secure = tls.connect(
      { socket, rejectUnauthorized: verify, servername: net.isIP(host) ? '' : host },
      () => {
        clearTimeout(timer);
        secure.off('error', onError);
        resolve(secure);
      },
    );
    const onError = (err: Error) => {
      clearTimeout(timer);
      secure.destroy();
      reject(new SmtpUpstreamProtocolError(`STARTTLS to ${server} failed: ${err.message}`));
    };
    secure.once('error', onError);
  });
}
