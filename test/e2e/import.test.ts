// account import / remove / set-primary as operators run them: bin/mailgate on the built dist/,
// against a private Redis; and one real IMAP login with an imported bcrypt primary hash.

import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { hash as bcryptHash } from '@node-rs/bcrypt';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PasswordHasher } from '../../src/auth/passwords.js';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';
import { type Run, runMailgate } from '../support/cli.js';
import { startTestGateway, TEST_ARGON2 } from '../support/gateway.js';
import { RawClient } from '../support/raw-client.js';

const _execFileP = promisify(execFile);

const BULK = 100_000;
const BCRYPT_COST = 4;
/** A syntactically valid argon2id PHC string (an import only stores it). */
const PHC_A = '$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQxMjM0NTY$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGg';
const PHC_B = '$argon2id$v=19$m=64,t=1,p=1$b3RoZXJzYWx0MTIzNDU$b3RoZXJoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g';

const runs: Run[] = [];

async function mailgate(args: string[], input = ''): Promise<Run> {
  const run = await runMailgate([...args, '--config', configFile], { input });
  runs.push(run);
  return run;
}

/** Stderr lines that are neither the audit log (JSON) nor progress. */
function messages(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('{') && !l.startsWith('mailgate: import: '));
}

let redis: RedisServer;
let client: Redis;
let dir: string;
let configFile: string;
const keyPrefix = `imp${process.pid}:`;
const key = (login: string) => `${keyPrefix}account:${login}`;

function file(name: string, lines: Array<string | Record<string, unknown>>): string {
  const path = join(dir, name);
  writeFileSync(path, `${lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n')}\n`);
  return path;
}

interface Summary {
  created: number;
  updated: number;
  unchanged: number;
  rejected: number;
  changedFields: Record<string, number>;
  rejectedLines: Array<{ line: number; login: string | null; reason: string; message: string }>;
}

async function importJson(path: string): Promise<{ run: Run; s: Summary }> {
  const run = await mailgate(['account', 'import', path, '--json']);
  expect(run.stdout, run.stderr).not.toBe('');
  return { run, s: JSON.parse(run.stdout) as Summary };
}

beforeAll(async () => {
  redis = await startRedis({ appendOnly: false });
  client = new Redis(redis.url);
  dir = mkdtempSync(join(tmpdir(), 'mailgate-import-test-'));
  configFile = join(dir, 'mailgate.yaml');
  writeFileSync(
    configFile,
    JSON.stringify({
      redis: { url: redis.url, keyPrefix },
      geo: { domesticCountries: ['JP'] },
      passwords: { argon2: TEST_ARGON2 },
    }),
  );
});

afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('bulk import', () => {
  const snapshot = async () => {
    const logins = ['user0@example.jp', 'user4242@example.jp', `user${BULK - 1}@example.jp`];
    const pipe = client.pipeline();
    for (const l of logins) pipe.hgetall(key(l));
    for (const a of ['user4242', 'u4242@mail.example.jp']) pipe.get(`${keyPrefix}alias:${a}`);
    pipe.scard(`${keyPrefix}logins`);
    pipe.dbsize();
    return (await pipe.exec())?.map(([, v]) => v);
  };
  let before: unknown;

  it(`imports ${BULK.toLocaleString('en')} accounts from JSON lines through the CLI`, async () => {
    const path = join(dir, 'bulk.jsonl');
    const out = createWriteStream(path);
    for (let i = 0; i < BULK; i++) {
      const line = JSON.stringify({
        login: `user${i}@example.jp`,
        aliases: [`user${i}`, `u${i}@mail.example.jp`],
        msisdn: `+8190${String(i).padStart(8, '0')}`,
        primaryHash: i % 2 ? PHC_A : PHC_B,
      });
      if (!out.write(`${line}\n`)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'finish');

    const started = Date.now();
    const { run, s } = await importJson(path);
    const ms = Date.now() - started;
    expect(run.code, run.stderr).toBe(0);
    expect(s).toMatchObject({ created: BULK, updated: 0, unchanged: 0, rejected: 0, rejectedLines: [] });
    expect(messages(run.stderr)).toEqual([]);
    process.stderr.write(`bulk import: ${BULK} accounts in ${ms} ms, CLI start-up included\n`);
    expect(await client.scard(`${keyPrefix}logins`)).toBe(BULK);
    before = await snapshot();
  }, 60_000);

  it('account show finds an imported account by login and by each alias', async () => {
    for (const name of ['user4242@example.jp', 'user4242', 'U4242@Mail.Example.JP']) {
      const r = await mailgate(['account', 'show', name, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({
        login: 'user4242@example.jp',
        aliases: ['user4242', 'u4242@mail.example.jp'],
        msisdn: '+819000004242',
        primaryPassword: true,
        imapPassword: null,
      });
    }
    expect(await client.hget(key('user4243@example.jp'), 'primaryHash')).toBe(PHC_A);
  });

  it('re-importing the same file changes nothing and reports every line unchanged', async () => {
    const { run, s } = await importJson(join(dir, 'bulk.jsonl'));
    expect(run.code, run.stderr).toBe(0);
    expect(s).toMatchObject({ created: 0, updated: 0, unchanged: BULK, rejected: 0 });
    expect(await snapshot()).toEqual(before);
  }, 60_000);
});

describe('updates', () => {
  it('changes only what the line changes and keeps the IMAP-only password and fields it does not manage', async () => {
    const login = 'user10@example.jp';
    const issued = await mailgate(['imap-password', 'issue', login, '--json']);
    expect(issued.code, issued.stderr).toBe(0);
    await client.hset(key(login), 'futureField', 'kept'); // a field another part of mailgate may add
    const before = await client.hgetall(key(login));
    expect(before.imapHash).toMatch(/^\$argon2id\$/);

    const { run, s } = await importJson(file('msisdn.jsonl', [{ login, msisdn: '+819011112222' }]));
    expect(run.code, run.stderr).toBe(0);
    expect(s).toMatchObject({ updated: 1, changedFields: { msisdn: 1 } });
    expect(await client.hgetall(key(login))).toEqual({ ...before, msisdn: '+819011112222' });

    const again = await importJson(file('msisdn.jsonl', [{ login, msisdn: '+819011112222' }]));
    expect(again.s).toMatchObject({ unchanged: 1, updated: 0 });
  });

  it('a new primary hash bumps primaryVersion; the IMAP-only version stays', async () => {
    const login = 'user11@example.jp';
    const before = await client.hgetall(key(login));
    const { s } = await importJson(file('primary.jsonl', [{ login, primaryHash: PHC_B }]));
    expect(s).toMatchObject({ updated: 1, changedFields: { primaryHash: 1 } });
    const after = await client.hgetall(key(login));
    expect(after).toEqual({
      ...before,
      primaryHash: PHC_B,
      primaryVersion: String(Number(before.primaryVersion) + 1),
    });
  });

  it('an argon2 hash with m=,p=,t= order is stored in the standard order, so a re-import is unchanged', async () => {
    const reordered = PHC_A.replace('m=64,t=1,p=1', 'm=64,p=1,t=1');
    const path = file('reordered.jsonl', [{ login: 'reorder@example.jp', primaryHash: reordered }]);
    expect((await importJson(path)).s.created).toBe(1);
    expect(await client.hget(key('reorder@example.jp'), 'primaryHash')).toBe(PHC_A);
    expect((await importJson(path)).s.unchanged).toBe(1);
  });

  it('aliases are replaced: those no longer listed are freed, new ones claimed', async () => {
    const login = 'user12@example.jp';
    const { s } = await importJson(file('aliases.jsonl', [{ login, aliases: ['user12', 'twelve'] }]));
    expect(s).toMatchObject({ updated: 1, changedFields: { aliases: 1 } });
    expect(await client.get(`${keyPrefix}alias:twelve`)).toBe(login);
    expect(await client.get(`${keyPrefix}alias:user12`)).toBe(login);
    expect(await client.get(`${keyPrefix}alias:u12@mail.example.jp`)).toBeNull();
    expect(JSON.parse((await client.hget(key(login), 'aliases'))!)).toEqual(['user12', 'twelve']);
  });

  it('CSV: an empty cell clears msisdn; an empty primaryHash cell leaves the hash alone', async () => {
    const login = 'user13@example.jp';
    const hash = await client.hget(key(login), 'primaryHash');
    const path = file('clear.csv', ['login,msisdn,primaryHash', `${login},,`]);
    const { s } = await importJson(path);
    expect(s).toMatchObject({ updated: 1, changedFields: { msisdn: 1 } });
    expect(await client.hget(key(login), 'msisdn')).toBeNull();
    expect(await client.hget(key(login), 'primaryHash')).toBe(hash);
  });
});

describe('aliases moving between accounts in one file', () => {
  it('moves when the line releasing the alias comes first', async () => {
    await importJson(file('setup1.jsonl', [{ login: 'from@example.jp', aliases: ['moving'] }]));
    const { run, s } = await importJson(
      file('move.jsonl', [
        { login: 'from@example.jp', aliases: [] },
        { login: 'to@example.jp', aliases: ['moving'] },
      ]),
    );
    expect(run.code).toBe(0);
    expect(s).toMatchObject({ updated: 1, created: 1, rejected: 0 });
    expect(await client.get(`${keyPrefix}alias:moving`)).toBe('to@example.jp');
  });

  it('is rejected when the claiming line comes first, and moves on the next run', async () => {
    await importJson(file('setup2.jsonl', [{ login: 'old@example.jp', aliases: ['wanted'] }]));
    const path = file('claim-first.jsonl', [
      { login: 'new@example.jp', aliases: ['wanted'] },
      { login: 'old@example.jp', aliases: [] },
    ]);
    const first = await importJson(path);
    expect(first.run.code).toBe(1);
    expect(first.s).toMatchObject({ created: 0, updated: 1, rejected: 1 });
    expect(first.s.rejectedLines).toEqual([
      {
        line: 1,
        login: 'new@example.jp',
        reason: 'alias-taken',
        message: 'alias "wanted" belongs to "old@example.jp"',
      },
    ]);
    expect(await client.exists(key('new@example.jp'))).toBe(0); // nothing half-written
    const second = await importJson(path);
    expect(second.run.code).toBe(0);
    expect(second.s).toMatchObject({ created: 1, unchanged: 1 });
    expect(await client.get(`${keyPrefix}alias:wanted`)).toBe('new@example.jp');
  });

  it('two lines claiming one alias: the first gets it, the second is rejected whole', async () => {
    const { s } = await importJson(
      file('both.jsonl', [
        { login: 'first@example.jp', aliases: ['shared', 'own1'] },
        { login: 'second@example.jp', aliases: ['own2', 'shared'] },
      ]),
    );
    expect(s).toMatchObject({ created: 1, rejected: 1 });
    expect(s.rejectedLines[0]).toMatchObject({ line: 2, reason: 'alias-taken' });
    expect(await client.get(`${keyPrefix}alias:own2`)).toBeNull();
    expect(await client.exists(key('second@example.jp'))).toBe(0);
  });

  it('an alias that is another account’s login, and a login that is another account’s alias, are refused', async () => {
    const { s } = await importJson(
      file('cross.jsonl', [
        { login: 'x1@example.jp', aliases: ['user1@example.jp'] },
        { login: 'user1' }, // user1 is an alias of user1@example.jp
      ]),
    );
    expect(s.rejectedLines).toEqual([
      {
        line: 1,
        login: 'x1@example.jp',
        reason: 'alias-taken',
        message: 'alias "user1@example.jp" is the login of another account',
      },
      {
        line: 2,
        login: 'user1',
        reason: 'login-taken',
        message: 'the login is an alias of "user1@example.jp"',
      },
    ]);
  });
});

describe('bad input', () => {
  const dbState = async () => ({
    size: await client.dbsize(),
    user20: await client.hgetall(key('user20@example.jp')),
  });

  it('a missing file exits 2 with one line', async () => {
    const missing = join(dir, 'no-such-file.csv');
    const r = await mailgate(['account', 'import', missing]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`mailgate: cannot read ${missing}: ENOENT\n`);
  });

  it('an empty file exits 2 and writes nothing', async () => {
    const before = await dbState();
    for (const content of ['', '\n\n  \n']) {
      const path = join(dir, 'empty.jsonl');
      writeFileSync(path, content);
      const r = await mailgate(['account', 'import', path]);
      expect(r.code).toBe(2);
      expect(messages(r.stderr)).toEqual([`mailgate: ${path} is empty: no accounts to import`]);
    }
    expect(await dbState()).toEqual(before);
  });

  it('an unknown CSV column exits 2 before anything is written', async () => {
    const before = await dbState();
    const path = file('unknown.csv', ['login,msisdn,password', 'csv1@example.jp,+819012345678,secret']);
    const r = await mailgate(['account', 'import', path]);
    expect(r.code).toBe(2);
    expect(messages(r.stderr)).toEqual([
      'mailgate: line 1: unknown column "password" in the CSV header (columns: login, aliases, msisdn, primaryHash, upstreamUser, upstream, lang, tz)',
    ]);
    expect(await dbState()).toEqual(before);
  });

  it('rejects bad lines with their numbers and reasons, imports the good ones, and exits 1', async () => {
    const before = await client.hgetall(key('user20@example.jp'));
    const path = file('mixed.jsonl', [
      { login: 'good1@example.jp', msisdn: '+819012345678' },
      '{"login": "broken@example.jp", ',
      { login: 'user20@example.jp', msisdn: '090-1234-5678' },
      { login: 'user20@example.jp', primaryHash: '$2b$10$tooshort' },
      { login: 'bad login@example.jp' },
      { login: 'good2@example.jp', password: 'secret-Value-1' },
      '',
      { login: 'good1@example.jp' },
      '["not", "an", "object"]',
      { login: 'good3@example.jp', aliases: ['bad alias'] },
      { login: 'good4@example.jp', aliases: ['g4'], upstream: 'mail1.example.jp:143' },
    ]);
    const r = await mailgate(['account', 'import', path]);
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^line 2: malformed: not valid JSON: /);
    expect(lines.slice(1, -1)).toEqual([
      'line 3: bad-msisdn: msisdn "090-1234-5678" is not an E.164 number like +819012345678 (user20@example.jp)',
      'line 4: bad-hash: primaryHash: malformed bcrypt hash (version 2a, 2b or 2y, cost 04-31, 60 characters) (user20@example.jp)',
      'line 5: bad-login: login "bad login@example.jp" is not valid: 1-255 characters, no spaces, quotes or control characters (bad login@example.jp)',
      'line 6: unknown-field: unknown field "password" (fields: login, aliases, msisdn, primaryHash, upstreamUser, upstream, lang, tz) (good2@example.jp)',
      'line 8: duplicate: the login is already on line 1 (good1@example.jp)',
      'line 9: malformed: not a JSON object',
      'line 10: bad-alias: alias "bad alias" is not valid: 1-255 characters, no spaces, quotes or control characters (good3@example.jp)',
    ]);
    expect(lines.at(-1)).toMatch(
      new RegExp(
        `^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: created 2, updated 0, unchanged 0, rejected 8; 11 lines \\(jsonl\\)`,
      ),
    );
    expect(messages(r.stderr)).toEqual(['mailgate: 8 line(s) rejected; every other line was imported']);
    expect(r.stdout).not.toContain('secret-Value-1');
    expect(await client.hgetall(key('user20@example.jp'))).toEqual(before);
    expect(
      await client.exists(key('good2@example.jp'), key('good3@example.jp'), key('broken@example.jp')),
    ).toBe(0);
    expect(await client.get(`${keyPrefix}alias:g4`)).toBe('good4@example.jp');
  });

  it('CSV: quoted cells, a broken row and a short row are reported by line', async () => {
    const path = file('rows.csv', [
      'Login,Aliases,MSISDN,primaryHash',
      `csv1@example.jp,"c1;c1b",+819012340001,"${PHC_A}"`,
      `csv2@example.jp,c2,+819012340002,"${PHC_A}`,
      'csv3@example.jp,c3',
      `"csv4@example.jp",,,"${PHC_A.replace('m=64,t=1,p=1', 'p=1,t=1,m=64')}"`,
      `csv5@example.jp,,,${PHC_A}`,
    ]);
    const { run, s } = await importJson(path);
    expect(run.code).toBe(1);
    expect(s).toMatchObject({ created: 2, rejected: 3 });
    expect(s.rejectedLines.map((l) => [l.line, l.reason, l.message])).toEqual([
      [3, 'malformed', 'malformed CSV row: unbalanced quotes'],
      [4, 'malformed', 'malformed CSV row: 2 cells, the header has 4'],
      [
        6,
        'malformed',
        'malformed CSV row: 6 cells, the header has 4 (quote a value that holds commas, as argon2 hashes do)',
      ],
    ]);
    expect(await client.hgetall(key('csv1@example.jp'))).toMatchObject({
      aliases: '["c1","c1b"]',
      msisdn: '+819012340001',
      primaryHash: PHC_A,
    });
    expect(await client.hget(key('csv4@example.jp'), 'primaryHash')).toBe(PHC_A);
  });

  it('reads standard input with "-"', async () => {
    const r = await mailgate(
      ['account', 'import', '-', '--json'],
      'login,msisdn\nstdin1@example.jp,+819012349999\n',
    );
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ format: 'csv', created: 1 });
  });
});

