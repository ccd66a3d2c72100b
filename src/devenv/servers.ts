/**
 * Real Redis and Dovecot servers, private to one process: for the end-to-end tests and for
 * scripts/demo (dev environment code; the gateway itself never imports it).
 *
 * Each helper starts its server as a child process of the test worker, on a free loopback port,
 * inside a fresh directory under os.tmpdir(), and stops it by the PID it started (never by name).
 * The binaries must be installed (scripts/test installs them on a fresh machine); a missing binary
 * is a loud failure, not a skipped test.
 *
 * Start servers once per test file, in beforeAll, and stop them in afterAll.
 * Set MAILGATE_KEEP_TEST_DIRS=1 to keep the temp directories (configs, logs, maildirs) after stop().
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { appendFile, chmod, chown, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports.js';

const execFileP = promisify(execFile);
const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 15_000;
const POLL_MS = 25;

// ---------------------------------------------------------------------------------------------
// Process bookkeeping

const LIVE_KEY = Symbol.for('mailgate.test.liveServers');
type LiveSet = Set<ChildProcess>;
const globalStore = globalThis as unknown as Record<symbol, LiveSet | undefined>;
function liveChildren(): LiveSet {
  let live = globalStore[LIVE_KEY];
  if (live === undefined) {
    const created: LiveSet = new Set();
    live = created;
    globalStore[LIVE_KEY] = created;
    // Last resort if a test file dies before afterAll: signal what this process started.
    process.once('exit', () => {
      for (const child of created) child.kill('SIGTERM');
    });
  }
  return live;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const hasProc = existsSync('/proc/self/stat');

/** State letter and parent PID from /proc/PID/stat, or undefined if there is no such process. */
function procStat(pid: number): { state: string; ppid: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) S ppid ...": comm may contain spaces and parentheses, so split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: rest[0] ?? '?', ppid: Number(rest[1]) };
}

/**
 * True when PID no longer runs. A zombie (state Z) or a dead task (X) counts as gone: a daemonised
 * process whose parent does not reap it stays visible to `kill -0`.
 */
function pidGone(pid: number): boolean {
  if (!hasProc) {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  }
  const stat = procStat(pid);
  return stat === undefined || stat.state === 'Z' || stat.state === 'X';
}

/** All live descendants of PID (children, grandchildren, ...), from /proc. */
function descendants(pid: number): number[] {
  if (!hasProc) return [];
  const parentOf = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = procStat(Number(name));
    if (stat !== undefined && stat.state !== 'Z') parentOf.set(Number(name), stat.ppid);
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const current = queue.shift()!;
    for (const [child, parent] of parentOf) {
      if (parent === current) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found;
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (cond()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(POLL_MS);
  }
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Waits until CHILD has exited and every PID in `pids` is gone; SIGKILLs whatever is left after the timeout. */
async function waitGone(child: ChildProcess, pids: number[], what: string): Promise<void> {
  const allGone = (): boolean => exited(child) && pids.every(pidGone);
  if (await waitFor(allGone, STOP_TIMEOUT_MS)) return;
  for (const pid of [child.pid, ...pids]) {
    if (pid !== undefined && !pidGone(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  if (!(await waitFor(allGone, 5_000))) {
    throw new Error(`${what}: processes ${[child.pid, ...pids].join(',')} still alive after SIGKILL`);
  }
}

function missingBinary(err: unknown, binary: string, pkg: string): Error | undefined {
  if ((err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    return new Error(
      `${binary} not found in PATH: install ${pkg} (scripts/test does it: scripts/lib/install-deps.sh)`,
    );
  }
  return undefined;
}

/** Spawns BINARY, collecting its stdout+stderr (capped); rejects `spawned` if it cannot be executed. */
function spawnServer(
  binary: string,
  args: string[],
  pkg: string,
): { child: ChildProcess; output: () => string; spawned: Promise<void> } {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const collect = (chunk: Buffer): void => {
    out = (out + chunk.toString('utf8')).slice(-8192);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', (err) => reject(missingBinary(err, binary, pkg) ?? err));
  });
  // Keep an 'error' listener for later errors (e.g. kill on an exited child) so they never throw.
  child.on('error', () => {});
  const live = liveChildren();
  live.add(child);
  child.once('exit', () => live.delete(child));
  return { child, output: () => out, spawned };
}

async function tail(path: string, lines = 40): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.split('\n').slice(-lines).join('\n');
  } catch (err) {
    return `(cannot read ${path}: ${(err as Error).message})`;
  }
}

async function removeDir(dir: string): Promise<void> {
  if (process.env.MAILGATE_KEEP_TEST_DIRS) return;
  await rm(dir, { recursive: true, force: true });
}

class AddressInUse extends Error {}

// ---------------------------------------------------------------------------------------------
// Raw-socket probes

/** Connects, sends SEND (if any), resolves with the first CRLF-terminated line, or undefined. */
function firstLine(port: number, send: string | undefined, timeoutMs = 1_000): Promise<string | undefined> {
  return new Promise((resolve) => {
    let buf = '';
    let done = false;
    const socket = connect({ host: HOST, port });
    const finish = (line: string | undefined): void => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve(line);
    };
    socket.setTimeout(timeoutMs, () => finish(undefined));
    socket.on('error', () => finish(undefined));
    socket.on('close', () => finish(undefined));
    socket.on('connect', () => {
      if (send !== undefined) socket.write(send);
    });
    socket.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      const end = buf.indexOf('\r\n');
      if (end >= 0) finish(buf.slice(0, end));
    });
  });
}

