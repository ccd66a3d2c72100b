// The admin HTTP API against a real Redis, Dovecot and gateway; `audit tail` as operators run it.

import { execFile, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';
import { BIN } from '../support/cli.js';
import { startTestGateway, type TestGateway, writeConfigFile } from '../support/gateway.js';
import { loginFrom, quote, RawClient } from '../support/raw-client.js';

const execFileP = promisify(execFile);

const ADMIN_TOKEN = 'admin-Token-0123456789abcdefXYZ';
const ALICE_TOKEN = 'alice-Operator-Token-ABCDEFGHIJ';
const PRIMARY = 'Primary-pw-for-api-9!';
const ALICE = 'alice@example.jp';
const BOB = 'bob@example.jp';
const CAROL = 'carol@example.jp';
const JAPAN = '49.96.0.1'; // NTT DOCOMO, JP in the bundled database
const ABROAD = '8.8.8.8';

let redis: RedisServer;
let dovecot: DovecotServer;
let t: TestGateway;
let base: string;
let configFile: string;
/** Every IMAP-only password the API handed out, for the leak check at the end. */
const issued: string[] = [];

interface Res {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies are checked by the assertions
  json: any;
}

async function call(
  method: string,
  path: string,
  opts: { body?: unknown; raw?: string; token?: string | null; headers?: Record<string, string> } = {},
): Promise<Res> {
  const token = opts.token === undefined ? ALICE_TOKEN : opts.token;
  const headers: Record<string, string> = { ...opts.headers };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let body: string | undefined = opts.raw;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(`${base}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON (metrics)
  }
  return { status: res.status, headers: res.headers, text, json };
}

async function imapLogin(user: string, pass: string): Promise<RawClient> {
  const c = await RawClient.connect(t.port('none'));
  await c.waitFor(/^\* OK/);
  await c.command('a', `LOGIN ${quote(user)} ${quote(pass)}`);
  return c;
}

async function auditEntries(): Promise<
  Array<{ actor: string; action: string; details: Record<string, unknown> }>
> {
  const rows = await t.redis.xrange(`${t.config.redis.keyPrefix}audit`, '-', '+');
  return rows.map(([, f]) => {
    const m = new Map<string, string>();
    for (let i = 0; i < f.length; i += 2) m.set(f[i]!, f[i + 1]!);
    return {
      actor: m.get('actor')!,
      action: m.get('action')!,
      details: JSON.parse(m.get('details')!) as Record<string, unknown>,
      ts: m.get('ts'),
    };
  });
}

function adminConfig(raw: Record<string, unknown>): void {
  raw.admin = {
    listen: { host: '127.0.0.1', port: 0 },
    token: ADMIN_TOKEN,
    tokens: [{ name: 'alice-ops', token: ALICE_TOKEN }],
  };
}

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis({ appendOnly: false }),
    startDovecot({
      users: ['alice', 'bob', 'carol'].map((user) => ({ user, password: 'store-only-password' })),
    }),
  ]);
  t = await startTestGateway({ redis, dovecot, configure: adminConfig });
  const addr = t.gateway.adminAddress;
  if (!addr) throw new Error('no admin listener');
  base = `http://127.0.0.1:${addr.port}`;
  configFile = writeConfigFile({
    redis: { url: redis.url, keyPrefix: t.config.redis.keyPrefix },
    geo: { domesticCountries: ['JP'] },
  });
});

afterAll(async () => {
  await t?.close();
  await Promise.all([dovecot?.stop(), redis?.stop()]);
  if (configFile) rmSync(dirname(configFile), { recursive: true, force: true });
});

describe('probes and metrics, without a token', () => {
  it('/healthz: 200 while the process runs', async () => {
    const r = await call('GET', '/healthz', { token: null });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ status: 'ok' });
  });

  it('/readyz: 200 with each check', async () => {
    const r = await call('GET', '/readyz', { token: null });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ status: 'ready', checks: { redis: 'ok', geo: 'ok' } });
  });

  it('/metrics: Prometheus text with process metrics', async () => {
    const r = await call('GET', '/metrics', { token: null });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(r.text).toContain('# TYPE mailgate_auth_attempts_total counter');
    expect(r.text).toContain('process_resident_memory_bytes');
  });
});

