import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { AccountStore } from '../accounts/store.js';
import { generateImapPassword, PasswordHasher } from '../auth/passwords.js';
import type { LoadtestAccount } from '../loadtest/accounts.js';
import type { TlsMode } from '../loadtest/connect.js';
import type { LoadtestReport } from '../loadtest/report.js';
import { runLoadtest } from '../loadtest/run.js';
import {
  type BenchFigures,
  type BenchPeer,
  type FetchCell,
  type IdleCell,
  type LoginCell,
  renderBench,
} from './bench-report.js';
import { makeCertificate } from './cert.js';
import { loginRun, treeCpuMs, treePssKiB, waitForLogin, warmCredentialCache } from './measure.js';
import { freePort } from './ports.js';
import {
  type DovecotServer,
  type NginxImapServer,
  startDovecot,
  startNginxAuthResponder,
  startNginxMailProxy,
  startRedis,
} from './servers.js';

/**
 * scripts/bench: mailgate side by side with its peers, on loopback, in one run.
 *
 * One shared Dovecot backend (ACCOUNTS users; the first MAILBOXES of them hold MESSAGES
 * messages of about MESSAGE_KB KiB) is reached four ways:
 *   direct           the client logs in to Dovecot itself (its own passwd-file, plain passwords)
 *   mailgate         bin/mailgate serve (one worker per core) -> Dovecot master login
 *   nginx            Debian nginx's mail proxy, with an auth_http responder process (nginx-auth.ts)
 *                    that rewrites the login to the same Dovecot master login
 *   Dovecot proxy    a second Dovecot whose passdb says proxy=y (and the master login)
 * Each proxy checks the account's IMAP-only password with the same argon2id hash (m=19 MiB,
 * t=2, p=1, as mailgate's default) on every login ("argon2"), or with a cheap check that
 * isolates the proxy ("cheap": plaintext for nginx and Dovecot; for mailgate, its credential
 * cache, warm: what a reconnecting client costs). Every target has a plain and a TLS (IMAPS)
 * front. The load is bin/mailgate loadtest's own engine (runLoadtest) in this process.
 *
 * Measured, per target: logins/s and LOGIN p50/p99 at CONCURRENCY sessions (login scenario:
 * connect, LOGIN, SELECT, LOGOUT); CPU-ms per login of the target's process tree from /proc
 * (nginx's includes its auth responder); FETCH MB/s and CPU-ms per MB (fetch scenario,
 * FETCH_SESSIONS sessions); KiB of memory (PSS of the tree) per idle session at IDLE_SESSIONS.
 * Runs are interleaved (every target in turn, REPEATS rounds) so machine noise hits all alike;
 * the tables give medians. The markdown goes to stdout and BENCH_OUT/bench.md, everything
 * measured to BENCH_OUT/bench.json.
 */

const BIN = resolve(import.meta.dirname, '../../bin/mailgate');

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, not ${raw}`);
  return n;
}
function envList(name: string, fallback: number[]): number[] {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  return raw.split(',').map((part) => {
    const n = Number(part);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}: expected positive integers, not ${raw}`);
    return n;
  });
}

const S = {
  accounts: envNumber('ACCOUNTS', 2_000),
  mailboxes: envNumber('MAILBOXES', 50),
  messages: envNumber('MESSAGES', 200),
  messageKiB: envNumber('MESSAGE_KB', 20),
  /**
   * The accounts the login and idle runs cycle through (each verified once per gateway worker
   * before its cache counts as warm), and the number of distinct argon2id hashes made (each
   * costs ~30 CPU-ms); the other accounts reuse them in turn.
   */
  loginAccounts: envNumber('LOGIN_ACCOUNTS', 200),
  runSeconds: envNumber('RUN_SECONDS', 1.5),
  fetchSeconds: envNumber('FETCH_SECONDS', 2),
  repeats: envNumber('REPEATS', 3),
  concurrency: envList('CONCURRENCY', [1, 16, 64]),
  fetchSessions: envNumber('FETCH_SESSIONS', 4),
  idleSessions: envList('IDLE_SESSIONS', [1_000, 5_000]),
  /** Sessions for the one TLS idle run per target (what TLS adds). */
  idleTlsSessions: envNumber('IDLE_TLS_SESSIONS', 1_000),
  /** After the last idle session is up, memory is read every 0.5 s for this long (lowest kept). */
  idleSettleSeconds: envNumber('IDLE_SETTLE_SECONDS', 6),
  parts: new Set((process.env.PARTS ?? 'login,fetch,idle').split(',')),
  out: resolve(process.env.BENCH_OUT ?? 'bench-results'),
};
const ARGON2 = { memoryKiB: 19456, iterations: 2, parallelism: 1 }; // mailgate's defaults
const FRONTS: TlsMode[] = ['none', 'implicit'];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BENCH_STARTED = Date.now();
const log = (line: string) =>
  process.stderr.write(`bench: [${Math.round((Date.now() - BENCH_STARTED) / 1000)} s] ${line}\n`);