describe('account remove', () => {
  it('removes the account and frees its aliases; its login no longer resolves', async () => {
    const r = await mailgate(['account', 'remove', 'user30@example.jp', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      login: 'user30@example.jp',
      aliases: ['user30', 'u30@mail.example.jp'],
    });
    for (const name of ['user30@example.jp', 'user30']) {
      const show = await mailgate(['account', 'show', name]);
      expect(show.code).toBe(1);
    }
    expect(await client.sismember(`${keyPrefix}logins`, 'user30@example.jp')).toBe(0);
    expect(await client.exists(`${keyPrefix}alias:user30`, `${keyPrefix}alias:u30@mail.example.jp`)).toBe(0);
    // The aliases are free for another account.
    const { s } = await importJson(file('reuse.jsonl', [{ login: 'heir@example.jp', aliases: ['user30'] }]));
    expect(s).toMatchObject({ created: 1, rejected: 0 });
  });

  it('an unknown login exits 1; an alias is refused with its login named', async () => {
    const unknown = await mailgate(['account', 'remove', 'nobody@example.jp']);
    expect(unknown.code).toBe(1);
    expect(messages(unknown.stderr)).toEqual(['mailgate: no account "nobody@example.jp"']);
    const alias = await mailgate(['account', 'remove', 'user31']);
    expect(alias.code).toBe(1);
    expect(messages(alias.stderr)).toEqual([
      'mailgate: "user31" is an alias of "user31@example.jp"; remove takes the login',
    ]);
    expect(await client.exists(key('user31@example.jp'))).toBe(1);
  });
});