/**
 * Polls a server's log until a line (past `from` characters) matches; on timeout the error
 * carries the log's tail, so a failing test shows what the server said.
 */
async function waitForLogLine(
  name: string,
  logPath: string,
  readLog: () => Promise<string>,
  pattern: RegExp | string,
  opts: { timeoutMs?: number; from?: number },
): Promise<string> {
  const { timeoutMs = 5_000, from = 0 } = opts;
  const matches = (line: string): boolean =>
    typeof pattern === 'string' ? line.includes(pattern) : pattern.test(line);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = (await readLog()).slice(from).split('\n').find(matches);
    if (line !== undefined) return line;
    if (Date.now() >= deadline) {
      throw new Error(`no ${name} log line matches ${String(pattern)} within ${timeoutMs} ms
--- ${logPath} ---
${await tail(logPath)}`);
    }
    await sleep(POLL_MS);
  }
}

/**
 * Starts a server again on the port it had (restart keeps its URL): the port may still be held
 * for a moment after the old process exits, so an address-in-use failure is retried briefly.
 */
async function relaunchOnPort<T>(launch: (port: number) => Promise<T>, port: number): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch(port);
    } catch (err) {
      if (!(err instanceof AddressInUse) || attempt >= 20) throw err;
      await sleep(100);
    }
  }
}

/**
 * Starts a server on freshly picked free ports; a lost race for a port (another process took
 * it between the pick and the bind) is retried twice with new ones. On failure the server's
 * directory is removed.
 */
async function launchOnFreePorts<P>(
  dir: string,
  pick: () => Promise<P>,
  launch: (ports: P) => Promise<ChildProcess>,
): Promise<{ ports: P; child: ChildProcess }> {
  for (let attempt = 1; ; attempt++) {
    const ports = await pick();
    try {
      return { ports, child: await launch(ports) };
    } catch (err) {
      if (!(err instanceof AddressInUse) || attempt >= 3) {
        await removeDir(dir);
        throw err;
      }
    }
  }
}

/** stop() of a server: halts it and removes its directory, the first time only. */
function stopOnce(child: ChildProcess, halt: (child: ChildProcess) => Promise<void>, dir: string) {
  let running: ChildProcess | undefined = child;
  return async (): Promise<void> => {
    const proc = running;
    if (proc === undefined) return;
    running = undefined;
    await halt(proc);
    await removeDir(dir);
  };
}

// ---------------------------------------------------------------------------------------------
// Redis

export interface RedisServer {
  url: string;
  host: string;
  port: number;
  /** PID of the current redis-server process (changes on restart()). */
  pid: number;
  dir: string;
  /** SIGTERM, wait for exit, remove the temp dir. Idempotent; final (no restart() after it). */
  stop(): Promise<void>;
  /** Stop (SIGTERM, if running) then start again on the same port with the same dir. Data
   * survives only with appendOnly (the default). Also brings the server back after kill(). */
  restart(): Promise<void>;
  /** Outage: SIGKILL the server (like a crash) and leave it down; restart() brings it back.
   * With appendOnly, every acknowledged write is already in the AOF (written before the reply). */
  kill(): Promise<void>;
}

export async function startRedis(opts: { appendOnly?: boolean } = {}): Promise<RedisServer> {
  const appendOnly = opts.appendOnly ?? true;
  const dir = await mkdtemp(join(tmpdir(), 'mailgate-redis-'));
  const logPath = join(dir, 'redis.log');

  const launch = async (port: number): Promise<ChildProcess> => {
    const args = [
      '--port',
      String(port),
      '--bind',
      HOST,
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      appendOnly ? 'yes' : 'no',
      '--daemonize',
      'no',
      '--logfile',
      logPath,
    ];
    const { child, output, spawned } = spawnServer('redis-server', args, 'redis-server');
    await spawned;
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (exited(child)) {
        const log = await tail(logPath);
        const why = `redis-server exited (${child.exitCode ?? child.signalCode}) while starting on port ${port}`;
        if (/Address already in use/i.test(log + output())) throw new AddressInUse(why);
        throw new Error(`${why}\n${output()}\n--- ${logPath} ---\n${log}`);
      }
      // -LOADING while the AOF is replayed; +PONG once it serves.
      if ((await firstLine(port, 'PING\r\n', 500)) === '+PONG') return child;
      await sleep(POLL_MS);
    }
    child.kill('SIGKILL');
    await waitGone(child, [], 'redis-server');
    throw new Error(
      `redis-server on port ${port} did not answer PING within ${START_TIMEOUT_MS} ms\n${await tail(logPath)}`,
    );
  };

  const { ports: port, child } = await launchOnFreePorts(dir, () => freePort(HOST), launch);

  let current: ChildProcess | undefined = child;
  let stopped = false;
  const halt = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = current;
    if (proc === undefined) return;
    current = undefined;
    if (!exited(proc)) proc.kill(signal);
    await waitGone(proc, proc.pid === undefined ? [] : [proc.pid], 'redis-server');
  };

  const server: RedisServer = {
    url: `redis://${HOST}:${port}`,
    host: HOST,
    port,
    pid: child.pid!,
    dir,
    async stop() {
      stopped = true;
      await halt('SIGTERM');
      await removeDir(dir);
    },
    async kill() {
      await halt('SIGKILL');
    },
    async restart() {
      if (stopped) throw new Error('RedisServer.restart() after stop(): its directory is gone');
      await halt('SIGTERM');
      current = await relaunchOnPort(launch, port);
      server.pid = current.pid!;
    },
  };
  return server;
}