describe('authentication', () => {
  it('no Authorization header: 401 with WWW-Authenticate: Bearer', async () => {
    const r = await call('GET', `/v1/accounts/${ALICE}`, { token: null });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe('Bearer');
    expect(r.json.error.code).toBe('MG_UNAUTHORIZED');
  });

  it.each([
    ['a wrong token of the same length', `${ALICE_TOKEN.slice(0, -1)}X`],
    ['a shorter token', ALICE_TOKEN.slice(0, 10)],
    ['a longer token', `${ALICE_TOKEN}${ALICE_TOKEN}`],
  ])('%s: 401', async (_what, token) => {
    expect(token).not.toBe(ALICE_TOKEN);
    const r = await call('GET', '/v1/rollout', { token });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(r.json).toEqual({ error: { code: 'MG_UNAUTHORIZED', message: 'invalid token' } });
  });

  it('another scheme is no token: 401', async () => {
    const r = await call('GET', '/v1/rollout', {
      token: null,
      headers: { authorization: `Basic ${Buffer.from(`x:${ALICE_TOKEN}`).toString('base64')}` },
    });
    expect(r.status).toBe(401);
  });

  it('an unknown path without a token is 401, not 404 (routes are not probed anonymously)', async () => {
    expect((await call('GET', '/v1/secret-admin-route', { token: null })).status).toBe(401);
    expect((await call('GET', '/v1/secret-admin-route')).status).toBe(404);
  });
});

describe('metrics after real IMAP logins', () => {
  it('counts allowed and refused logins and open sessions', async () => {
    await t.ops.addAccount({ login: CAROL, primaryPassword: PRIMARY, upstreamUser: 'carol' });
    const ok = await imapLogin(CAROL, PRIMARY);
    expect(ok.lines.at(-1)).toMatch(/^a OK /);
    const bad = await imapLogin(CAROL, 'wrong password');
    expect(bad.lines.at(-1)).toMatch(/^a NO \[AUTHENTICATIONFAILED\]/);
    bad.close();

    const open = await call('GET', '/metrics', { token: null });
    const lines = open.text.split('\n');
    expect(lines).toContain(
      'mailgate_auth_attempts_total{protocol="imap",result="allow",reason="primary",cohort="none"} 1',
    );
    expect(lines).toContain(
      'mailgate_auth_attempts_total{protocol="imap",result="deny",reason="bad-password",cohort="none"} 1',
    );
    expect(lines).toContain('mailgate_auth_duration_seconds_count{protocol="imap",result="allow"} 1');
    expect(lines).toContain('mailgate_sessions_open{protocol="imap"} 1');
    expect(lines).toContain('mailgate_sessions_total{protocol="imap"} 1');
    expect(open.text).toMatch(/^mailgate_password_verifications_queued 0$/m);
    // Never a login or an address as a label value.
    expect(open.text).not.toContain('carol');
    expect(open.text).not.toContain('127.0.0.1');

    await ok.command('b', 'LOGOUT');
    await ok.waitClosed();
    await t.logs.waitFor((l) => l.event === 'session' && l.login === CAROL && l.closedBy !== undefined);
    const closed = await call('GET', '/metrics', { token: null });
    expect(closed.text.split('\n')).toContain('mailgate_sessions_open{protocol="imap"} 0');
  });
});