describe('account set-primary', () => {
  const hasher = new PasswordHasher(TEST_ARGON2, { maxConcurrent: 2, maxQueued: 10 });

  it('from standard input: the old primary stops matching, the new one matches, primaryVersion goes up', async () => {
    const login = 'setpw@example.jp';
    const old = await bcryptHash('Old-Primary-1', BCRYPT_COST);
    await importJson(file('setpw.jsonl', [{ login, primaryHash: old }]));
    const before = await client.hgetall(key(login));
    const r = await mailgate(
      ['account', 'set-primary', login, '--primary-password-stdin', '--json'],
      'New-Primary-2\n',
    );
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      login,
      changed: true,
      primaryVersion: Number(before.primaryVersion) + 1,
    });
    const stored = (await client.hget(key(login), 'primaryHash'))!;
    expect(await hasher.verify(stored, 'Old-Primary-1')).toBe(false);
    expect(await hasher.verify(stored, 'New-Primary-2')).toBe(true);
    expect(await client.hget(key(login), 'primaryVersion')).toBe(String(Number(before.primaryVersion) + 1));
  });

  it('with --primary-hash (bcrypt); the same hash again changes nothing', async () => {
    const login = 'setpw@example.jp';
    const bcrypt = await bcryptHash('Third-Primary-3', BCRYPT_COST);
    const version = Number(await client.hget(key(login), 'primaryVersion'));
    const r = await mailgate(['account', 'set-primary', login, '--primary-hash', bcrypt]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`primary password of ${login} replaced (primaryVersion ${version + 1})\n`);
    expect(await hasher.verify((await client.hget(key(login), 'primaryHash'))!, 'Third-Primary-3')).toBe(
      true,
    );
    const again = await mailgate(['account', 'set-primary', login, '--primary-hash', bcrypt]);
    expect(again.stdout).toBe(`${login} already has this primary hash; nothing changed\n`);
    expect(await client.hget(key(login), 'primaryVersion')).toBe(String(version + 1));
  });

  it('usage errors exit 2, an unknown login exits 1', async () => {
    const neither = await mailgate(['account', 'set-primary', 'setpw@example.jp']);
    expect(neither.code).toBe(2);
    expect(messages(neither.stderr)).toEqual([
      'mailgate: give --primary-password-stdin or --primary-hash HASH',
    ]);
    const badHash = await mailgate(['account', 'set-primary', 'setpw@example.jp', '--primary-hash', 'plain']);
    expect(badHash.code).toBe(2);
    const unknown = await mailgate(['account', 'set-primary', 'nobody@example.jp', '--primary-hash', PHC_A]);
    expect(unknown.code).toBe(1);
    expect(messages(unknown.stderr)).toEqual(['mailgate: no account "nobody@example.jp"']);
  });
});