// ---------------------------------------------------------------------------------------------
// Dovecot

export interface DovecotUser {
  user: string;
  password: string;
  /** Stored instead of `{PLAIN}password`: a scheme-prefixed hash, e.g. `{ARGON2ID}$argon2id$v=19$...`. */
  hash?: string;
  /** With `proxyTo`: the backend user this login is proxied to (default: the same name). */
  upstreamUser?: string;
}

/** Makes a Dovecot a proxy: every user is passed on to this backend as a master-user login. */
export interface DovecotProxyTarget {
  host: string;
  port: number;
  masterUser: string;
  masterPassword: string;
}

export interface DovecotServer {
  host: string;
  port: number;
  /** With `tls`: the IMAPS (implicit TLS) port. */
  tlsPort: number | null;
  /** PID of the Dovecot master process. */
  pid: number;
  dir: string;
  masterUser: string;
  masterPassword: string;
  logPath: string;
  /** With `lmtp: true`: the LMTP port (recipients user@domain, delivered to user's Maildir). */
  lmtpPort: number | null;
  /** With `lmtp: true`: the auth socket for Postfix (smtpd_sasl_type = dovecot), mode 0666. */
  saslSocket: string | null;
  readLog(): Promise<string>;
  /** Polls the log until a line matches; resolves with that line, rejects with the log tail after
   * `timeoutMs` (default 5000). `from`: only look past this many characters of the log, e.g.
   * `(await dovecot.readLog()).length` taken before the action, to skip matches from earlier tests. */
  waitForLog(pattern: RegExp | string, opts?: { timeoutMs?: number; from?: number }): Promise<string>;
  /** Appends to the users' passwd-file. Dovecot re-reads it when its size or mtime changes, but checks
   * at most once a second, so on a running server this waits for the next second (<= 1 s). */
  addUser(u: DovecotUser): Promise<void>;
  /** Writes a message file into the user's ~/Maildir/new, owned by the mail uid/gid. */
  deliver(user: string, rfc822: string | Buffer): Promise<void>;
  /** `doveadm stop`, wait until the master and all its children are gone, remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

interface Account {
  name: string;
  uid: number;
  gid: number;
}

async function getent(name: string): Promise<Account | undefined> {
  let line: string | undefined;
  try {
    line = (await execFileP('getent', ['passwd', name])).stdout.trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return undefined;
    // No getent: read /etc/passwd.
    line = (await readFile('/etc/passwd', 'utf8')).split('\n').find((l) => l.startsWith(`${name}:`));
  }
  const fields = line?.split(':') ?? [];
  if (fields.length < 4) return undefined;
  return { name, uid: Number(fields[2]), gid: Number(fields[3]) };
}

const USER_RE = /^[A-Za-z0-9._@+-]+$/;

function checkUser(u: DovecotUser, separator: string): void {
  if (!USER_RE.test(u.user) || u.user.includes(separator)) {
    throw new Error(
      `Dovecot test user name ${JSON.stringify(u.user)} must match ${USER_RE} (no '${separator}')`,
    );
  }
  if (/[:\r\n]/.test(u.password) || /[:\s]/.test(u.hash ?? '')) {
    throw new Error(
      `Dovecot test password or hash for ${u.user} must not contain ':' or white space (passwd-file)`,
    );
  }
}

/** The passwd-file line of a user: user:password:uid:gid:(gecos):home:(shell):extra fields. */
function passwdLine(
  u: DovecotUser,
  mail: Account,
  home: string,
  proxyTo: DovecotProxyTarget | undefined,
): string {
  const extra =
    proxyTo === undefined
      ? ''
      : `proxy=y host=${proxyTo.host} port=${proxyTo.port} ` +
        `destuser=${u.upstreamUser ?? u.user}*${proxyTo.masterUser} pass=${proxyTo.masterPassword}`;
  return `${u.user}:${u.hash ?? `{PLAIN}${u.password}`}:${mail.uid}:${mail.gid}::${home}::${extra}\n`;
}

function dovecotConf(p: {
  dir: string;
  port: number;
  logPath: string;
  masterFile: string;
  usersFile: string;
  mail: Account;
  /** With LMTP (for a Postfix in front): the LMTP port and the SASL socket for Postfix. */
  lmtpPort?: number | undefined;
  tls?: { port: number; cert: string; key: string } | undefined;
  /** IMAP sessions one imap process serves (1: a process per session, Dovecot's default). */
  imapClientLimit: number;
}): string {
  const { dir, port, logPath, masterFile, usersFile, mail, tls } = p;
  // LMTP recipients arrive as user@domain; the passwd-file users are bare names (%Ln).
  const lmtp =
    p.lmtpPort === undefined
      ? ''
      : `
service lmtp {
  inet_listener lmtp {
    address = ${HOST}
    port = ${p.lmtpPort}
  }
}
protocol lmtp {
  auth_username_format = %Ln
}
`;
  const saslListener =
    p.lmtpPort === undefined
      ? ''
      : `
  # Postfix's smtpd (user postfix) authenticates through this (smtpd_sasl_type = dovecot).
  unix_listener auth-postfix {
    mode = 0666
  }`;
  return `# Generated by test/support/servers.ts: a private Dovecot for end-to-end tests.
base_dir = ${join(dir, 'run')}
state_dir = ${join(dir, 'state')}
instance_name = mailgate-test-${port}
log_path = ${logPath}
log_timestamp = "%Y-%m-%d %H:%M:%S "
protocols = imap${p.lmtpPort === undefined ? '' : ' lmtp'}
listen = ${HOST}
${tls === undefined ? 'ssl = no' : `ssl = yes\nssl_cert = <${tls.cert}\nssl_key = <${tls.key}`}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# Tests log in with wrong passwords on purpose: answer at once, and no per-IP penalty (2.3.19 applies
# it to 127.0.0.1 even though login_trusted_networks covers it, delaying the next logins by 2-15 s).
auth_failure_delay = 0
auth_master_user_separator = *
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 1000
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = ${mail.uid}
last_valid_uid = ${mail.uid}
first_valid_gid = ${mail.gid}
last_valid_gid = ${mail.gid}

passdb {
  driver = passwd-file
  master = yes
  pass = yes
  args = scheme=PLAIN ${masterFile}
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN ${usersFile}
}
userdb {
  driver = passwd-file
  args = ${usersFile}
}

service imap-login {
  inet_listener imap {
    address = ${HOST}
    port = ${port}
  }
  inet_listener imaps {
    ${tls === undefined ? 'port = 0' : `address = ${HOST}\n    port = ${tls.port}`}
  }
  service_count = 0
  client_limit = 1000
  process_min_avail = 1
}
service imap {
  process_limit = 2000
  client_limit = ${p.imapClientLimit}${p.imapClientLimit > 1 ? '\n  # Processes that stay and take many sessions each (the default, 1, is a process per login).\n  service_count = 0\n  process_min_avail = 2' : ''}
}
service auth {
  client_limit = 2100${saslListener}
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
${lmtp}`;
}

export async function startDovecot(opts: {
  users: DovecotUser[];
  masterUser?: string;
  masterPassword?: string;
  /** Also serve LMTP on a free port and an auth socket for Postfix (for startPostfix). */
  lmtp?: boolean;
  /** Also serve IMAPS (implicit TLS) on a free port with this certificate (makeCertificate()). */
  tls?: { cert: string; key: string };
  /** Be a proxy in front of this backend instead of a mail store (scripts/bench's peer). */
  proxyTo?: DovecotProxyTarget;
  /** IMAP sessions per imap process (default 1); raise it to hold thousands of idle sessions. */
  imapClientLimit?: number;
}): Promise<DovecotServer> {
  if (process.getuid?.() !== 0) {
    throw new Error('startDovecot must run as root: Dovecot switches mail processes to the `mail` user');
  }
  const separator = '*';
  const masterUser = opts.masterUser ?? 'proxy';
  const masterPassword = opts.masterPassword ?? `master-${randomBytes(9).toString('hex')}`;
  checkUser({ user: masterUser, password: masterPassword }, separator);
  for (const u of opts.users) checkUser(u, separator);

  try {
    await execFileP('dovecot', ['--version']);
  } catch (err) {
    throw missingBinary(err, 'dovecot', 'dovecot-imapd') ?? err;
  }
  const [mail, dovecotUser, dovenull] = await Promise.all([
    getent('mail'),
    getent('dovecot'),
    getent('dovenull'),
  ]);
  if (mail === undefined || dovecotUser === undefined || dovenull === undefined) {
    throw new Error(
      'users mail, dovecot and dovenull must exist (install dovecot-imapd: scripts/lib/install-deps.sh)',
    );
  }

  const dir = await mkdtemp(join(tmpdir(), 'mailgate-dovecot-'));
  // Login (dovenull), auth (dovecot) and mail (mail) processes all need to traverse DIR.
  await chmod(dir, 0o755);
  const homeRoot = join(dir, 'home');
  const usersFile = join(dir, 'users.passwd');
  const masterFile = join(dir, 'master.passwd');
  const logPath = join(dir, 'dovecot.log');
  const confPath = join(dir, 'dovecot.conf');
  const homes = new Map<string, string>();
  let started = false;

  const ensureOwnedDir = async (path: string): Promise<void> => {
    await mkdir(path, { recursive: true, mode: 0o700 });
    await chown(path, mail.uid, mail.gid);
  };
  const addUser = async (u: DovecotUser): Promise<void> => {
    checkUser(u, separator);
    const home = join(homeRoot, u.user);
    await ensureOwnedDir(home);
    homes.set(u.user, home);
    await appendFile(usersFile, passwdLine(u, mail, home, opts.proxyTo), { mode: 0o644 });
    if (started) {
      // The auth process stat()s the passwd-file at most once per second (last_sync_time ==
      // ioloop_time), so a lookup in the same second as the append may not see the new user.
      // Wait for the next second: every later lookup re-reads the changed file.
      const writtenSecond = Math.floor(Date.now() / 1000);
      await sleep((writtenSecond + 1) * 1000 - Date.now() + 20);
    }
  };

  try {
    await mkdir(homeRoot, { mode: 0o755 });
    await chmod(homeRoot, 0o755);
    await writeFile(usersFile, '', { mode: 0o644 });
    await writeFile(masterFile, `${masterUser}:{PLAIN}${masterPassword}\n`, { mode: 0o644 });
    for (const u of opts.users) await addUser(u);
  } catch (err) {
    await removeDir(dir);
    throw err;
  }

  if (opts.lmtp && !existsSync('/usr/lib/dovecot/lmtp')) {
    await removeDir(dir);
    throw new Error('Dovecot LMTP is not installed: install dovecot-lmtpd (scripts/lib/install-deps.sh)');
  }
  let lmtpPort: number | undefined;
  let tls: { port: number; cert: string; key: string } | undefined;
  // Foreground (-F) so the master is our own child: no daemonised orphan, exit is observed and reaped.
  const launch = async (port: number): Promise<ChildProcess> => {
    const imapClientLimit = opts.imapClientLimit ?? 1;
    await writeFile(
      confPath,
      dovecotConf({ dir, port, logPath, masterFile, usersFile, mail, lmtpPort, tls, imapClientLimit }),
    );
    const { child, output, spawned } = spawnServer('dovecot', ['-F', '-c', confPath], 'dovecot-imapd');
    await spawned;
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (exited(child)) {
        const log = await tail(logPath);
        const why = `dovecot exited (${child.exitCode ?? child.signalCode}) while starting on port ${port}`;
        if (/Address already in use/i.test(log + output())) throw new AddressInUse(why);
        throw new Error(`${why}\n${output()}\n--- ${logPath} ---\n${log}`);
      }
      const greeting = await firstLine(port, 'a LOGOUT\r\n', 1_000);
      if (greeting?.startsWith('* OK')) return child;
      await sleep(POLL_MS);
    }
    const log = await tail(logPath);
    await halt(child);
    throw new Error(`dovecot on port ${port} gave no "* OK" greeting within ${START_TIMEOUT_MS} ms
${output()}
--- ${logPath} ---
${log}`);
  };

