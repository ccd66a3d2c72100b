import { randomBytes } from 'node:crypto';
import { ImapFlow } from 'imapflow';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { LoadtestAccount } from './accounts.js';
import { imapOptions, smtpSocket, type Target } from './connect.js';
import { classifyError, describeError, LoadtestTimeoutError, ScenarioError } from './errors.js';
import type { Recorder, Scenario } from './report.js';

/**
 * The four scenarios, each as the loop of one load-test session (a virtual user). A session
 * asks `permit()` before each iteration: it waits for the rate schedule and answers false once
 * the run is over (duration, count or a signal), so every loop ends by itself.
 *
 *   login  connect, greeting, (STARTTLS,) LOGIN, SELECT INBOX, LOGOUT: an iteration per session
 *   fetch  log in once, then FETCH whole message bodies (BODY.PEEK[]) in turn: an iteration per fetch
 *   idle   log in, SELECT, IDLE until the end: an iteration per session established
 *   smtp   connect, EHLO, (STARTTLS,) AUTH, one message, QUIT: an iteration per message
 */

export interface SessionEnv {
  index: number;
  target: Target;
  timeoutMs: number;
  recorder: Recorder;
  /** The account for the next login (round-robin for login and smtp; fixed per session otherwise). */
  account(): LoadtestAccount;
  /** The PROXY header for a new connection, or null. */
  header(): Buffer | null;
  permit(): Promise<boolean>;
  /** Aborted when the run ends: idle sessions log out, waits end. */
  stop: AbortSignal;
  /** Clients still open, closed by force if the run cannot end otherwise. */
  open: Set<{ close(): void }>;
  messageBytes: number;
  now(): number;
}

const noop = () => {};

/** Rejects with LoadtestTimeoutError after ms; the caller closes the connection. */
async function within<T>(ms: number, p: Promise<T>, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          onTimeout();
          reject(new LoadtestTimeoutError(`no answer within ${ms} ms`));
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Counts a connection as open (progress, peak sessions) until `event` ends it. */
function track(
  env: SessionEnv,
  client: { close(): void; once(event: string, f: () => void): unknown },
  event: string,
) {
  env.open.add(client);
  env.recorder.sessionOpened();
  client.once(event, () => {
    env.open.delete(client);
    env.recorder.sessionClosed();
  });
}

function fail(env: SessionEnv, err: unknown): void {
  env.recorder.error(classifyError(err), describeError(err));
}

/** A new imapflow client, connected and logged in; the login latency is recorded. */
async function imapLogin(env: SessionEnv, account: LoadtestAccount): Promise<ImapFlow> {
  const started = env.now();
  const client = new ImapFlow(
    imapOptions(env.target, env.header(), { user: account.login, pass: account.password }, env.timeoutMs),
  );
  client.on('error', noop); // reported through the failing command instead
  track(env, client, 'close');
  try {
    await within(env.timeoutMs, client.connect(), () => client.close());
  } catch (err) {
    client.close();
    throw err;
  }
  env.recorder.latency('login', env.now() - started);
  env.recorder.login();
  return client;
}

export async function loginSession(env: SessionEnv): Promise<void> {
  while (await env.permit()) {
    const started = env.now();
    let client: ImapFlow | null = null;
    try {
      client = await imapLogin(env, env.account());
      const c = client;
      await within(env.timeoutMs, c.mailboxOpen('INBOX', { readOnly: true }), () => c.close());
      await within(env.timeoutMs, c.logout(), () => c.close());
      env.recorder.latency('session', env.now() - started);
      env.recorder.ok();
    } catch (err) {
      client?.close();
      fail(env, err);
    }
  }
}

/** After a failed login, a fetch or idle session waits this long before it logs in again. */
const RELOGIN_DELAY_MS = 1_000;

export async function fetchSession(env: SessionEnv): Promise<void> {
  const account = env.account();
  let client: ImapFlow | null = null;
  let exists = 0;
  let next = env.index;
  try {
    // An iteration is one FETCH, or a failed attempt to log in for it.
    while (await env.permit()) {
      if (client === null) {
        try {
          client = await imapLogin(env, account);
          const c = client;
          const box = await within(env.timeoutMs, c.mailboxOpen('INBOX', { readOnly: true }), () =>
            c.close(),
          );
          exists = box.exists;
          if (exists === 0) throw new ScenarioError('protocol', 'INBOX is empty: nothing to FETCH');
        } catch (err) {
          client?.close();
          client = null;
          fail(env, err);
          await sleep(RELOGIN_DELAY_MS, env.stop);
          continue;
        }
      }
      const c = client;
      const seq = (next++ % exists) + 1;
      const started = env.now();
      try {
        const msg = await within(env.timeoutMs, c.fetchOne(String(seq), { source: true }), () => c.close());
        if (msg === false || !msg.source)
          throw new ScenarioError('protocol', `FETCH ${seq} returned no body`);
        env.recorder.latency('fetch', env.now() - started);
        env.recorder.bytes(msg.source.length);
        env.recorder.ok();
      } catch (err) {
        fail(env, err);
        if (!c.usable) client = null;
      }
    }
  } finally {
    if (client) {
      const c = client;
      await within(env.timeoutMs, c.logout(), () => c.close()).catch(() => c.close());
    }
  }
}

export async function idleSession(env: SessionEnv): Promise<void> {
  const account = env.account();
  while (!env.stop.aborted && (await env.permit())) {
    let client: ImapFlow;
    try {
      client = await imapLogin(env, account);
      const c = client;
      await within(env.timeoutMs, c.mailboxOpen('INBOX', { readOnly: true }), () => c.close());
    } catch (err) {
      fail(env, err);
      await sleep(RELOGIN_DELAY_MS, env.stop);
      continue;
    }
    env.recorder.ok();
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    client.idle().catch(noop);
    await Promise.race([
      closed,
      new Promise<void>((r) => env.stop.addEventListener('abort', () => r(), { once: true })),
    ]);
    if (env.stop.aborted) {
      const c = client;
      await within(env.timeoutMs, c.logout(), () => c.close()).catch(() => c.close());
      return;
    }
    // The server ended the session before the run did.
    env.recorder.error('closed', 'connection closed while idle');
    await sleep(RELOGIN_DELAY_MS, env.stop);
  }
}

/** A message of about `bytes` bytes, from and to the account (the gateway checks the sender). */
export function testMessage(from: string, to: string, bytes: number): string {
  const id = randomBytes(8).toString('hex');
  const head = [
    `From: <${from}>`,
    `To: <${to}>`,
    `Subject: mailgate loadtest ${id}`,
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: <${id}@loadtest.mailgate.invalid>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    '',
  ].join('\r\n');
  const line = 'The quick brown fox jumps over the lazy dog. 0123456789 mailgate loadtest.\r\n';
  const body = line.repeat(Math.max(1, Math.ceil(Math.max(0, bytes - head.length) / line.length)));
  return head + body;
}

function smtpCall<T>(fn: (cb: (err: Error | null, value?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value as T))));
}