describe('accounts', () => {
  it('POST /v1/accounts creates one: 201 with Location, never a hash', async () => {
    const r = await call('POST', '/v1/accounts', {
      body: {
        login: 'Alice@Example.JP',
        primaryPassword: PRIMARY,
        aliases: ['alice'],
        msisdn: '+819012345678',
        upstreamUser: 'alice',
      },
    });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe('/v1/accounts/alice%40example.jp');
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.json).toMatchObject({
      login: ALICE,
      aliases: ['alice'],
      msisdn: '+819012345678',
      primaryPassword: true,
      imapPassword: null,
    });
    expect(r.text).not.toContain('$argon2');
    expect(r.text).not.toContain(PRIMARY);
    const bob = await call('POST', '/v1/accounts', {
      body: { login: BOB, primaryPassword: PRIMARY, upstreamUser: 'bob' },
      token: ADMIN_TOKEN,
    });
    expect(bob.status).toBe(201);
  });

  it('the same login again: 409', async () => {
    const r = await call('POST', '/v1/accounts', { body: { login: ALICE } });
    expect(r.status).toBe(409);
    expect(r.json).toEqual({ error: { code: 'MG_REFUSED', message: `account "${ALICE}" already exists` } });
  });

  it('bad input: 400 naming the field', async () => {
    const badMsisdn = await call('POST', '/v1/accounts', {
      body: { login: 'dave@example.jp', msisdn: '090' },
    });
    expect(badMsisdn.status).toBe(400);
    expect(badMsisdn.json.error.message).toMatch(/^msisdn "090" is not an E\.164 number/);
    const unknown = await call('POST', '/v1/accounts', {
      body: { login: 'dave@example.jp', colour: 'blue' },
    });
    expect(unknown.status).toBe(400);
    expect(unknown.json.error.message).toBe('body: unknown field "colour"');
    const wrongType = await call('POST', '/v1/accounts', { body: { login: 42 } });
    expect(wrongType.status).toBe(400);
    expect(wrongType.json.error.message).toMatch(/^login: /);
    const notObject = await call('POST', '/v1/accounts', { body: ['dave'] });
    expect(notObject.status).toBe(400);
  });

  it('a body that is not JSON: 400 with a clear message', async () => {
    const r = await call('POST', '/v1/accounts', {
      raw: '{"login": "dave@example.jp",',
      headers: { 'content-type': 'application/json' },
    });
    expect(r.status).toBe(400);
    expect(r.json.error.code).toBe('MG_BAD_JSON');
    expect(r.json.error.message).toMatch(/^request body is not valid JSON: /);
  });

  it('a body over 1 MiB: 413', async () => {
    const r = await call('POST', '/v1/accounts', { raw: `{"login":"${'x'.repeat(1024 * 1024)}"}` });
    expect(r.status).toBe(413);
    expect(r.json.error.code).toBe('MG_TOO_LARGE');
    // The API still answers afterwards.
    expect((await call('GET', '/v1/rollout')).status).toBe(200);
  });

  it('GET /v1/accounts/{login}, by login or alias, any case', async () => {
    for (const name of [ALICE, 'ALICE', 'alice%40example.jp']) {
      const r = await call('GET', `/v1/accounts/${name}`);
      expect(r.status, name).toBe(200);
      expect(r.json).toMatchObject({ login: ALICE, aliases: ['alice'] });
    }
  });

  it('an unknown account: 404', async () => {
    const r = await call('GET', '/v1/accounts/nobody@example.jp');
    expect(r.status).toBe(404);
    expect(r.json).toEqual({ error: { code: 'MG_NOT_FOUND', message: 'no account "nobody@example.jp"' } });
    expect((await call('POST', '/v1/accounts/nobody@example.jp/imap-password')).status).toBe(404);
    expect((await call('DELETE', '/v1/accounts/nobody@example.jp/imap-password')).status).toBe(404);
  });

  it('unknown route: 404; wrong method: 405 with Allow', async () => {
    const none = await call('GET', '/v1/nothing-here');
    expect(none.status).toBe(404);
    expect(none.json.error.code).toBe('MG_NO_ROUTE');
    const wrong = await call('PATCH', `/v1/accounts/${ALICE}/imap-password`);
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('POST, DELETE');
    expect((await call('DELETE', '/v1/rollout')).status).toBe(405);
  });
});