  const halt = async (child: ChildProcess): Promise<void> => {
    const masterPid = readMasterPid(dir) ?? child.pid;
    const pids = masterPid === undefined ? [] : [masterPid, ...descendants(masterPid)];
    if (!exited(child)) {
      try {
        await execFileP('doveadm', ['-c', confPath, 'stop'], { timeout: 10_000 });
      } catch {
        if (!exited(child)) child.kill('SIGTERM');
      }
    }
    await waitGone(child, pids, 'dovecot');
  };

  const pick = async (): Promise<number> => {
    if (opts.lmtp) lmtpPort = await freePort(HOST);
    if (opts.tls) tls = { port: await freePort(HOST), ...opts.tls };
    return freePort(HOST);
  };
  const { ports: port, child } = await launchOnFreePorts(dir, pick, launch);

  started = true;
  const readLog = (): Promise<string> => readFile(logPath, 'utf8');

  return {
    host: HOST,
    port,
    tlsPort: tls?.port ?? null,
    pid: readMasterPid(dir) ?? child.pid!,
    dir,
    masterUser,
    masterPassword,
    logPath,
    lmtpPort: lmtpPort ?? null,
    saslSocket: opts.lmtp ? join(dir, 'run', 'auth-postfix') : null,
    readLog,
    waitForLog: (pattern, o = {}) => waitForLogLine('Dovecot', logPath, readLog, pattern, o),
    addUser,
    async deliver(user, rfc822) {
      const home = homes.get(user);
      if (home === undefined) throw new Error(`deliver: unknown Dovecot test user ${user}`);
      const maildir = join(home, 'Maildir');
      for (const sub of ['', 'cur', 'new', 'tmp']) await ensureOwnedDir(join(maildir, sub));
      const now = Date.now();
      const name = `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}Q${++deliveries}.mailgate-test`;
      const tmpPath = join(maildir, 'tmp', name);
      await writeFile(tmpPath, rfc822, { mode: 0o600 });
      await chown(tmpPath, mail.uid, mail.gid);
      await rename(tmpPath, join(maildir, 'new', name));
    },
    stop: stopOnce(child, halt, dir),
  };
}