export async function smtpSession(env: SessionEnv): Promise<void> {
  const { target } = env;
  while (await env.permit()) {
    const started = env.now();
    const account = env.account();
    let conn: SMTPConnection | null = null;
    try {
      const socket = await smtpSocket(target, env.header(), env.timeoutMs);
      const servername = target.servername;
      const c = new SMTPConnection({
        connection: socket,
        host: target.host,
        port: target.port,
        secure: target.tls === 'implicit',
        requireTLS: target.tls === 'starttls',
        ignoreTLS: target.tls === 'none',
        ...(servername ? { servername } : {}),
        tls: { rejectUnauthorized: !target.insecure },
        name: 'loadtest.mailgate.invalid',
        connectionTimeout: env.timeoutMs,
        greetingTimeout: env.timeoutMs,
        socketTimeout: env.timeoutMs,
        logger: false,
      });
      conn = c;
      c.on('error', noop);
      track(env, c, 'end');
      await within(
        env.timeoutMs,
        smtpCall<void>((cb) => c.connect(() => cb(null))),
        () => c.close(),
      );
      await within(
        env.timeoutMs,
        smtpCall((cb) => c.login({ user: account.login, pass: account.password }, cb)),
        () => c.close(),
      );
      env.recorder.latency('login', env.now() - started);
      env.recorder.login();
      const sendStarted = env.now();
      const message = testMessage(account.login, account.login, env.messageBytes);
      await within(
        env.timeoutMs,
        smtpCall((cb) => c.send({ from: account.login, to: [account.login] }, message, cb)),
        () => c.close(),
      );
      env.recorder.latency('send', env.now() - sendStarted);
      env.recorder.bytes(message.length);
      env.recorder.message();
      c.quit();
      env.recorder.latency('session', env.now() - started);
      env.recorder.ok();
    } catch (err) {
      conn?.close();
      fail(env, err);
    }
  }
}

export const SCENARIOS: Record<Scenario, (env: SessionEnv) => Promise<void>> = {
  login: loginSession,
  fetch: fetchSession,
  idle: idleSession,
  smtp: smtpSession,
};
