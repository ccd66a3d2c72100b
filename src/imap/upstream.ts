import type net from 'node:net';
import tls from 'node:tls';
import type { ImapConfig } from '../config/schema.js';
import { connectUpstream } from '../net/upstream-connect.js';
import { MailgateError } from '../util/errors.js';
import { quoteImapString } from './replies.js';

/**
 * Logging in to the mail store on the client's behalf (docs/rules.md, after the decision), Dovecot login-proxy style:
 * failures are classified before anyone reacts. Only connect failures move on to the next
 * server; a store that refuses the master login or talks nonsense is a temporary failure for
 * this client ([UNAVAILABLE]) and an error for the operator.
 */

export class UpstreamConnectError extends MailgateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MG_UPSTREAM_CONNECT', message, options);
  }
}
export class UpstreamProtocolError extends MailgateError {
  constructor(message: string) {
    super('MG_UPSTREAM_PROTOCOL', message);
  }
}
export class UpstreamAuthError extends MailgateError {
  constructor(message: string) {
    super('MG_UPSTREAM_AUTH', message);
  }
}
export class UpstreamTimeoutError extends MailgateError {
  constructor(message: string) {
    super('MG_UPSTREAM_TIMEOUT', message);
  }
}

/** An upstream response line longer than this is a protocol violation. */
const MAX_UPSTREAM_LINE_BYTES = 64 * 1024;

export interface UpstreamLoginRequest {
  /** HOST:PORT candidates, tried in order on connect failure. */
  servers: readonly string[];
  /** The user name at the store. */
  user: string;
  clientIp: string;
  clientPort: number;
  sessionId: string;
}

export interface UpstreamSession {
  socket: net.Socket;
  server: string;
  /** Post-login capabilities, as the store announced them. */
  capabilities: string;
}