let deliveries = 0;

function readMasterPid(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, 'run', 'master.pid'), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Postfix: the SMTP upstream, delivering to the test Dovecot over LMTP

export interface PostfixServer {
  host: string;
  port: number;
  /** PID of the current Postfix master (changes on restart()). */
  pid: number;
  dir: string;
  /** Recipients in this domain whose user exists in Dovecot are delivered there; others get 550. */
  domain: string;
  logPath: string;
  readLog(): Promise<string>;
  /** As DovecotServer.waitForLog, on Postfix's maillog_file. */
  waitForLog(pattern: RegExp | string, opts?: { timeoutMs?: number; from?: number }): Promise<string>;
  /** Outage: SIGKILL the master and every Postfix process (open SMTP sessions drop); restart() brings it back. */
  kill(): Promise<void>;
  /** Stop (if running) and start again on the same port, with the same queue. */
  restart(): Promise<void>;
  /** Stop, wait until every Postfix process is gone, remove the temp dir. Idempotent, final. */
  stop(): Promise<void>;
}

const POSTFIX_DAEMONS = '/usr/lib/postfix/sbin';

function postfixMainCf(p: {
  dir: string;
  domain: string;
  lmtpPort: number;
  saslSocket: string | null;
  messageSizeLimit: number;
}): string {
  const { dir } = p;
  return `# Generated by src/devenv/servers.ts: a private Postfix for end-to-end tests.
compatibility_level = 3.6
queue_directory = ${join(dir, 'queue')}
data_directory = ${join(dir, 'data')}
mail_owner = postfix
setgid_group = postdrop
maillog_file = ${join(dir, 'maillog')}
maillog_file_prefixes = ${dir}
myhostname = upstream.mailgate.test
mydomain = mailgate.test
mydestination =
inet_interfaces = ${HOST}
# Listens on IPv4 loopback only, but IPv6 must be on: XCLIENT refuses ADDR=IPV6:... without it.
inet_protocols = all
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
smtpd_peername_lookup = no
smtpd_client_port_logging = yes
# The gateway identifies the user and the real client with XCLIENT (XCLIENT_README).
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8
# Master AUTH (the gateway's other login style) goes to Dovecot's SASL.
smtpd_sasl_auth_enable = ${p.saslSocket ? 'yes' : 'no'}
smtpd_sasl_type = dovecot
smtpd_sasl_path = ${p.saslSocket ?? 'private/auth'}
smtpd_sasl_authenticated_header = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
message_size_limit = ${p.messageSizeLimit}
virtual_mailbox_domains = ${p.domain}
virtual_mailbox_maps = texthash:${join(dir, 'etc', 'vmailbox')}
virtual_transport = lmtp:inet:${HOST}:${p.lmtpPort}
lmtp_host_lookup = native
smtp_host_lookup = native
# Nothing leaves this machine: mail for other domains bounces at once.
default_transport = error:5.7.1 the test mail server delivers only to ${p.domain}
relay_transport = error:5.7.1 the test mail server delivers only to ${p.domain}
`;
}