describe('an imported bcrypt primary hash at the gateway', () => {
  let dovecot: DovecotServer;

  beforeAll(async () => {
    dovecot = await startDovecot({ users: [{ user: 'bcuser', password: 'store-only-password' }] });
  });
  afterAll(async () => {
    await dovecot?.stop();
  });

  it('a real IMAP LOGIN with that password gets in; a wrong one does not', async () => {
    const primary = 'Bcrypt-Primary-7';
    const { s } = await importJson(
      file('bcrypt.jsonl', [
        { login: 'bc@example.jp', primaryHash: await bcryptHash(primary, 10), upstreamUser: 'bcuser' },
      ]),
    );
    expect(s.created).toBe(1);
    const t = await startTestGateway({ redis, dovecot, keyPrefix });
    try {
      const login = async (pass: string) => {
        const c = await RawClient.connect(t.port('none'));
        try {
          await c.waitFor(/^\* OK/);
          return await c.command('a', `LOGIN "bc@example.jp" "${pass}"`);
        } finally {
          c.close();
        }
      };
      expect(await login(primary)).toMatch(/^a OK/m);
      expect(await login('Bcrypt-Primary-8')).toMatch(/^a NO \[AUTHENTICATIONFAILED\]/m);
    } finally {
      await t.close();
    }
  });
});

describe('secrets', () => {
  it('no output of any run contains a hash or a primary password', () => {
    for (const run of runs) {
      const all = `${run.stdout}${run.stderr}`;
      // A real hash has digits for its parameters; the formats quoted in help and errors do not.
      expect(all, run.args.join(' ')).not.toMatch(/\$argon2(id|i|d)\$(v=\d+\$)?m=\d|\$2[aby]\$\d\d\$/);
      for (const secret of ['New-Primary-2', 'Old-Primary-1', 'secret-Value-1'])
        expect(all, run.args.join(' ')).not.toContain(secret);
    }
  });
});
