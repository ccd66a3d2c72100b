import net from 'node:net';
import tls from 'node:tls';
import { encodeProxyV1, encodeProxyV2, type ProxyHeader } from '../../src/net/proxy-protocol.js';
import { LOAD_BALANCER_IP } from './gateway.js';

/**
 * A raw line client for conversation tests: it writes exactly the bytes a test gives and
 * collects every line the server sends, so tests can assert on the wire.
 */
export class RawClient {
  socket: net.Socket;
  #buf = '';
  readonly lines: string[] = [];
  #closed = false;
  #waiters: Array<() => void> = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.#listen(socket);
  }

  #listen(socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.#buf += d;
      let i = this.#buf.indexOf('\n');
      while (i >= 0) {
        this.lines.push(this.#buf.slice(0, i).replace(/\r$/, ''));
        this.#buf = this.#buf.slice(i + 1);
        i = this.#buf.indexOf('\n');
      }
      this.#wake();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#wake();
    });
    socket.on('error', () => {});
  }

  #wake() {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** `localAddress` picks the source address, e.g. a trusted load balancer's for PROXY headers. */
  static connect(
    port: number,
    opts: { tls?: boolean; prefix?: Buffer | string; host?: string; localAddress?: string } = {},
  ): Promise<RawClient> {
    const host = opts.host ?? '127.0.0.1';
    return new Promise((resolve, reject) => {
      const target = opts.localAddress ? { host, port, localAddress: opts.localAddress } : { host, port };
      const plain = net.connect(target, () => {
        if (opts.prefix) plain.write(opts.prefix);
        if (!opts.tls) return resolve(new RawClient(plain));
        const secure = tls.connect(
          { socket: plain, rejectUnauthorized: false, servername: 'localhost' },
          () => resolve(new RawClient(secure)),
        );
        secure.once('error', reject);
      });
      plain.once('error', reject);
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Resolves with the first line (at or after index `from`) matching; rejects on close or timeout. */
  async waitFor(pattern: RegExp, opts: { from?: number; timeoutMs?: number } = {}): Promise<string> {
    const deadline = Date.now() + (opts.timeoutMs ?? 5_000);
    for (;;) {
      const hit = this.lines.slice(opts.from ?? 0).find((l) => pattern.test(l));
      if (hit !== undefined) return hit;
      if (this.#closed) throw new Error(`closed before ${pattern}; got:\n${this.lines.join('\n')}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${pattern}; got:\n${this.lines.join('\n')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Sends `tag command` and resolves with the tagged response line. */
  async command(tag: string, command: string): Promise<string> {
    const from = this.lines.length;
    this.write(`${tag} ${command}\r\n`);
    return this.waitFor(new RegExp(`^${tag} (OK|NO|BAD)`), { from });
  }

  async waitClosed(timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#closed) {
      if (Date.now() > deadline) throw new Error('connection still open');
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Upgrades this connection with TLS (after a STARTTLS OK). */
  async startTls(): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    await new Promise<void>((resolve, reject) => {
      const secure = tls.connect({ socket: plain, rejectUnauthorized: false, servername: 'localhost' }, () =>
        resolve(),
      );
      secure.once('error', reject);
      this.socket = secure;
      this.#listen(secure);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** An IMAP quoted string (RFC 9051 §4.3), for test commands. */
export function quote(s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** The PROXY header a load balancer would send for a client at `ip`. */
export function proxyHeaderFor(ip: string): ProxyHeader {
  const v6 = ip.includes(':');
  return {
    command: 'proxy',
    family: v6 ? 'tcp6' : 'tcp4',
    sourceAddress: ip,
    sourcePort: 40000,
    destinationAddress: v6 ? '::1' : '127.0.0.1',
    destinationPort: 993,
  };
}

/**
 * One LOGIN from a client placed at `ip` by a PROXY header sent from the trusted load balancer
 * address; resolves with the tagged reply line.
 */
export async function loginFrom(
  port: number,
  ip: string,
  user: string,
  pass: string,
  opts: { proxyVersion?: 1 | 2; tls?: boolean } = {},
): Promise<string> {
  const header = proxyHeaderFor(ip);
  const prefix = opts.proxyVersion === 1 ? encodeProxyV1(header) : encodeProxyV2(header);
  const c = await RawClient.connect(port, { prefix, tls: opts.tls ?? false, localAddress: LOAD_BALANCER_IP });
  try {
    await c.waitFor(/^\* OK/);
    return await c.command('a', `LOGIN ${quote(user)} ${quote(pass)}`);
  } finally {
    c.close();
  }
}