function postfixMasterCf(port: number): string {
  // service type private unpriv chroot wakeup maxproc command; nothing chrooted.
  return `${HOST}:${port} inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`;
}

/**
 * A private Postfix on a free loopback port: its own config, queue and data directories under
 * os.tmpdir(), delivering `users` at `domain` to the Dovecot given (started with `lmtp: true`)
 * over LMTP, accepting XCLIENT from loopback and master AUTH through Dovecot's SASL. Runs as a
 * foreground master (`master -d`) in its own process group, stopped by PID.
 */
export async function startPostfix(opts: {
  deliverTo: DovecotServer;
  /** Dovecot user names; `${user}@${domain}` are the deliverable recipients. */
  users: string[];
  domain?: string;
  messageSizeLimit?: number;
}): Promise<PostfixServer> {
  if (process.getuid?.() !== 0) throw new Error('startPostfix must run as root');
  if (opts.deliverTo.lmtpPort === null) throw new Error('startPostfix: start Dovecot with { lmtp: true }');
  if (!existsSync(join(POSTFIX_DAEMONS, 'master'))) {
    throw new Error('Postfix is not installed: install postfix (scripts/lib/install-deps.sh)');
  }
  const postfixUser = await getent('postfix');
  if (postfixUser === undefined) throw new Error('user postfix must exist (install postfix)');
  const domain = opts.domain ?? 'example.jp';
  const dir = await mkdtemp(join(tmpdir(), 'mailgate-postfix-'));
  await chmod(dir, 0o755);
  const etc = join(dir, 'etc');
  const logPath = join(dir, 'maillog');
  try {
    await mkdir(etc, { mode: 0o755 });
    await mkdir(join(dir, 'queue'), { mode: 0o755 });
    await mkdir(join(dir, 'data'), { mode: 0o700 });
    await chown(join(dir, 'data'), postfixUser.uid, postfixUser.gid);
    await writeFile(join(etc, 'vmailbox'), opts.users.map((u) => `${u}@${domain} ${u}\n`).join(''), {
      mode: 0o644,
    });
  } catch (err) {
    await removeDir(dir);
    throw err;
  }
  const postfix = (args: string[]) => execFileP('postfix', ['-c', etc, ...args], { timeout: 30_000 });
  let checked = false;

  const launch = async (port: number): Promise<ChildProcess> => {
    await writeFile(
      join(etc, 'main.cf'),
      postfixMainCf({
        dir,
        domain,
        lmtpPort: opts.deliverTo.lmtpPort!,
        saslSocket: opts.deliverTo.saslSocket,
        messageSizeLimit: opts.messageSizeLimit ?? 10_240_000,
      }),
      { mode: 0o644 },
    );
    await writeFile(join(etc, 'master.cf'), postfixMasterCf(port), { mode: 0o644 });
    // Creates the queue's subdirectories with their owners and checks the configuration; it
    // takes ~2 s (postfix-script walks every file), so only before the first start.
    if (!checked) {
      await postfix(['check']);
      checked = true;
    }
    const child = spawn(join(POSTFIX_DAEMONS, 'master'), ['-c', etc, '-d'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: master's own shutdown signals the group, and kill() can too.
      detached: true,
    });
    let out = '';
    const collect = (chunk: Buffer): void => {
      out = (out + chunk.toString('utf8')).slice(-8192);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.on('error', () => {});
    const live = liveChildren();
    live.add(child);
    child.once('exit', () => live.delete(child));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (exited(child)) {
        const log = await tail(logPath);
        const why = `postfix master exited (${child.exitCode ?? child.signalCode}) while starting on port ${port}`;
        if (/Address already in use/i.test(log + out)) throw new AddressInUse(why);
        throw new Error(`${why}\n${out}\n--- ${logPath} ---\n${log}`);
      }
      const greeting = await firstLine(port, undefined, 1_000);
      if (greeting?.startsWith('220')) return child;
      await sleep(POLL_MS);
    }
    await halt(child, 'SIGKILL');
    throw new Error(
      `postfix on port ${port} gave no 220 greeting within ${START_TIMEOUT_MS} ms\n${await tail(logPath)}`,
    );
  };

  const halt = async (child: ChildProcess, signal: NodeJS.Signals): Promise<void> => {
    const pid = child.pid;
    const pids = pid === undefined ? [] : [pid, ...descendants(pid)];
    if (pid !== undefined && !exited(child)) {
      try {
        process.kill(-pid, signal); // the process group: master and every service it started
      } catch {
        child.kill(signal);
      }
    }
    await waitGone(child, pids, 'postfix');
  };

  const launched = await launchOnFreePorts(dir, () => freePort(HOST), launch);
  const port = launched.ports;
  let current: ChildProcess | undefined = launched.child;
  let stopped = false;
  const readLog = async (): Promise<string> => {
    try {
      return await readFile(logPath, 'utf8');
    } catch {
      return '';
    }
  };
  const stopCurrent = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = current;
    if (proc === undefined) return;
    current = undefined;
    await halt(proc, signal);
  };

  const server: PostfixServer = {
    host: HOST,
    port,
    pid: current.pid!,
    dir,
    domain,
    logPath,
    readLog,
    waitForLog: (pattern, o = {}) => waitForLogLine('Postfix', logPath, readLog, pattern, o),
    async kill() {
      await stopCurrent('SIGKILL');
    },
    async restart() {
      if (stopped) throw new Error('PostfixServer.restart() after stop(): its directory is gone');
      await stopCurrent('SIGTERM');
      current = await relaunchOnPort(launch, port);
      server.pid = current.pid!;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopCurrent('SIGTERM');
      await removeDir(dir);
    },
  };
  return server;
}