describe('IMAP-only passwords', () => {
  it('POST issues one, shown once; it logs in through the gateway', async () => {
    const r = await call('POST', `/v1/accounts/${ALICE}/imap-password`);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ login: ALICE, issued: true });
    expect(r.json.password).toHaveLength(10);
    issued.push(r.json.password);
    const c = await imapLogin('alice', r.json.password);
    expect(c.lines.at(-1)).toMatch(/^a OK /);
    c.close();
    const show = await call('GET', `/v1/accounts/${ALICE}`);
    expect(show.json.imapPassword).toEqual({ issuedAt: expect.any(String) });
    expect(show.text).not.toContain(r.json.password);
  });

  it('ifAbsent: nothing issued when one exists', async () => {
    const r = await call('POST', `/v1/accounts/${ALICE}/imap-password`, { body: { ifAbsent: true } });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ login: ALICE, password: null, issued: false });
    const bad = await call('POST', `/v1/accounts/${ALICE}/imap-password`, { body: { ifAbsent: 'yes' } });
    expect(bad.status).toBe(400);
  });

  it('DELETE revokes it', async () => {
    const r = await call('DELETE', `/v1/accounts/${ALICE}/imap-password`);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ login: ALICE, revoked: true });
    const again = await call('DELETE', `/v1/accounts/${ALICE}/imap-password`);
    expect(again.json).toEqual({ login: ALICE, revoked: false });
    const c = await imapLogin('alice', issued[0]!);
    expect(c.lines.at(-1)).toMatch(/^a NO /);
    c.close();
  });
});

describe('rollout', () => {
  // What a rollout change does is checked by logging in through the gateway, not by the shape of
  // the answer: the API returns whatever the service returns, as `rollout status --json` prints it.
  it('GET /v1/rollout', async () => {
    const r = await call('GET', '/v1/rollout');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ accounts: 3 });
  });

  it('PUT /v1/rollout/overseas: enforce refuses the primary password from abroad, warn lets it in', async () => {
    const r = await call('PUT', '/v1/rollout/overseas', { body: { phase: 'enforce' } });
    expect(r.status).toBe(200);
    expect(await loginFrom(t.port('none'), ABROAD, BOB, PRIMARY)).toMatch(
      /^a NO \[ALERT\] Access from abroad is restricted/,
    );
    expect((await call('PUT', '/v1/rollout/overseas', { body: { phase: 'warn' } })).status).toBe(200);
    expect(await loginFrom(t.port('none'), ABROAD, BOB, PRIMARY)).toMatch(/^a OK /);
    const bad = await call('PUT', '/v1/rollout/overseas', { body: { phase: 'on' } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toMatch(/^phase: /);
  });

  it('PUT /v1/rollout/domestic for logins, then all', async () => {
    const r = await call('PUT', '/v1/rollout/domestic', {
      body: { phase: 'enforce', logins: [ALICE, 'BOB@example.jp'] },
    });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ phase: 'enforce', logins: [ALICE, BOB] });
    expect(await loginFrom(t.port('none'), JAPAN, BOB, PRIMARY)).toMatch(
      /^a NO \[ALERT\] Mail app access with the account password has ended/,
    );
    expect(
      (await call('PUT', '/v1/rollout/domestic', { body: { phase: 'off', logins: [BOB] } })).status,
    ).toBe(200);
    expect(await loginFrom(t.port('none'), JAPAN, BOB, PRIMARY)).toMatch(/^a OK /);
    const all = await call('PUT', '/v1/rollout/domestic', { body: { phase: 'warn', all: true } });
    expect(all.status).toBe(200);
    expect(all.json).toMatchObject({ phase: 'warn' });
    expect(await loginFrom(t.port('none'), JAPAN, BOB, PRIMARY)).toMatch(/^a OK /);
  });

  it('PUT /v1/rollout/domestic by percent; overseas with a start time; exempt and unlock', async () => {
    const wave = await call('PUT', '/v1/rollout/domestic', { body: { phase: 'warn', percent: 50 } });
    expect(wave.status).toBe(200);
    expect(wave.json).toMatchObject({ phase: 'warn', percent: 50 });
    const later = await call('PUT', '/v1/rollout/overseas', {
      body: { phase: 'enforce', at: '2099-01-01T00:00+09:00' },
    });
    expect(later.status).toBe(200);
    const status = await call('GET', '/v1/rollout');
    expect(status.json.overseas).toEqual({
      phase: 'warn',
      scheduled: [{ phase: 'enforce', at: '2098-12-31T15:00:00.000Z' }],
    });
    expect(status.json.domesticWaves).toContainEqual({
      percent: 50,
      phase: 'warn',
      at: expect.any(String),
      active: true,
    });
    expect(await loginFrom(t.port('none'), ABROAD, BOB, PRIMARY)).toMatch(/^a OK /);
    const badAt = await call('PUT', '/v1/rollout/overseas', { body: { phase: 'enforce', at: 'tomorrow' } });
    expect(badAt.status).toBe(400);
    expect(badAt.json.error.message).toBe('at: expected an ISO 8601 time');
    const exempt = await call('PUT', `/v1/accounts/${BOB}/exempt`, {
      body: { until: '2099-01-01T00:00+09:00' },
    });
    expect(exempt.status).toBe(200);
    expect(exempt.json).toEqual({ login: BOB, until: '2098-12-31T15:00:00.000Z' });
    const unlock = await call('POST', `/v1/accounts/${BOB}/unlock`);
    expect(unlock.status).toBe(200);
    expect(unlock.json).toMatchObject({ login: BOB });
  });

  it('PUT /v1/rollout/domestic: exactly one of logins, percent, all; an unknown login changes nothing', async () => {
    for (const body of [
      { phase: 'enforce' },
      { phase: 'enforce', all: true, logins: [ALICE] },
      { phase: 'enforce', all: true, percent: 10 },
    ]) {
      const r = await call('PUT', '/v1/rollout/domestic', { body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.error.message).toBe('body: give exactly one of "logins", "percent" or "all": true');
    }
    const missing = await call('PUT', '/v1/rollout/domestic', {
      body: { phase: 'enforce', logins: [BOB, 'nobody@example.jp'] },
    });
    expect([404, 409]).toContain(missing.status);
    expect(missing.json.error.message).toContain('nobody@example.jp');
    expect(await loginFrom(t.port('none'), JAPAN, BOB, PRIMARY)).toMatch(/^a OK /);
  });
});

