import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import type { DovecotServer } from '../../src/devenv/servers.js';
import { encodeProxyV1, encodeProxyV2, type ProxyHeader } from '../../src/net/proxy-protocol.js';
import { LOAD_BALANCER_IP } from './gateway.js';
import { RawClient } from './raw-client.js';

/** Helpers for SMTP end-to-end tests: a raw SMTP conversation, and where a message ended up. */

export const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

export const plain = (user: string, password: string): string =>
  `AUTH PLAIN ${b64(`\0${user}\0${password}`)}`;

/** Sends one command and resolves with the final line of its reply ("250 ..." after "250-..."). */
export async function smtpCommand(c: RawClient, line: string, timeoutMs = 10_000): Promise<string> {
  const from = c.lines.length;
  c.write(`${line}\r\n`);
  return c.waitFor(/^\d{3}( |$)/, { from, timeoutMs });
}

/** The next final reply line after index `from` (for replies to pipelined commands). */
export function replyAt(c: RawClient, from: number, timeoutMs = 10_000): Promise<string> {
  return c.waitFor(/^\d{3}( |$)/, { from, timeoutMs });
}

const proxyHeader = (ip: string, port: number): ProxyHeader => ({
  command: 'proxy',
  family: ip.includes(':') ? 'tcp6' : 'tcp4',
  sourceAddress: ip,
  sourcePort: 40000,
  destinationAddress: ip.includes(':') ? '::1' : '127.0.0.1',
  destinationPort: port,
});

/**
 * Connects to an SMTP listener, reads the greeting and says EHLO. With `from`, the connection
 * comes from the trusted load balancer with a PROXY header (v2 unless `v: 1`) naming that
 * client address.
 */
export async function smtpSession(
  port: number,
  opts: { tls?: boolean; from?: string; v?: 1 | 2; ehlo?: string } = {},
): Promise<RawClient> {
  const prefix =
    opts.from === undefined
      ? undefined
      : opts.v === 1
        ? encodeProxyV1(proxyHeader(opts.from, port))
        : encodeProxyV2(proxyHeader(opts.from, port));
  const c = await RawClient.connect(port, {
    tls: opts.tls ?? false,
    ...(prefix ? { prefix, localAddress: LOAD_BALANCER_IP } : {}),
  });
  await c.waitFor(/^220 /);
  const ehlo = await smtpCommand(c, `EHLO ${opts.ehlo ?? 'client.example'}`);
  if (!ehlo.startsWith('250 ')) throw new Error(`EHLO failed: ${ehlo}`);
  return c;
}

/** Files of a user's Maildir (new and cur) whose content contains `marker`. */
export async function messagesWith(dovecot: DovecotServer, user: string, marker: string): Promise<string[]> {
  const found: string[] = [];
  for (const sub of ['new', 'cur']) {
    const dir = join(dovecot.dir, 'home', user, 'Maildir', sub);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const n of names) {
      const text = await readFile(join(dir, n), 'utf8').catch(() => '');
      if (text.includes(marker)) found.push(text);
    }
  }
  return found;
}

/** Waits until a message containing `marker` was delivered (Postfix delivers after its 250). */
export async function waitForMessage(
  dovecot: DovecotServer,
  user: string,
  marker: string,
  timeoutMs = 10_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [hit] = await messagesWith(dovecot, user, marker);
    if (hit !== undefined) return hit;
    if (Date.now() > deadline) throw new Error(`no message with ${marker} in ${user}'s mailbox`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Subjects of INBOX messages whose subject contains `marker`, read through the IMAP gateway. */
export async function imapSubjects(
  port: number,
  user: string,
  pass: string,
  marker: string,
  timeoutMs = 10_000,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new ImapFlow({
      host: '127.0.0.1',
      port,
      secure: true,
      tls: { rejectUnauthorized: false },
      auth: { user, pass },
      logger: false,
    });
    await client.connect();
    let subjects: string[] = [];
    try {
      const lock = await client.getMailboxLock('INBOX');
      try {
        const uids = (await client.search({ subject: marker }, { uid: true })) || [];
        for (const uid of uids) {
          const msg = await client.fetchOne(String(uid), { envelope: true }, { uid: true });
          const subject = msg ? msg.envelope?.subject : undefined;
          if (subject) subjects.push(subject);
        }
      } finally {
        lock.release();
      }
    } finally {
      await client.logout();
    }
    subjects = subjects.filter((s) => s.includes(marker));
    if (subjects.length > 0 || Date.now() > deadline) return subjects;
    await new Promise((r) => setTimeout(r, 100));
  }
}