const errorsText = (cell: { errors: number; errorKinds?: Record<string, number | undefined> }) =>
  cell.errors ? `, ${cell.errors} errors ${JSON.stringify(cell.errorKinds ?? {})}` : '';

/** A message of about `bytes` bytes for the backend's mailboxes. */
function message(n: number, bytes: number): string {
  const head = `From: <bench@example.jp>\r\nTo: <bench@example.jp>\r\nSubject: bench message ${n}\r\nMessage-ID: <${n}.${randomBytes(6).toString('hex')}@bench.invalid>\r\nDate: ${new Date().toUTCString()}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const line = `${randomBytes(36).toString('base64')}\r\n`;
  return head + line.repeat(Math.ceil((bytes - head.length) / line.length));
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/** One login run against a target: figures from the report, CPU of the target's tree. */
async function loginCell(peer: BenchPeer, front: TlsMode, concurrency: number): Promise<LoginCell> {
  const roots = peer.roots();
  const cpu0 = treeCpuMs(roots);
  const report = await runLoadtest(
    loginRun(peer.ports[front], peer.accounts, {
      target: { host: '127.0.0.1', port: peer.ports[front], tls: front, insecure: true },
      concurrency,
      count: null,
      durationMs: S.runSeconds * 1000,
    }),
    { signal: interrupted.signal },
  );
  const cpuMs = treeCpuMs(roots) - cpu0;
  return {
    peer: peer.id,
    front,
    concurrency,
    logins: report.totals.logins,
    loginsPerSec: report.rates.loginsPerSec,
    p50: report.latency.login?.p50 ?? Number.NaN,
    p99: report.latency.login?.p99 ?? Number.NaN,
    cpuMsPerLogin: report.totals.logins > 0 ? cpuMs / report.totals.logins : Number.NaN,
    errors: report.totals.errors,
    errorKinds: report.errors,
  };
}

async function fetchCell(peer: BenchPeer, front: TlsMode): Promise<FetchCell> {
  const roots = peer.roots();
  const cpu0 = treeCpuMs(roots);
  const report = await runLoadtest(
    {
      ...loginRun(peer.ports[front], peer.accounts.slice(0, S.mailboxes)),
      scenario: 'fetch',
      target: { host: '127.0.0.1', port: peer.ports[front], tls: front, insecure: true },
      concurrency: S.fetchSessions,
      count: null,
      durationMs: S.fetchSeconds * 1000,
    },
    { signal: interrupted.signal },
  );
  const cpuMs = treeCpuMs(roots) - cpu0;
  const mb = report.totals.bytes / 1e6;
  return {
    peer: peer.id,
    front,
    mbPerSec: report.rates.mbPerSec,
    cpuMsPerMb: mb > 0 ? cpuMs / mb : Number.NaN,
    errors: report.totals.errors,
    errorKinds: report.errors,
  };
}

/**
 * Holds `sessions` sessions in IDLE through the target and reads the PSS of its process tree
 * before, and once they are all established (the lowest of the readings over the settle
 * time): the difference per session.
 */
async function idleCell(peer: BenchPeer, front: TlsMode, sessions: number): Promise<IdleCell> {
  const roots = peer.roots();
  // The lowest reading over 4 s, as after: the warm-up logins' garbage may not be collected yet.
  let before = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 8; i++) {
    await sleep(500);
    before = Math.min(before, treePssKiB(roots));
  }
  const stop = new AbortController();
  let established = 0;
  let ok = 0;
  let ended = false;
  const run = runLoadtest(
    {
      ...loginRun(peer.ports[front], peer.accounts),
      scenario: 'idle',
      target: { host: '127.0.0.1', port: peer.ports[front], tls: front, insecure: true },
      concurrency: sessions,
      count: null,
      durationMs: IDLE_MAX_MS,
      rampUpMs: Math.round(sessions / 2), // 2,000 new sessions a second
      timeoutMs: 60_000,
    },
    {
      signal: AbortSignal.any([stop.signal, interrupted.signal]),
      progressIntervalMs: 200,
      onProgress: (p) => {
        established = p.sessions;
        ok = p.ok;
      },
    },
  );
  run.then(
    () => (ended = true),
    () => (ended = true),
  );
  // Until every session is up, the run ends (it failed), or no session came up for 20 s.
  let lastOk = -1;
  let lastChange = Date.now();
  while (ok < sessions && !ended && Date.now() - lastChange < 20_000) {
    if (ok !== lastOk) [lastOk, lastChange] = [ok, Date.now()];
    await sleep(250);
  }
  // The lowest reading over the settle time: garbage from the logins goes at a GC (V8's memory
  // reducer runs a few seconds after a burst), and a heap read just before one would count it.
  let after = Number.POSITIVE_INFINITY;
  for (const end = Date.now() + S.idleSettleSeconds * 1000; Date.now() < end; ) {
    await sleep(500);
    after = Math.min(after, treePssKiB(roots));
  }
  const held = established;
  stop.abort();
  const report: LoadtestReport = await run;
  return {
    peer: peer.id,
    front,
    sessions,
    established: held,
    kibPerSession: held > 0 ? (after - before) / held : Number.NaN,
    errors: report.totals.errors,
    errorKinds: report.errors,
  };
}
const IDLE_MAX_MS = 300_000;
/** Aborted by SIGINT or SIGTERM: the run in progress ends, the servers are stopped. */
const interrupted = new AbortController();
class Interrupted extends Error {}
function checkInterrupted(): void {
  if (interrupted.signal.aborted) throw new Interrupted('interrupted: stopping the servers');
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted.signal.aborted) process.exit(130); // a second signal: leave at once
    log(`${signal}: ending the run in progress, then stopping the servers (again to quit at once)`);
    interrupted.abort();
  });
}

async function main(): Promise<void> {
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'mailgate-bench-'));
  const children: ChildProcess[] = [];
  const stops: Array<() => Promise<void>> = [];
  try {
    const cert = makeCertificate(dir);
    const redis = await startRedis({ appendOnly: false });
    stops.push(() => redis.stop());

    // The shared backend: ACCOUNTS users, MAILBOXES of them with MESSAGES messages each.
    const users = Array.from({ length: S.accounts }, (_, i) => ({
      user: `bench${i}`,
      password: `direct-${randomBytes(6).toString('hex')}`,
    }));
    log(`starting the Dovecot backend with ${S.accounts} users...`);
    const backend = await startDovecot({ users, tls: cert, imapClientLimit: 100 });
    stops.push(() => backend.stop());
    log(`filling ${S.mailboxes} mailboxes with ${S.messages} messages of ~${S.messageKiB} KiB...`);
    const bodies = Array.from({ length: S.messages }, (_, n) => message(n, S.messageKiB * 1024));
    for (let box = 0; box < S.mailboxes; box++) {
      await Promise.all(bodies.map((b) => backend.deliver(users[box]!.user, b)));
    }

    // IMAP-only passwords: argon2id hashes with mailgate's default parameters, the same hash
    // for every proxy. Making one costs ~30 CPU-ms, so LOGIN_ACCOUNTS distinct ones are made
    // and the other accounts reuse them in turn (distinct accounts, shared salt: nothing here
    // caches across accounts).
    log(`hashing ${Math.min(S.loginAccounts, S.accounts)} IMAP-only passwords (argon2id m=19 MiB t=2)...`);
    const hasher = new PasswordHasher(ARGON2, { maxConcurrent: 4, maxQueued: 100_000 });
    const distinct = await Promise.all(
      Array.from({ length: Math.min(S.loginAccounts, S.accounts) }, async () => {
        const password = generateImapPassword();
        return { password, hash: await hasher.hash(password) };
      }),
    );
    const creds = users.map((u, i) => ({
      login: `${u.user}@example.jp`,
      upstreamUser: u.user,
      ...distinct[i % distinct.length]!,
    }));

    log('creating the accounts in mailgate, the Dovecot proxies and the nginx responder...');
    const client = new Redis(redis.url);
    const store = new AccountStore(client, 'mg:');
    for (let i = 0; i < creds.length; i += 200) {
      await Promise.all(
        creds.slice(i, i + 200).map(async (c) => {
          await store.create({ login: c.login, upstreamUser: c.upstreamUser, now: Date.now() });
          await store.setImapHash(c.login, c.hash, Date.now(), false);
        }),
      );
    }
    client.disconnect();

    const proxyTo = {
      host: backend.host,
      port: backend.port,
      masterUser: backend.masterUser,
      masterPassword: backend.masterPassword,
    };
    const dovecotProxy = (auth: 'argon2' | 'cheap') =>
      startDovecot({
        users: creds.map((c) => ({
          user: c.login,
          password: c.password,
          upstreamUser: c.upstreamUser,
          ...(auth === 'argon2' ? { hash: `{ARGON2ID}${c.hash}` } : {}),
        })),
        proxyTo,
        tls: cert,
      });
    const [dovecotArgon2, dovecotCheap] = await Promise.all([dovecotProxy('argon2'), dovecotProxy('cheap')]);
    stops.push(
      () => dovecotArgon2.stop(),
      () => dovecotCheap.stop(),
    );

    const nginxWithResponder = async (
      servers: Array<Omit<NginxImapServer, 'authHttp'> & { auth: string }>,
    ) => {
      const responder = await startNginxAuthResponder({
        accounts: Object.fromEntries(creds.map((c) => [c.login, c])),
        backend: { host: backend.host, port: backend.port },
        masterUser: backend.masterUser,
        masterPassword: backend.masterPassword,
        maxConcurrentVerifies: 4,
      });
      try {
        const nginx = await startNginxMailProxy({
          certificate: cert,
          servers: servers.map(({ auth, ...server }) => ({
            ...server,
            authHttp: `127.0.0.1:${responder.port}/${auth}`,
          })),
        });
        return {
          ports: nginx.ports,
          roots: [nginx.pid, responder.pid],
          stop: async () => {
            await nginx.stop();
            await responder.stop();
          },
        };
      } catch (err) {
        await responder.stop();
        throw err;
      }
    };
    const nginx = await nginxWithResponder([
      { name: 'argon2-none', tls: false, auth: 'argon2' },
      { name: 'argon2-implicit', tls: true, auth: 'argon2' },
      { name: 'cheap-none', tls: false, auth: 'plain' },
      { name: 'cheap-implicit', tls: true, auth: 'plain' },
      { name: 'buf64-none', tls: false, auth: 'plain', proxyBuffer: '64k' },
      { name: 'buf64-implicit', tls: true, auth: 'plain', proxyBuffer: '64k' },
    ]);
    stops.push(() => nginx.stop());

    // Two gateways: one with the credential cache off (argon2 on every login), one with it on.
    const gateway = async (cache: boolean, name: string) => {
      const ports = { none: await freePort(), implicit: await freePort() };
      const adminPort = await freePort();
      const file = join(dir, `mailgate-${name}.yaml`);
      writeFileSync(
        file,
        JSON.stringify({
          log: { level: 'info' },
          redis: { url: redis.url },
          tls: cert,
          geo: { domesticCountries: ['JP'], overrides: [{ cidr: '127.0.0.0/8', country: 'JP' }] },
          passwords: { argon2: ARGON2, ...(cache ? {} : { cache: { ttlMs: 0 } }) },
          imap: {
            listen: [
              { host: '127.0.0.1', port: ports.none, tls: 'none' },
              { host: '127.0.0.1', port: ports.implicit, tls: 'implicit' },
            ],
            upstream: {
              servers: [`${backend.host}:${backend.port}`],
              login: { style: 'master', user: backend.masterUser, password: backend.masterPassword },
            },
            limits: { maxConnectionsPerIp: 20_000 },
          },
          admin: { listen: { host: '127.0.0.1', port: adminPort }, token: randomBytes(24).toString('hex') },
        }),
        { mode: 0o600 },
      );
      // stdout (the JSON log) is thrown away, as a log shipper would take it.
      const child = spawn(process.execPath, [BIN, 'serve', '--config', file, '--workers', 'auto'], {
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      children.push(child);
      return { child, ports, adminPort, stop: () => stopChild(child) };
    };
    const [gwArgon2, gwCache] = [await gateway(false, 'argon2'), await gateway(true, 'cache')];

    const clientCreds: LoadtestAccount[] = creds
      .slice(0, S.loginAccounts)
      .map((c) => ({ login: c.login, password: c.password }));
    const directCreds: LoadtestAccount[] = users
      .slice(0, S.loginAccounts)
      .map((u) => ({ login: u.user, password: u.password }));
    const peer = (
      id: string,
      group: BenchPeer['group'],
      authMode: BenchPeer['auth'],
      label: string,
      ports: Record<TlsMode, number>,
      roots: () => number[],
    ): BenchPeer => ({
      id,
      group,
      auth: authMode,
      label,
      ports,
      roots,
      accounts: group === 'direct' ? directCreds : clientCreds,
    });
    const dovecotPorts = (d: DovecotServer) => ({ none: d.port, implicit: d.tlsPort!, starttls: 0 });
    const peers = {
      direct: peer('direct', 'direct', 'cheap', 'Dovecot direct', dovecotPorts(backend), () => [backend.pid]),
      mailgateArgon2: peer(
        'mailgate-argon2',
        'mailgate',
        'argon2',
        'mailgate',
        { ...gwArgon2.ports, starttls: 0 },
        () => [gwArgon2.child.pid!],
      ),
      mailgateCache: peer(
        'mailgate-cache',
        'mailgate',
        'cheap',
        'mailgate (credential cache warm)',
        { ...gwCache.ports, starttls: 0 },
        () => [gwCache.child.pid!],
      ),
      nginxArgon2: peer(
        'nginx-argon2',
        'nginx',
        'argon2',
        'nginx mail proxy',
        { none: nginx.ports['argon2-none']!, implicit: nginx.ports['argon2-implicit']!, starttls: 0 },
        () => nginx.roots,
      ),
      nginxCheap: peer(
        'nginx-cheap',
        'nginx',
        'cheap',
        'nginx mail proxy',
        { none: nginx.ports['cheap-none']!, implicit: nginx.ports['cheap-implicit']!, starttls: 0 },
        () => nginx.roots,
      ),
      nginxBuf64: peer(
        'nginx-cheap-64k',
        'nginx',
        'cheap',
        'nginx mail proxy, proxy_buffer 64k',
        { none: nginx.ports['buf64-none']!, implicit: nginx.ports['buf64-implicit']!, starttls: 0 },
        () => nginx.roots,
      ),
      dovecotArgon2: peer(
        'dovecot-proxy-argon2',
        'dovecot',
        'argon2',
        'Dovecot proxy',
        dovecotPorts(dovecotArgon2),
        () => [dovecotArgon2.pid],
      ),
      dovecotCheap: peer(
        'dovecot-proxy-cheap',
        'dovecot',
        'cheap',
        'Dovecot proxy',
        dovecotPorts(dovecotCheap),
        () => [dovecotCheap.pid],
      ),
    };

    log('waiting for every target to take a login...');
    for (const p of Object.values(peers)) await waitForLogin(p.ports.none, p.accounts[0]!);
    log("warming: every login account once through Dovecot directly, and mailgate's credential cache...");
    await runLoadtest(loginRun(peers.direct.ports.none, directCreds, { concurrency: 8 }));
    await warmCredentialCache(gwCache.ports.none, gwCache.adminPort, clientCreds);

    const figures: BenchFigures = {
      settings: { ...S, parts: [...S.parts], argon2: ARGON2, cores: (await import('node:os')).cpus().length },
      peers: Object.values(peers).map(({ id, group, auth: a, label }) => ({ id, group, auth: a, label })),
      login: [],
      fetch: [],
      idle: [],
      elapsedSeconds: 0,
    };
    const loginPeers = [
      peers.direct,
      peers.mailgateArgon2,
      peers.nginxArgon2,
      peers.dovecotArgon2,
      peers.mailgateCache,
      peers.nginxCheap,
      peers.dovecotCheap,
    ];
    const fetchPeers = [
      peers.direct,
      peers.mailgateCache,
      peers.nginxCheap,
      peers.nginxBuf64,
      peers.dovecotCheap,
    ];
    const idlePeers = [peers.direct, peers.mailgateCache, peers.nginxCheap, peers.dovecotCheap];

    if (S.parts.has('fetch')) {
      log("warming the backend's page cache and indexes with a FETCH pass...");
      await fetchCell(peers.direct, 'none');
    }
    for (let round = 1; round <= S.repeats; round++) {
      if (S.parts.has('login')) {
        for (const concurrency of S.concurrency) {
          for (const front of FRONTS) {
            for (const p of loginPeers) {
              checkInterrupted();
              const cell = await loginCell(p, front, concurrency);
              figures.login.push({ ...cell, round });
              log(
                `round ${round} login c=${concurrency} ${front} ${p.id}: ${cell.loginsPerSec.toFixed(0)}/s ` +
                  `p99 ${cell.p99.toFixed(1)} ms, ${cell.cpuMsPerLogin.toFixed(2)} CPU-ms/login` +
                  errorsText(cell),
              );
            }
          }
        }
      }
      if (S.parts.has('fetch')) {
        for (const front of FRONTS) {
          for (const p of fetchPeers) {
            checkInterrupted();
            const cell = await fetchCell(p, front);
            figures.fetch.push({ ...cell, round });
            log(
              `round ${round} fetch ${front} ${p.id}: ${cell.mbPerSec.toFixed(0)} MB/s, ` +
                `${cell.cpuMsPerMb.toFixed(2)} CPU-ms/MB${errorsText(cell)}`,
            );
          }
        }
      }
    }
    // Idle memory: a fresh proxy for each run, since a process keeps the memory its last burst
    // of sessions used and a second run would measure that reuse, not the cost. One round: the
    // figure moves little and a run of thousands of sessions is slow. Dovecot direct is the
    // backend itself (its imap processes serve many sessions each and end when idle).
    if (S.parts.has('idle')) {
      interface Fresh {
        ports: Record<string, number>;
        roots: number[];
        stop(): Promise<void>;
      }
      const fresh: Record<string, () => Promise<Fresh>> = {
        direct: async () => ({
          ports: { none: backend.port, implicit: backend.tlsPort! },
          roots: [backend.pid],
          stop: async () => {},
        }),
        'mailgate-cache': async () => {
          const gw = await gateway(true, 'idle');
          await waitForLogin(gw.ports.none, clientCreds[0]!);
          await warmCredentialCache(gw.ports.none, gw.adminPort, clientCreds);
          return { ports: gw.ports, roots: [gw.child.pid!], stop: gw.stop };
        },
        'nginx-cheap': () =>
          nginxWithResponder([
            { name: 'none', tls: false, auth: 'plain' },
            { name: 'implicit', tls: true, auth: 'plain' },
          ]),
        'dovecot-proxy-cheap': async () => {
          const d = await dovecotProxy('cheap');
          return { ports: dovecotPorts(d), roots: [d.pid], stop: () => d.stop() };
        },
      };
      const runs: Array<[TlsMode, number]> = [
        ...S.idleSessions.map((n): [TlsMode, number] => ['none', n]),
        ['implicit', S.idleTlsSessions],
      ];
      for (const [front, sessions] of runs) {
        for (const p of idlePeers) {
          checkInterrupted();
          const target = await fresh[p.id]!();
          try {
            const ports = { none: target.ports.none!, implicit: target.ports.implicit!, starttls: 0 };
            const cell = await idleCell({ ...p, ports, roots: () => target.roots }, front, sessions);
            figures.idle.push({ ...cell, round: 1 });
            log(
              `idle ${front} ${sessions} ${p.id}: ${cell.kibPerSession.toFixed(1)} KiB/session ` +
                `(${cell.established} established${errorsText(cell)})`,
            );
          } finally {
            await target.stop();
          }
        }
      }
    }

    figures.elapsedSeconds = Math.round((Date.now() - started) / 1000);
    const markdown = renderBench(figures);
    mkdirSync(S.out, { recursive: true });
    writeFileSync(join(S.out, 'bench.json'), `${JSON.stringify(figures, null, 2)}\n`);
    writeFileSync(join(S.out, 'bench.md'), markdown);
    process.stdout.write(markdown);
    log(`done in ${figures.elapsedSeconds} s; wrote ${join(S.out, 'bench.md')} and bench.json`);
  } finally {
    for (const child of children) await stopChild(child);
    for (const stop of stops.reverse()) await stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  if (err instanceof Interrupted) process.exit(130);
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