describe('audit trail', () => {
  it('every API action is in the stream with actor api:<token name>, never a secret', async () => {
    const entries = (await auditEntries()).filter((e) => e.actor.startsWith('api:'));
    expect(entries.map((e) => `${e.actor} ${e.action}`)).toEqual([
      'api:alice-ops account.add',
      'api:admin account.add',
      'api:alice-ops imap-password.issue',
      'api:alice-ops imap-password.issue',
      'api:alice-ops imap-password.revoke',
      'api:alice-ops imap-password.revoke',
      'api:alice-ops rollout.overseas',
      'api:alice-ops rollout.overseas',
      'api:alice-ops rollout.domestic',
      'api:alice-ops rollout.domestic',
      'api:alice-ops rollout.domestic',
      'api:alice-ops rollout.domestic',
      'api:alice-ops rollout.overseas',
      'api:alice-ops rollout.exempt',
      'api:alice-ops unlock',
    ]);
    expect(entries[0]!.details).toMatchObject({ login: ALICE });
    expect(entries[6]!.details).toMatchObject({ before: 'off', after: 'enforce' });
    expect(entries[7]!.details).toMatchObject({ before: 'enforce', after: 'warn' });
    const text = JSON.stringify(await t.redis.xrange(`${t.config.redis.keyPrefix}audit`, '-', '+'));
    for (const secret of [PRIMARY, ALICE_TOKEN, ADMIN_TOKEN, ...issued, '$argon2']) {
      expect(text).not.toContain(secret);
    }
  });

  it('GET /v1/audit?limit=N returns the last N, oldest first', async () => {
    const r = await call('GET', '/v1/audit?limit=2');
    expect(r.status).toBe(200);
    expect(r.json.entries.map((e: { action: string }) => e.action)).toEqual(['rollout.exempt', 'unlock']);
    expect(r.json.entries[1]).toMatchObject({
      id: expect.stringMatching(/^\d+-\d+$/),
      ts: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      actor: 'api:alice-ops',
    });
    expect(r.json.entries[1].details).toMatchObject({ login: BOB });
    expect((await call('GET', '/v1/audit?limit=-1')).status).toBe(400);
  });

  it('bin/mailgate audit tail prints recent entries as text and JSON', async () => {
    const text = await execFileP(process.execPath, [BIN, 'audit', 'tail', '-n', '3', '--config', configFile]);
    const lines = text.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z api:alice-ops rollout\.overseas \{.*"at":"2098-12-31T15:00:00\.000Z"/,
    );
    expect(lines[1]).toMatch(/ api:alice-ops rollout\.exempt \{"login":"bob@example\.jp",/);
    expect(lines[2]).toMatch(/ api:alice-ops unlock \{"login":"bob@example\.jp"/);
    for (const line of lines) expect(() => JSON.parse(line.split(' ').slice(3).join(' '))).not.toThrow();
    const json = await execFileP(process.execPath, [
      BIN,
      'audit',
      'tail',
      '-n',
      '1',
      '--json',
      '--config',
      configFile,
    ]);
    expect(JSON.parse(json.stdout)).toMatchObject({ actor: 'api:alice-ops', action: 'unlock' });
  });

  it('audit tail --follow prints a new entry as it happens, until stopped', async () => {
    const child = spawn(
      process.execPath,
      [BIN, 'audit', 'tail', '-n', '1', '--follow', '--config', configFile],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const waitOut = async (re: RegExp) => {
      const deadline = Date.now() + 10_000;
      while (!re.test(out)) {
        if (Date.now() > deadline) throw new Error(`no ${re} in:\n${out}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    try {
      await waitOut(/ unlock /);
      const r = await call('PUT', '/v1/rollout/overseas', { body: { phase: 'enforce' }, token: ADMIN_TOKEN });
      expect(r.status).toBe(200);
      await waitOut(/ api:admin rollout\.overseas \{.*"before":"warn","after":"enforce"\}\n/);
      expect(out.trimEnd().split('\n')).toHaveLength(2);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('no log line holds a token, a primary password or an issued password', () => {
    const logs = t.logs.raw.join('\n');
    for (const secret of [PRIMARY, ALICE_TOKEN, ADMIN_TOKEN, ...issued]) expect(logs).not.toContain(secret);
    expect(t.logs.events('http').some((l) => l.actor === 'api:alice-ops' && l.status === 201)).toBe(true);
  });
});

describe('readiness during a Redis outage (its own Redis)', () => {
  it('/readyz is 503 naming Redis while it is down; gateway.close() stops the admin listener', async () => {
    const ownRedis = await startRedis({ appendOnly: false });
    const own = await startTestGateway({ redis: ownRedis, dovecot, configure: adminConfig });
    try {
      own.redis.on('error', () => {});
      const url = `http://127.0.0.1:${own.gateway.adminAddress!.port}`;
      expect((await fetch(`${url}/readyz`)).status).toBe(200);
      await ownRedis.kill();
      let res = await fetch(`${url}/readyz`);
      for (let i = 0; i < 50 && res.status !== 503; i++) {
        await new Promise((r) => setTimeout(r, 100));
        res = await fetch(`${url}/readyz`);
      }
      expect(res.status).toBe(503);
      const body = (await res.json()) as { status: string; checks: Record<string, string> };
      expect(body.status).toBe('unavailable');
      expect(body.checks.geo).toBe('ok');
      expect(body.checks.redis).toMatch(/^failed: /);
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      // An operator action during the outage: 503, not a 500.
      const add = await fetch(`${url}/v1/accounts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        body: JSON.stringify({ login: 'erin@example.jp' }),
      });
      expect(add.status).toBe(503);
      expect(add.headers.get('retry-after')).toBe('1');
      await own.close();
      await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    } finally {
      await own.close().catch(() => {});
      await ownRedis.stop();
    }
  });
});