export async function loginUpstream(
  cfg: ImapConfig['upstream'],
  req: UpstreamLoginRequest,
): Promise<UpstreamSession> {
  let lastError: unknown = null;
  for (const server of req.servers) {
    let socket: net.Socket;
    try {
      socket = await connectUpstream(server, cfg, (m, cause) => new UpstreamConnectError(m, { cause }));
    } catch (err) {
      lastError = err;
      continue; // connect failures move on to the next server
    }
    try {
      const capabilities = await converse(cfg, socket, req);
      return { socket, server, capabilities };
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }
  throw lastError ?? new UpstreamConnectError('no upstream servers configured');
}

/** Reads CRLF lines from the upstream, one conversation step at a time. */
class LineReader {
  #buf: Buffer = Buffer.alloc(0);
  #waiter: ((line: string | Error) => void) | null = null;
  #error: Error | null = null;
  readonly #lines: string[] = [];

  constructor(private socket: net.Socket) {
    socket.on('data', this.#onData);
    socket.on('error', this.#onEnd);
    socket.on('close', this.#onEnd);
  }

  #onData = (chunk: Buffer) => {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    for (;;) {
      const nl = this.#buf.indexOf(10);
      if (nl < 0) break;
      const line = this.#buf.subarray(0, nl).toString('utf8').replace(/\r$/, '');
      this.#buf = this.#buf.subarray(nl + 1);
      this.#lines.push(line);
    }
    if (this.#buf.length > MAX_UPSTREAM_LINE_BYTES)
      this.#fail(new UpstreamProtocolError('upstream line too long'));
    this.#deliver();
  };

  #onEnd = (err?: unknown) => {
    this.#fail(
      err instanceof MailgateError
        ? err
        : err instanceof Error
          ? new UpstreamConnectError(`upstream connection failed: ${err.message}`, { cause: err })
          : new UpstreamProtocolError('upstream closed the connection during login'),
    );
  };

  #fail(err: Error) {
    this.#error ??= err;
    this.#deliver();
  }

  #deliver() {
    if (!this.#waiter) return;
    const line = this.#lines.shift();
    if (line !== undefined) {
      const w = this.#waiter;
      this.#waiter = null;
      w(line);
    } else if (this.#error) {
      const w = this.#waiter;
      this.#waiter = null;
      w(this.#error);
    }
  }

  next(): Promise<string> {
    return new Promise((resolve, reject) => {
      this.#waiter = (v) => (v instanceof Error ? reject(v) : resolve(v));
      this.#deliver();
    });
  }

  /** Stops reading; returns any bytes received past the last line. */
  detach(): Buffer {
    this.socket.off('data', this.#onData);
    this.socket.off('error', this.#onEnd);
    this.socket.off('close', this.#onEnd);
    this.socket.pause();
    return this.#buf;
  }
}

const CAPABILITY_CODE = /\[CAPABILITY ([^\]]*)\]/i;

async function converse(
  cfg: ImapConfig['upstream'],
  initial: net.Socket,
  req: UpstreamLoginRequest,
): Promise<string> {
  let socket = initial;
  let reader = new LineReader(socket);
  const deadline = setTimeout(
    () =>
      socket.destroy(new UpstreamTimeoutError(`upstream login did not finish in ${cfg.loginTimeoutMs} ms`)),
    cfg.loginTimeoutMs,
  );
  try {
    const greeting = await reader.next();
    if (!/^\* OK\b/i.test(greeting))
      throw new UpstreamProtocolError(`unexpected upstream greeting: ${greeting.slice(0, 80)}`);
    let caps = CAPABILITY_CODE.exec(greeting)?.[1] ?? (await capability(socket, reader));

    if (cfg.tls === 'starttls') {
      socket.write('S STARTTLS\r\n');
      await expectTagged(reader, 'S', 'STARTTLS');
      reader.detach();
      socket = await upgrade(socket, cfg.tlsVerify);
      reader = new LineReader(socket);
      caps = await capability(socket, reader); // RFC 9051 §6.2.1: capabilities may change after TLS
    }

    // Pipelined: the ID and the login go in one write and are answered in order.
    let out = '';
    if (cfg.forwardClientAddress && /\bID\b/i.test(caps)) {
      // Dovecot honours these only from login_trusted_networks; x-session-ext-id joins its log to ours.
      out += `I ID ("x-originating-ip" ${quoteImapString(req.clientIp)} "x-originating-port" "${req.clientPort}" "x-session-ext-id" ${quoteImapString(req.sessionId)})\r\n`;
    }
    out += loginCommand(cfg.login, req.user, /\bSASL-IR\b/i.test(caps));
    socket.write(out);
    if (out.startsWith('I ID')) await expectTagged(reader, 'I', 'ID', true);

    let postLogin: string | undefined;
    for (;;) {
      const line = await reader.next();
      if (line.startsWith('+')) throw new UpstreamProtocolError('upstream asked for a SASL continuation');
      if (/^\* CAPABILITY /i.test(line)) postLogin = line.slice(13);
      if (line.startsWith('L ')) {
        if (/^L OK\b/i.test(line)) {
          postLogin = CAPABILITY_CODE.exec(line)?.[1] ?? postLogin;
          break;
        }
        // Do not log the line as is: a store may echo the user name, never a secret, but keep it short.
        throw new UpstreamAuthError(`upstream refused the login for ${req.user}: ${line.slice(2, 120)}`);
      }
    }
    postLogin ??= await capability(socket, reader);
    const rest = reader.detach();
    if (rest.length) socket.unshift(rest);
    return postLogin;
  } finally {
    clearTimeout(deadline);
  }
}

function loginCommand(login: ImapConfig['upstream']['login'], user: string, saslIr: boolean): string {
  switch (login.style) {
    case 'master':
      return `L LOGIN ${quoteImapString(`${user}${login.separator}${login.user}`)} ${quoteImapString(login.password)}\r\n`;
    case 'plain-authzid': {
      // RFC 4616: authzid NUL authcid NUL passwd
      const ir = Buffer.from(`${user}\0${login.user}\0${login.password}`, 'utf8').toString('base64');
      if (!saslIr)
        throw new UpstreamProtocolError('upstream does not announce SASL-IR, needed for plain-authzid');
      return `L AUTHENTICATE PLAIN ${ir}\r\n`;
    }
  }
}

async function capability(socket: net.Socket, reader: LineReader): Promise<string> {
  socket.write('C CAPABILITY\r\n');
  let caps: string | undefined;
  for (;;) {
    const line = await reader.next();
    if (/^\* CAPABILITY /i.test(line)) caps = line.slice(13);
    else if (line.startsWith('C ')) {
      if (!/^C OK\b/i.test(line) || caps === undefined)
        throw new UpstreamProtocolError('upstream CAPABILITY failed');
      return caps;
    }
  }
}

async function expectTagged(
  reader: LineReader,
  tag: string,
  what: string,
  tolerateNo = false,
): Promise<void> {
  for (;;) {
    const line = await reader.next();
    if (!line.startsWith(`${tag} `)) continue;
    if (/^\S+ OK\b/i.test(line) || (tolerateNo && /^\S+ NO\b/i.test(line))) return;
    throw new UpstreamProtocolError(`upstream ${what} failed: ${line.slice(0, 120)}`);
  }
}

function upgrade(socket: net.Socket, verify: boolean): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ socket, rejectUnauthorized: verify }, () => resolve(secure));
    secure.once('error', (err) =>
      reject(new UpstreamProtocolError(`upstream STARTTLS failed: ${err.message}`)),
    );
  });
}
