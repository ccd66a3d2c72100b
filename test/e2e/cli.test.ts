// bin/mailgate as operators run it: a child process on the built dist/, against a private Redis.
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: config values reference ${VAR} on purpose

import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { verify } from '@node-rs/argon2';
import type { Command } from 'commander';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IMAP_PASSWORD_ALPHABET } from '../../src/auth/passwords.js';
import { buildProgram } from '../../src/cli/main.js';
import { freePort } from '../../src/devenv/ports.js';
import { type RedisServer, startRedis } from '../../src/devenv/servers.js';
import { type Run, runMailgate } from '../support/cli.js';

const _execFileP = promisify(execFile);

const UPSTREAM_SECRET = 'upstream-Secret-4711';
const PRIMARY_PASSWORD = 'Primary-Pw-äö-9';
const ALICE = 'alice@example.jp';
const BOB = 'bob@example.jp';

/** Every run of this file, for the check that no secret leaks into any output. */
const runs: Run[] = [];

async function mailgate(args: string[], opts: Parameters<typeof runMailgate>[1] = {}): Promise<Run> {
  const run = await runMailgate(args, opts);
  runs.push(run);
  return run;
}

const tempDirs: string[] = [];
function writeConfig(config: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'mailgate-cli-test-'));
  tempDirs.push(dir);
  const file = join(dir, 'mailgate.yaml');
  writeFileSync(file, JSON.stringify(config, null, 2)); // JSON is YAML
  return file;
}

