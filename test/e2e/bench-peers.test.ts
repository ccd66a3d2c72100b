// scripts/bench's peers, started as the bench starts them: nginx's mail proxy with its auth_http
// responder, and Dovecot as a proxy, each in front of one Dovecot backend, each checking an
// argon2id hash or a plaintext password, over plain and TLS fronts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PasswordHasher } from '../../src/auth/passwords.js';
import { makeCertificate } from '../../src/devenv/cert.js';
import {
  type DovecotServer,
  type NginxAuthResponder,
  type NginxMailProxy,
  startDovecot,
  startNginxAuthResponder,
  startNginxMailProxy,
} from '../../src/devenv/servers.js';

const account = { login: 'kaito@example.jp', password: 'imap-only-Pw1', upstreamUser: 'kaito' };
const certDir = mkdtempSync(join(tmpdir(), 'mailgate-bench-peers-'));
const cert = makeCertificate(certDir);

let backend: DovecotServer;
let dovecotProxy: DovecotServer;
let responder: NginxAuthResponder;
let nginx: NginxMailProxy;

beforeAll(async () => {
  // Cheap argon2id parameters: the peers read them from the hash.
  const hash = await new PasswordHasher(
    { memoryKiB: 64, iterations: 1, parallelism: 1 },
    { maxConcurrent: 1, maxQueued: 1 },
  ).hash(account.password);
  backend = await startDovecot({ users: [{ user: 'kaito', password: 'store-only' }], tls: cert });
  await backend.deliver('kaito', 'Subject: hello\r\n\r\nfrom the store\r\n');
  const proxyTo = {
    host: backend.host,
    port: backend.port,
    masterUser: backend.masterUser,
    masterPassword: backend.masterPassword,
  };
  [dovecotProxy, responder] = await Promise.all([
    startDovecot({
      users: [
        { user: account.login, password: account.password, upstreamUser: 'kaito', hash: `{ARGON2ID}${hash}` },
      ],
      proxyTo,
      tls: cert,
    }),
    startNginxAuthResponder({
      accounts: { [account.login]: { ...account, hash } },
      backend: { host: backend.host, port: backend.port },
      masterUser: backend.masterUser,
      masterPassword: backend.masterPassword,
      maxConcurrentVerifies: 2,
    }),
  ]);
  const auth = (path: string) => `127.0.0.1:${responder.port}/${path}`;
  nginx = await startNginxMailProxy({
    certificate: cert,
    servers: [
      { name: 'argon2', tls: false, authHttp: auth('argon2') },
      { name: 'plain', tls: false, authHttp: auth('plain'), proxyBuffer: '64k' },
      { name: 'tls', tls: true, authHttp: auth('argon2') },
    ],
  });
});

afterAll(async () => {
  await nginx?.stop();
  await Promise.all([responder?.stop(), dovecotProxy?.stop()]);
  await backend?.stop();
  rmSync(certDir, { recursive: true, force: true });
});

/** Logs in, reads the INBOX's one message; resolves with its subject. */
async function readInbox(
  port: number,
  secure: boolean,
  pass = account.password,
): Promise<string | undefined> {
  const client = new ImapFlow({
    host: '127.0.0.1',
    port,
    secure,
    tls: { rejectUnauthorized: false },
    auth: { user: account.login, pass },
    logger: false,
  });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.mailboxOpen('INBOX');
    const msg = await client.fetchOne('1', { envelope: true });
    return msg ? msg.envelope?.subject : undefined;
  } finally {
    await client.logout();
  }
}

describe('bench peers', () => {
  it('nginx logs in through its responder with the argon2id hash and with a plaintext check, plain and TLS', async () => {
    const from = (await backend.readLog()).length;
    expect(await readInbox(nginx.ports.argon2!, false)).toBe('hello');
    expect(await readInbox(nginx.ports.plain!, false)).toBe('hello');
    expect(await readInbox(nginx.ports.tls!, true)).toBe('hello');
    // The store saw the master login the responder rewrote the credentials to.
    await backend.waitForLog('Master user logging in as kaito', { from });
  });

  it("nginx refuses a wrong password with the responder's error", async () => {
    await expect(readInbox(nginx.ports.argon2!, false, 'wrong-password')).rejects.toThrow();
    await expect(readInbox(nginx.ports.plain!, false, 'wrong-password')).rejects.toThrow();
  });

  it('Dovecot as a proxy checks the argon2id hash and passes the login on, plain and TLS', async () => {
    expect(await readInbox(dovecotProxy.port, false)).toBe('hello');
    expect(await readInbox(dovecotProxy.tlsPort!, true)).toBe('hello');
    await expect(readInbox(dovecotProxy.port, false, 'wrong-password')).rejects.toThrow();
    await dovecotProxy.waitForLog(
      /proxy\(kaito@example\.jp,.*Started proxying to <127\.0\.0\.1> as user kaito\*/,
    );
  });

  it('the backend serves IMAPS beside its plain port', async () => {
    const client = new ImapFlow({
      host: '127.0.0.1',
      port: backend.tlsPort!,
      secure: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'kaito', pass: 'store-only' },
      logger: false,
    });
    await client.connect();
    expect((await client.mailboxOpen('INBOX')).exists).toBe(1);
    await client.logout();
  });
});