// ---------------------------------------------------------------------------------------------
// nginx's mail proxy: a peer for scripts/bench

const NGINX_MAIL_MODULE = '/usr/lib/nginx/modules/ngx_mail_module.so';

/** One IMAP listener of the nginx mail proxy. */
export interface NginxImapServer {
  name: string;
  /** Implicit TLS (IMAPS) with the proxy's certificate. */
  tls: boolean;
  /** The auth_http URL (host:port/path) that checks this listener's logins. */
  authHttp: string;
  /** proxy_buffer: nginx's default is 4k. */
  proxyBuffer?: string;
}

export interface NginxMailProxy {
  /** Port of each listener, by name. */
  ports: Record<string, number>;
  /** PID of the nginx master. */
  pid: number;
  dir: string;
  /** SIGTERM, wait until the master and its workers are gone, remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/**
 * A private nginx mail proxy (Debian nginx + libnginx-mod-mail) on free loopback ports, one
 * IMAP listener per entry of `servers`, each asking its auth_http responder where to send the
 * login. The master runs in the foreground (`daemon off`) as our child, with its own pid file,
 * error log and prefix directory; `worker_processes auto` (one per core), like `serve`.
 */
export async function startNginxMailProxy(opts: {
  servers: NginxImapServer[];
  /** Needed when a listener has `tls`. */
  certificate?: { cert: string; key: string };
  /** Connections per worker (client and upstream sockets both count). */
  workerConnections?: number;
}): Promise<NginxMailProxy> {
  if (!existsSync(NGINX_MAIL_MODULE)) {
    throw new Error(
      `${NGINX_MAIL_MODULE} is missing: install nginx-light and libnginx-mod-mail (scripts/lib/install-deps.sh)`,
    );
  }
  const dir = await mkdtemp(join(tmpdir(), 'mailgate-nginx-'));
  const confPath = join(dir, 'nginx.conf');
  const logPath = join(dir, 'error.log');
  const workerConnections = opts.workerConnections ?? 12_000;
  const conf = (ports: number[]): string => {
    const servers = opts.servers.map((s, i) => {
      const tls = s.tls
        ? `    ssl_certificate ${opts.certificate?.cert};\n    ssl_certificate_key ${opts.certificate?.key};\n`
        : '';
      return `  server {
    listen ${HOST}:${ports[i]}${s.tls ? ' ssl' : ''};
    protocol imap;
    auth_http ${s.authHttp};
${tls}${s.proxyBuffer ? `    proxy_buffer ${s.proxyBuffer};\n` : ''}  }`;
    });
    return `# Generated by src/devenv/servers.ts: a private nginx mail proxy (scripts/bench's peer).
load_module ${NGINX_MAIL_MODULE};
daemon off;
worker_processes auto;
worker_rlimit_nofile ${Math.min(19_000, workerConnections + 1_000)};
pid ${join(dir, 'nginx.pid')};
error_log ${logPath} warn;
events {
  worker_connections ${workerConnections};
}
mail {
  imap_auth login plain;
  imap_capabilities IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+;
  proxy_pass_error_message on;
${servers.join('\n')}
}
`;
  };
  if (opts.servers.some((s) => s.tls) && opts.certificate === undefined) {
    throw new Error('startNginxMailProxy: a TLS listener needs `certificate`');
  }

  const launch = async (ports: number[]): Promise<ChildProcess> => {
    await writeFile(confPath, conf(ports));
    const { child, output, spawned } = spawnServer(
      'nginx',
      ['-p', dir, '-e', logPath, '-c', confPath],
      'nginx-light and libnginx-mod-mail',
    );
    await spawned;
    const deadline = Date.now() + START_TIMEOUT_MS;
    const plain = opts.servers.flatMap((s, i) => (s.tls ? [] : [ports[i]!]));
    while (Date.now() < deadline) {
      if (exited(child)) {
        const log = await tail(logPath);
        const why = `nginx exited (${child.exitCode ?? child.signalCode}) while starting`;
        if (/Address already in use/i.test(log + output())) throw new AddressInUse(why);
        throw new Error(`${why}\n${output()}\n--- ${logPath} ---\n${log}`);
      }
      // nginx binds every listener before it starts a worker: one greeting means all are up.
      const port = plain[0] ?? ports[0]!;
      const up =
        plain.length > 0
          ? (await firstLine(port, 'a LOGOUT\r\n', 1_000))?.startsWith('* OK')
          : await new Promise<boolean>((resolve) => {
              const s = connect({ host: HOST, port }, () => {
                s.destroy();
                resolve(true);
              });
              s.on('error', () => resolve(false));
            });
      if (up) return child;
      await sleep(POLL_MS);
    }
    await halt(child);
    throw new Error(
      `nginx gave no greeting within ${START_TIMEOUT_MS} ms\n${output()}\n${await tail(logPath)}`,
    );
  };
  const halt = async (child: ChildProcess): Promise<void> => {
    const pids = child.pid === undefined ? [] : [child.pid, ...descendants(child.pid)];
    if (!exited(child)) child.kill('SIGTERM');
    await waitGone(child, pids, 'nginx');
  };

  const pick = async (): Promise<number[]> => {
    const ports: number[] = [];
    for (const _ of opts.servers) ports.push(await freePort(HOST));
    return ports;
  };
  const { ports, child } = await launchOnFreePorts(dir, pick, launch);
  return {
    ports: Object.fromEntries(opts.servers.map((s, i) => [s.name, ports[i]!])),
    pid: child.pid!,
    dir,
    stop: stopOnce(child, halt, dir),
  };
}

/** What the auth_http responder (src/devenv/nginx-auth.ts) knows. */
export interface NginxAuthConfig {
  /** By login (lower case): the plaintext password (/plain), its argon2 PHC hash (/argon2), the store's user. */
  accounts: Record<string, { password: string; hash: string; upstreamUser: string }>;
  backend: { host: string; port: number };
  masterUser: string;
  masterPassword: string;
  maxConcurrentVerifies: number;
}

export interface NginxAuthResponder {
  port: number;
  pid: number;
  /** SIGTERM, wait for exit, remove its config. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts the auth_http responder for startNginxMailProxy as a process of its own (so its CPU
 * can be counted as nginx's), from the built dist/devenv/nginx-auth.js, on a free loopback port.
 */
export async function startNginxAuthResponder(config: NginxAuthConfig): Promise<NginxAuthResponder> {
  const dir = await mkdtemp(join(tmpdir(), 'mailgate-nginx-auth-'));
  const configPath = join(dir, 'config.json');
  await writeFile(configPath, JSON.stringify(config), { mode: 0o600 });
  // From src/devenv (tests run the sources) or dist/devenv alike: the built responder.
  const script = join(import.meta.dirname, '../../dist/devenv/nginx-auth.js');
  if (!existsSync(script)) {
    await removeDir(dir);
    throw new Error(`${script} is missing: run npm run build first`);
  }
  const child = spawn(process.execPath, [script, configPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  child.on('error', () => {});
  liveChildren().add(child);
  child.once('exit', () => liveChildren().delete(child));
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        out += chunk.toString('utf8');
        const m = /^listening (\d+)\n/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', (code) => reject(new Error(`nginx auth responder exited (${code}) while starting`)));
      setTimeout(() => reject(new Error('nginx auth responder did not start within 20 s')), START_TIMEOUT_MS);
    });
    let stopped = false;
    return {
      port,
      pid: child.pid!,
      async stop() {
        if (stopped) return;
        stopped = true;
        if (!exited(child)) child.kill('SIGTERM');
        await waitGone(child, child.pid === undefined ? [] : [child.pid], 'nginx auth responder');
        await removeDir(dir);
      },
    };
  } catch (err) {
    child.kill('SIGKILL');
    await removeDir(dir);
    throw err;
  }
}