/** Stderr lines that are not the audit log (JSON lines from the logger). */
function messages(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{'));
}

const STACK_FRAME = /^\s+at /m;

let redis: RedisServer;
let client: Redis;
let configFile: string;
const keyPrefix = `cli${process.pid}x${Date.now()}:`;

function baseConfig(url: string): Record<string, unknown> {
  return {
    redis: { url, keyPrefix },
    geo: { domesticCountries: ['JP'] },
    passwords: { argon2: { memoryKiB: 64, iterations: 1, parallelism: 1 } },
  };
}

beforeAll(async () => {
  redis = await startRedis({ appendOnly: false });
  client = new Redis(redis.url);
  configFile = writeConfig(baseConfig(redis.url));
});

afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** Every command path, from the program itself: the root, groups and leaves (not `help`). */
function commandPaths(cmd: Command, prefix: string[] = []): string[][] {
  return [prefix, ...cmd.commands.flatMap((c) => commandPaths(c, [...prefix, c.name()]))];
}

describe('--help', () => {
  const paths = commandPaths(buildProgram());

  it('covers every command', () => {
    expect(paths.map((p) => p.join(' '))).toEqual(
      expect.arrayContaining([
        '',
        'serve',
        'check-config',
        'account',
        'account add',
        'account show',
        'imap-password',
        'imap-password issue',
        'imap-password revoke',
        'rollout',
        'rollout status',
        'rollout overseas',
        'rollout domestic',
      ]),
    );
  });

  it.each(paths.map((p) => [p.join(' ') || '(program)', p] as const))(
    '%s --help exits 0 and shows an example',
    async (_name, path) => {
      const r = await mailgate([...path, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: ${['mailgate', ...path].join(' ')}`);
      expect(r.stdout).toMatch(/\nExamples?:\n {2}(echo .*\| )?mailgate /);
      expect(r.stderr).toBe('');
    },
  );
});

describe('check-config', () => {
  const withImap = (url: string) => ({
    ...baseConfig(url),
    imap: {
      listen: [{ host: '127.0.0.1', port: 1993, tls: 'none' }],
      upstream: {
        servers: ['127.0.0.1:10143'],
        login: { style: 'master', user: 'proxy', password: '${MAILGATE_UPSTREAM_PASSWORD}' },
      },
    },
  });

  it('prints OK and the effective config with the secret redacted', async () => {
    const file = writeConfig(withImap('redis://:redis-Secret-1@127.0.0.1:6379/0'));
    const r = await mailgate(['check-config', '--config', file], {
      env: { MAILGATE_UPSTREAM_PASSWORD: UPSTREAM_SECRET },
    });
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe(`${file}: OK`);
    const printed = JSON.parse(r.stdout.slice(r.stdout.indexOf('\n') + 1)) as {
      imap: { upstream: { login: { password: string } } };
      redis: { url: string };
    };
    expect(printed.imap.upstream.login.password).toBe('[redacted]');
    expect(printed.redis.url).toBe('redis://[redacted]@127.0.0.1:6379/0');
    expect(r.stdout).not.toContain(UPSTREAM_SECRET);
    expect(r.stdout).not.toContain('redis-Secret-1');
    expect(r.stderr).toBe('');
  });

  it('--json prints only the redacted config', async () => {
    const file = writeConfig(withImap('redis://127.0.0.1:6379/0'));
    const r = await mailgate(['check-config', '--config', file, '--json'], {
      env: { MAILGATE_UPSTREAM_PASSWORD: UPSTREAM_SECRET },
    });
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.stdout) as { imap: { upstream: { login: { password: string } } } };
    expect(printed.imap.upstream.login.password).toBe('[redacted]');
    expect(r.stdout).not.toContain(UPSTREAM_SECRET);
  });

  it('an invalid config exits 2 with one line naming the key', async () => {
    const config = withImap('redis://127.0.0.1:6379/0');
    config.imap.upstream.servers = ['no-port-here'];
    const file = writeConfig(config);
    const r = await mailgate(['check-config', '--config', file], {
      env: { MAILGATE_UPSTREAM_PASSWORD: UPSTREAM_SECRET },
    });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('mailgate: imap.upstream.servers[0]: expected HOST:PORT (IPv6 as [addr]:port)\n');
  });

  it('an unset environment variable exits 2 naming the key and the variable', async () => {
    const file = writeConfig(withImap('redis://127.0.0.1:6379/0'));
    // An empty variable counts as unset (as with ${VAR:-default} in the shell).
    const r = await mailgate(['check-config', '--config', file], { env: { MAILGATE_UPSTREAM_PASSWORD: '' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'mailgate: imap.upstream.login.password: environment variable MAILGATE_UPSTREAM_PASSWORD is not set\n',
    );
  });

  it('a missing config file exits 2 with a clear message', async () => {
    const file = join(tmpdir(), `mailgate-missing-${process.pid}`, 'mailgate.yaml');
    const r = await mailgate(['check-config', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`mailgate: cannot read config file ${file}: ENOENT\n`);
  });

  it('operator commands stop at an invalid config the same way', async () => {
    const file = writeConfig({
      ...baseConfig('redis://127.0.0.1:6379/0'),
      geo: { domesticCountries: ['jp'] },
    });
    const r = await mailgate(['rollout', 'status', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('mailgate: geo.domesticCountries[0]: expected an ISO 3166 alpha-2 code\n');
  });
});

describe('operator commands', () => {
  const cfg = () => ['--config', configFile];
  const issued: string[] = [];
  const accountKey = (login: string) => `${keyPrefix}account:${login}`;

  it('account add reads the primary password from stdin and prints JSON', async () => {
    const r = await mailgate(
      [
        'account',
        'add',
        'Alice@Example.JP',
        '--primary-password-stdin',
        '--alias',
        'alice',
        '--alias',
        'a.smith@example.jp',
        '--msisdn',
        '+819012345678',
        '--json',
        ...cfg(),
      ],
      { input: `${PRIMARY_PASSWORD}\n` },
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      login: ALICE,
      aliases: ['alice', 'a.smith@example.jp'],
      msisdn: '+819012345678',
      upstreamUser: null,
      upstream: null,
      primaryPassword: true,
      imapPassword: null,
      domestic: null,
      exemptUntil: null,
    });
    expect(r.stdout).not.toContain('$argon2');
    expect(messages(r.stderr)).toEqual([]);
    // The trailing newline is not part of the password.
    const primaryHash = await client.hget(accountKey(ALICE), 'primaryHash');
    expect(primaryHash).toMatch(/^\$argon2id\$v=19\$m=64,t=1,p=1\$/);
    expect(await verify(primaryHash!, PRIMARY_PASSWORD)).toBe(true);
  });

  it('account add without --json prints one line', async () => {
    const r = await mailgate(['account', 'add', BOB, ...cfg()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`created ${BOB}\n`);
  });

  it('adding an existing account exits 1: already exists', async () => {
    const r = await mailgate(['account', 'add', ALICE, ...cfg()]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(messages(r.stderr)).toEqual([`mailgate: account "${ALICE}" already exists`]);
    expect(r.stderr).not.toMatch(STACK_FRAME);
  });

  it('an alias already in use exits 1', async () => {
    const r = await mailgate(['account', 'add', 'carol@example.jp', '--alias', 'alice', ...cfg()]);
    expect(r.code).toBe(1);
    expect(messages(r.stderr)).toEqual([
      'mailgate: the login or an alias is already used by another account',
    ]);
  });

  it('a bad msisdn exits 2 and creates nothing', async () => {
    const r = await mailgate(['account', 'add', 'dave@example.jp', '--msisdn', '090-1234-5678', ...cfg()]);
    expect(r.code).toBe(2);
    expect(messages(r.stderr)).toEqual([
      'mailgate: msisdn "090-1234-5678" is not an E.164 number like +819012345678',
    ]);
    expect(await client.exists(accountKey('dave@example.jp'))).toBe(0);
  });

  it('account show shows the aliases and never a hash', async () => {
    const r = await mailgate(['account', 'show', ALICE, ...cfg()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`login:          ${ALICE}`);
    expect(r.stdout).toContain('aliases:        alice, a.smith@example.jp');
    expect(r.stdout).toContain('msisdn:         +819012345678');
    expect(r.stdout).toContain('primary:        set');
    expect(r.stdout).toContain('imap password:  not set');
    expect(r.stdout).not.toContain('$argon2');
    const json = await mailgate(['account', 'show', 'alice', '--json', ...cfg()]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ login: ALICE, aliases: ['alice', 'a.smith@example.jp'] });
    expect(json.stdout).not.toContain('$argon2');
    expect(json.stdout).not.toMatch(/hash/i);
  });

  it('an unknown login exits 1: no account', async () => {
    for (const args of [
      ['account', 'show', 'nobody@example.jp'],
      ['imap-password', 'issue', 'nobody@example.jp'],
      ['imap-password', 'revoke', 'nobody@example.jp'],
      ['rollout', 'domestic', 'enforce', '--login', 'nobody@example.jp'],
    ]) {
      const r = await mailgate([...args, ...cfg()]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stdout).toBe('');
      expect(messages(r.stderr), args.join(' ')).toEqual([
        expect.stringMatching(/^mailgate: no account "nobody@/),
      ]);
    }
  });

  it('imap-password issue prints a 10-character password once and stores only its hash', async () => {
    const r = await mailgate(['imap-password', 'issue', ALICE, ...cfg()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\S{10}\n$/);
    const password = r.stdout.trim();
    issued.push(password);
    for (const c of password) expect(IMAP_PASSWORD_ALPHABET).toContain(c);
    const hash = await client.hget(accountKey(ALICE), 'imapHash');
    expect(hash).toMatch(/^\$argon2id\$/);
    expect(await verify(hash!, password)).toBe(true);
    expect(await verify(hash!, PRIMARY_PASSWORD)).toBe(false);
    // Nowhere in Redis in the clear.
    const fields = await client.hgetall(accountKey(ALICE));
    expect(JSON.stringify(fields)).not.toContain(password);

    const show = await mailgate(['account', 'show', ALICE, ...cfg()]);
    expect(show.stdout).toMatch(/imap password: {2}set \d{4}-\d\d-\d\dT/);
  });

  it('imap-password issue --if-absent issues nothing when one exists', async () => {
    const before = await client.hget(accountKey(ALICE), 'imapHash');
    const r = await mailgate(['imap-password', 'issue', ALICE, '--if-absent', ...cfg()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${ALICE} already has an IMAP-only password; nothing issued\n`);
    const json = await mailgate(['imap-password', 'issue', 'alice', '--if-absent', '--json', ...cfg()]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ login: ALICE, password: null, issued: false });
    expect(await client.hget(accountKey(ALICE), 'imapHash')).toBe(before);
  });

  it('imap-password issue --if-absent issues one when there is none', async () => {
    const r = await mailgate(['imap-password', 'issue', BOB, '--if-absent', '--json', ...cfg()]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { login: string; password: string; issued: boolean };
    expect(out).toMatchObject({ login: BOB, issued: true });
    expect(out.password).toHaveLength(10);
    issued.push(out.password);
    expect(await verify((await client.hget(accountKey(BOB), 'imapHash'))!, out.password)).toBe(true);
  });

  it('imap-password revoke removes it', async () => {
    const r = await mailgate(['imap-password', 'revoke', BOB, ...cfg()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`revoked the IMAP-only password of ${BOB}\n`);
    expect(await client.hget(accountKey(BOB), 'imapHash')).toBeNull();
    const show = await mailgate(['account', 'show', BOB, ...cfg()]);
    expect(show.stdout).toContain('imap password:  not set');
    const again = await mailgate(['imap-password', 'revoke', BOB, '--json', ...cfg()]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ login: BOB, revoked: false });
  });

  it('rollout overseas enforce, shown by rollout status', async () => {
    const before = await mailgate(['rollout', 'status', '--json', ...cfg()]);
    expect(JSON.parse(before.stdout)).toMatchObject({
      overseas: { phase: 'off', scheduled: [] },
      domesticWaves: [],
      accounts: 2,
      domesticCohorts: [],
    });
    const r = await mailgate(['rollout', 'overseas', 'enforce', ...cfg()]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^overseas restriction enforce from \S+; in force now: enforce\n$/);
    const after = await mailgate(['rollout', 'status', '--json', ...cfg()]);
    expect(after.code).toBe(0);
    expect(JSON.parse(after.stdout)).toMatchObject({ overseas: { phase: 'enforce' }, accounts: 2 });
    const text = await mailgate(['rollout', 'status', ...cfg()]);
    expect(text.stdout).toMatch(/^overseas restriction: +enforce$/m);
  });

  it('rollout overseas --at schedules the phase', async () => {
    const at = new Date(Date.now() + 3_600_000).toISOString();
    const r = await mailgate(['rollout', 'overseas', 'off', '--at', at, '--json', ...cfg()]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      rule: { phase: 'off', at: Date.parse(at) },
      phaseNow: 'enforce',
    });
    const status = await mailgate(['rollout', 'status', '--json', ...cfg()]);
    expect(JSON.parse(status.stdout).overseas).toEqual({
      phase: 'enforce',
      scheduled: [{ phase: 'off', at }],
    });
  });

  it('rollout domestic for named logins', async () => {
    const r = await mailgate([
      'rollout',
      'domestic',
      'enforce',
      '--login',
      ALICE,
      '--login',
      'BOB@example.jp',
      ...cfg(),
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^domestic restriction enforce for 2 account\(s\) from \S+\n$/);
    for (const login of [ALICE, BOB]) {
      const show = await mailgate(['account', 'show', login, '--json', ...cfg()]);
      expect(JSON.parse(show.stdout)).toMatchObject({ domestic: { phase: 'enforce' } });
    }
    const status = await mailgate(['rollout', 'status', '--json', ...cfg()]);
    expect(JSON.parse(status.stdout).domesticCohorts).toEqual([
      { phase: 'enforce', cohort: 'explicit', accounts: 2, withoutImapPassword: 1 },
    ]);
  });

  it('rollout domestic --users FILE', async () => {
    const file = join(dirname(configFile), 'wave.txt');
    writeFileSync(file, `# wave 2\n${ALICE}\n\n${BOB}  # second\n`);
    const r = await mailgate(['rollout', 'domestic', 'warn', '--users', file, '--json', ...cfg()]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ phase: 'warn', logins: [ALICE, BOB] });
  });

  it('rollout domestic --all', async () => {
    const r = await mailgate(['rollout', 'domestic', 'warn', '--all', '--json', ...cfg()]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ phase: 'warn', percent: 100 });
    const status = await mailgate(['rollout', 'status', '--json', ...cfg()]);
    expect(JSON.parse(status.stdout)).toMatchObject({
      overseas: { phase: 'enforce' },
      domesticWaves: [{ percent: 100, phase: 'warn', active: true }],
      domesticCohorts: [{ phase: 'warn', cohort: 'all', accounts: 2 }],
    });
  });

  it('rollout domestic needs exactly one target: exit 2, nothing changed', async () => {
    for (const args of [
      ['rollout', 'domestic', 'enforce'],
      ['rollout', 'domestic', 'enforce', '--all', '--login', ALICE],
      ['rollout', 'domestic', 'enforce', '--percent', '10', '--all'],
    ]) {
      const r = await mailgate([...args, ...cfg()]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(messages(r.stderr)).toEqual([
        'mailgate: give exactly one of --login LOGIN..., --users FILE, --percent N, --all',
      ]);
    }
    const status = await mailgate(['rollout', 'status', '--json', ...cfg()]);
    expect(JSON.parse(status.stdout).domesticCohorts).toEqual([
      expect.objectContaining({ phase: 'warn', cohort: 'all', accounts: 2 }),
    ]);
  });

  it('bad percentages, times and files exit 2 and change nothing', async () => {
    const before = (await mailgate(['rollout', 'status', '--json', ...cfg()])).stdout;
    const missing = join(dirname(configFile), 'no-such-file.txt');
    const empty = join(dirname(configFile), 'empty.txt');
    writeFileSync(empty, '# nobody\n');
    for (const [args, message] of [
      [['--percent', '0'], /--percent must be a number above 0 and at most 100/],
      [['--percent', '101'], /--percent must be/],
      [['--percent', 'ten'], /--percent must be/],
      [['--percent', '10.123'], /--percent must be/],
      [['--all', '--at', 'tomorrow'], /--at must be an ISO 8601 time/],
      [['--users', missing], /cannot read .*no-such-file\.txt: ENOENT/],
      [['--users', empty], /no logins/],
    ] as Array<[string[], RegExp]>) {
      const r = await mailgate(['rollout', 'domestic', 'enforce', ...args, ...cfg()]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(messages(r.stderr)).toEqual([expect.stringMatching(message)]);
    }
    expect(
      (await mailgate(['rollout', 'status', '--json', ...cfg()])).stdout.replace(/"now":"[^"]+"/, ''),
    ).toBe(before.replace(/"now":"[^"]+"/, ''));
  });

  it('an unknown login in a --users file changes no account', async () => {
    const file = join(dirname(configFile), 'wave-bad.txt');
    writeFileSync(file, `${ALICE}\nnobody@example.jp\n`);
    const r = await mailgate(['rollout', 'domestic', 'off', '--users', file, ...cfg()]);
    expect(r.code).toBe(1);
    expect(messages(r.stderr)).toEqual(['mailgate: no account "nobody@example.jp"; nothing changed']);
    const show = await mailgate(['account', 'show', ALICE, '--json', ...cfg()]);
    expect(JSON.parse(show.stdout)).toMatchObject({ domestic: { phase: 'warn' } });
  });

  it('exempt and unlock: unknown login exits 1, a past --until exits 2', async () => {
    const until = new Date(Date.now() + 86_400_000).toISOString();
    const ok = await mailgate(['rollout', 'exempt', ALICE, '--until', until, '--json', ...cfg()]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ login: ALICE, until });
    expect(
      (await mailgate(['rollout', 'exempt', ALICE, '--until', '2001-01-01T00:00Z', ...cfg()])).code,
    ).toBe(2);
    expect(
      (await mailgate(['rollout', 'exempt', 'nobody@example.jp', '--until', until, ...cfg()])).code,
    ).toBe(1);
    const end = await mailgate(['rollout', 'exempt', ALICE, '--until', 'now', '--json', ...cfg()]);
    expect(JSON.parse(end.stdout)).toEqual({ login: ALICE, until: null });
    expect((await mailgate(['unlock', ALICE, ...cfg()])).code).toBe(0);
    const unknown = await mailgate(['unlock', 'nobody@example.jp', ...cfg()]);
    expect(unknown.code).toBe(1);
    expect(messages(unknown.stderr)).toEqual(['mailgate: no account "nobody@example.jp"']);
  });

  it('a bad phase exits 2', async () => {
    for (const args of [
      ['rollout', 'overseas', 'on'],
      ['rollout', 'domestic', 'ENFORCE', '--all'],
    ]) {
      const r = await mailgate([...args, ...cfg()]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(messages(r.stderr)).toEqual([
        expect.stringMatching(/^mailgate: phase must be off, warn or enforce/),
      ]);
    }
    const status = await mailgate(['rollout', 'status', '--json', ...cfg()]);
    expect(JSON.parse(status.stdout)).toMatchObject({ overseas: { phase: 'enforce' } });
  });

  it('unknown options and missing arguments exit 2', async () => {
    expect((await mailgate(['account', 'show', ...cfg()])).code).toBe(2);
    expect((await mailgate(['account', 'show', ALICE, '--colour', ...cfg()])).code).toBe(2);
    expect((await mailgate(['no-such-command'])).code).toBe(2);
  });

  it('Redis unreachable: exit 1 with one line, no stack trace', async () => {
    const port = await freePort();
    const file = writeConfig(baseConfig(`redis://:redis-pw-x@127.0.0.1:${port}/0`));
    const r = await mailgate(['account', 'show', ALICE, '--config', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^mailgate: Redis unreachable at redis://127\\.0\\.0\\.1:${port}/0`));
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).not.toMatch(STACK_FRAME);
    expect(r.stderr).not.toContain('redis-pw-x');
  });

  it('works from any working directory', async () => {
    const r = await mailgate(['rollout', 'status', '--json', '--config', configFile], { cwd: tmpdir() });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ overseas: { phase: 'enforce' } });
    // A relative --config is relative to the working directory.
    const rel = await mailgate(['rollout', 'status', '--json', '--config', 'mailgate.yaml'], {
      cwd: dirname(configFile),
    });
    expect(rel.code).toBe(0);
    expect(JSON.parse(rel.stdout)).toMatchObject({ overseas: { phase: 'enforce' } });
  });

  it('no output but the issue command’s own stdout ever contains an issued password or the primary', () => {
    expect(issued).toHaveLength(2);
    for (const run of runs) {
      const isIssue = run.args[0] === 'imap-password' && run.args[1] === 'issue';
      for (const password of issued) {
        const own = isIssue && run.stdout.includes(password);
        if (!own) expect(run.stdout, run.args.join(' ')).not.toContain(password);
        expect(run.stderr, run.args.join(' ')).not.toContain(password);
      }
      expect(`${run.stdout}${run.stderr}`, run.args.join(' ')).not.toContain(PRIMARY_PASSWORD);
      expect(`${run.stdout}${run.stderr}`, run.args.join(' ')).not.toContain(UPSTREAM_SECRET);
    }
    // Each password was printed by exactly one run.
    for (const password of issued) {
      expect(runs.filter((r) => r.stdout.includes(password))).toHaveLength(1);
    }
  });
});
