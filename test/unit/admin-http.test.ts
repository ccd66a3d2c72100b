import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { scrubDetails } from '../../src/admin/audit.js';
import {
  AdminServer,
  API_ROUTES,
  adminTokens,
  bearerToken,
  errorResponse,
  HttpError,
  matchRoute,
  PROBE_ROUTES,
  parseBody,
  router,
  TokenVerifier,
} from '../../src/admin/http.js';
import type { OperatorService } from '../../src/admin/service.js';
import { parseConfig } from '../../src/config/load.js';
import {
  ConfigError,
  MailgateError,
  NotFoundError,
  RefusedError,
  StoreUnavailableError,
  UsageError,
} from '../../src/util/errors.js';
import { OverloadedError } from '../../src/util/semaphore.js';

const ALICE_TOKEN = 'alice-token-0123456789abcdef';
const BOT_TOKEN = 'deploy-bot-token-ABCDEFGHIJKLMNOP';

describe('TokenVerifier', () => {
  const v = new TokenVerifier([
    { name: 'alice', token: ALICE_TOKEN },
    { name: 'deploy-bot', token: BOT_TOKEN },
  ]);

  it('names the token that matches', () => {
    expect(v.check(ALICE_TOKEN)).toBe('alice');
    expect(v.check(BOT_TOKEN)).toBe('deploy-bot');
  });

  it.each([
    ['empty', ''],
    ['a prefix', ALICE_TOKEN.slice(0, -1)],
    ['longer', `${ALICE_TOKEN}x`],
    ['one character off', `${ALICE_TOKEN.slice(0, -1)}g`],
    ['much longer', ALICE_TOKEN.repeat(100)],
    ['case changed', ALICE_TOKEN.toUpperCase()],
  ])('refuses a token that is %s', (_what, token) => {
    expect(v.check(token)).toBeNull();
  });

  it('with no tokens configured, refuses everything', () => {
    expect(new TokenVerifier([]).check(ALICE_TOKEN)).toBeNull();
  });

  it('compares digests of equal length, whatever the presented length (no length leak)', async () => {
    // timingSafeEqual throws on buffers of different lengths; hashing first is what makes a
    // 1-byte and a 10 kB token go through the same 32-byte comparison.
    expect(() => v.check('x')).not.toThrow();
    expect(() => v.check('x'.repeat(10_000))).not.toThrow();
    const crypto = await import('node:crypto');
    expect(() => crypto.timingSafeEqual(Buffer.from('a'), Buffer.from('ab'))).toThrow();
  });
});

describe('bearerToken', () => {
  it.each([
    ['Bearer abc.DEF-123_~+/=', 'abc.DEF-123_~+/='],
    ['bearer abc', 'abc'],
    ['BEARER  abc ', 'abc'],
  ])('%j → %j', (header, token) => {
    expect(bearerToken(header)).toBe(token);
  });

  it.each([
    undefined,
    '',
    'Bearer',
    'Bearer ',
    'Basic YWxpY2U6cHc=',
    'Bearer a b',
    'Token abc',
    'Bearer ab"c',
  ])('refuses %j', (header) => {
    expect(bearerToken(header)).toBeNull();
  });
});

describe('adminTokens', () => {
  it('names admin.token "admin" and keeps the named ones', () => {
    const config = parseConfig(
      {
        redis: { url: 'redis://127.0.0.1:6379/0' },
        geo: { domesticCountries: ['JP'] },
        admin: { token: BOT_TOKEN, tokens: [{ name: 'alice', token: ALICE_TOKEN }] },
      },
      { env: {} },
    );
    expect(config.admin?.listen).toEqual({ host: '127.0.0.1', port: 8025 });
    expect(adminTokens(config.admin!)).toEqual([
      { name: 'admin', token: BOT_TOKEN },
      { name: 'alice', token: ALICE_TOKEN },
    ]);
  });
});

describe('admin config', () => {
  const base = { redis: { url: 'redis://127.0.0.1:6379/0' }, geo: { domesticCountries: ['JP'] } };
  const problem = (admin: unknown, env: NodeJS.ProcessEnv = {}) => {
    try {
      parseConfig({ ...base, admin }, { env });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    }
    throw new Error('expected a ConfigError');
  };

  it('absent: no admin section', () => {
    expect(parseConfig(base, { env: {} }).admin).toBeUndefined();
  });

  it('a token shorter than 16 characters is an error naming the key, not the token', () => {
    expect(problem({ token: 'short-secret' })).toBe('admin.token: must be at least 16 characters');
    expect(problem({ tokens: [{ name: 'alice', token: 'tiny-secret' }] })).toBe(
      'admin.tokens[0].token: must be at least 16 characters',
    );
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a ${VAR} reference in a config value
    expect(problem({ token: '${ADMIN_TOKEN}' }, { ADMIN_TOKEN: 'env-secret' })).not.toContain('env-secret');
  });

  it('a token must fit in a bearer header', () => {
    expect(problem({ token: 'has spaces in it, sixteen+' })).toBe(
      'admin.token: may hold only letters, digits and - . _ ~ + / (then = padding)',
    );
    expect(
      parseConfig({ ...base, admin: { token: 'kq9+/Zx0.abc_def~-AB==' } }, { env: {} }).admin?.token,
    ).toBe('kq9+/Zx0.abc_def~-AB==');
  });

  it('needs a token or named tokens', () => {
    expect(problem({ listen: { port: 8025 } })).toBe('admin.token: is required (or give admin.tokens)');
  });

  it('names and tokens are unique', () => {
    expect(
      problem({
        token: ALICE_TOKEN,
        tokens: [{ name: 'admin', token: BOT_TOKEN }],
      }),
    ).toBe('admin.tokens[0].name: "admin" is used twice');
    expect(
      problem({
        tokens: [
          { name: 'alice', token: ALICE_TOKEN },
          { name: 'bob', token: ALICE_TOKEN },
        ],
      }),
    ).toBe('admin.tokens[1].token: is used twice');
  });

  it('a bad name', () => {
    expect(problem({ tokens: [{ name: 'alice smith', token: ALICE_TOKEN }] })).toMatch(
      /^admin\.tokens\[0\]\.name: expected 1-64 letters/,
    );
  });
});

describe('route table', () => {
  const r = router<{ tag: string }>();
  const routes = [
    r('GET', '/v1/accounts/{login}', async ({ params, tag }) => `${tag}:show:${params.login}`),
    r('DELETE', '/v1/accounts/{login}', async ({ params }) => `remove:${params.login}`),
    r('POST', '/v1/accounts/{login}/imap-password', async ({ params }) => `issue:${params.login}`),
    r('POST', '/v1/accounts', async () => 'add'),
    r('GET', '/v1/rollout', async () => 'status'),
  ];

  it('matches literal paths and decodes parameters', async () => {
    const m = matchRoute(routes, 'GET', '/v1/accounts/alice%40example.jp');
    expect(m).toMatchObject({ kind: 'found', params: { login: 'alice@example.jp' } });
    if (m.kind !== 'found') throw new Error('no match');
    expect(await m.route.handle({ tag: 't' }, m.params)).toBe('t:show:alice@example.jp');
    expect(matchRoute(routes, 'POST', '/v1/accounts')).toMatchObject({ kind: 'found', params: {} });
    expect(matchRoute(routes, 'POST', '/v1/accounts/a%2Fb/imap-password')).toMatchObject({
      kind: 'found',
      params: { login: 'a/b' },
    });
  });

  it('a parameter is one non-empty segment', () => {
    expect(matchRoute(routes, 'GET', '/v1/accounts/')).toEqual({ kind: 'none' });
    expect(matchRoute(routes, 'GET', '/v1/accounts/a/b')).toEqual({ kind: 'none' });
  });

  it('an unknown path is none, a known path with another method is wrong-method with Allow', () => {
    expect(matchRoute(routes, 'GET', '/v1/nope')).toEqual({ kind: 'none' });
    expect(matchRoute(routes, 'GET', '/v1/rollout/')).toEqual({ kind: 'none' });
    expect(matchRoute(routes, 'PUT', '/v1/accounts/alice')).toEqual({
      kind: 'wrong-method',
      allow: ['GET', 'DELETE'],
    });
    expect(matchRoute(routes, 'GET', '/v1/accounts')).toEqual({ kind: 'wrong-method', allow: ['POST'] });
  });

  it('malformed percent-encoding is a 400', () => {
    expect(() => matchRoute(routes, 'GET', '/v1/accounts/%E0%A4%A')).toThrow(HttpError);
    try {
      matchRoute(routes, 'GET', '/v1/accounts/%zz');
    } catch (err) {
      expect((err as HttpError).status).toBe(400);
    }
  });

  it('the API and probe tables have no two routes with the same method and pattern', () => {
    for (const table of [API_ROUTES, PROBE_ROUTES] as const) {
      const keys = table.map(
        (x) => `${x.method} ${x.segments.map((s) => ('param' in s ? '{}' : s.literal)).join('/')}`,
      );
      expect(new Set(keys).size).toBe(keys.length);
    }
  });

  it('routes every documented API path', () => {
    const expected = [
      ['POST', '/v1/accounts'],
      ['GET', '/v1/accounts/x'],
      ['POST', '/v1/accounts/x/imap-password'],
      ['DELETE', '/v1/accounts/x/imap-password'],
      ['GET', '/v1/rollout'],
      ['PUT', '/v1/rollout/overseas'],
      ['PUT', '/v1/rollout/domestic'],
      ['GET', '/v1/audit'],
    ] as const;
    for (const [method, path] of expected) {
      expect(matchRoute(API_ROUTES, method, path).kind, `${method} ${path}`).toBe('found');
    }
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      expect(matchRoute(PROBE_ROUTES, 'GET', path).kind).toBe('found');
      expect(matchRoute(API_ROUTES, 'GET', path).kind).toBe('none');
    }
  });
});

describe('parseBody', () => {
  const schema = z.strictObject({ phase: z.enum(['off', 'warn', 'enforce']), n: z.number().optional() });

  it('returns the parsed body', () => {
    expect(parseBody(schema, { phase: 'warn' })).toEqual({ phase: 'warn' });
  });

  it('a problem is a UsageError naming the field', () => {
    expect(() => parseBody(schema, { phase: 'on' })).toThrow(UsageError);
    expect(() => parseBody(schema, { phase: 'on' })).toThrow(/^phase: /);
    expect(() => parseBody(schema, { phase: 'off', colour: 1 })).toThrow('body: unknown field "colour"');
    expect(() => parseBody(schema, [])).toThrow(/^body: /);
    expect(() => parseBody(schema, {})).toThrow(/^phase: /);
  });
});

describe('errorResponse', () => {
  it.each([
    [new UsageError('bad'), 400, 'MG_USAGE', 'bad'],
    [new NotFoundError('no account "x"'), 404, 'MG_NOT_FOUND', 'no account "x"'],
    [new RefusedError('account "x" already exists'), 409, 'MG_REFUSED', 'account "x" already exists'],
    [new HttpError(413, 'MG_TOO_LARGE', 'too big'), 413, 'MG_TOO_LARGE', 'too big'],
  ] as const)('%s → %i', (err, status, code, message) => {
    expect(errorResponse(err)).toEqual({ status, code, message });
  });

  it('store and overload problems are 503 without the Redis details', () => {
    const e = errorResponse(new StoreUnavailableError('redis: connect ECONNREFUSED 10.0.0.7:6379'));
    expect(e).toMatchObject({ status: 503, code: 'MG_STORE_UNAVAILABLE' });
    expect(e.message).not.toContain('10.0.0.7');
    expect(errorResponse(new OverloadedError('password verification')).status).toBe(503);
  });

  it('anything else is a 500 that tells nothing', () => {
    for (const err of [
      new Error('at /srv/secret/path'),
      new MailgateError('MG_X', 'internal detail'),
      'str',
    ]) {
      expect(errorResponse(err)).toEqual({
        status: 500,
        code: 'MG_INTERNAL',
        message: 'internal error; see the gateway log',
      });
    }
  });
});

describe('scrubDetails (audit)', () => {
  it('replaces values under secret-looking keys, keeps booleans and the rest', () => {
    expect(
      scrubDetails({
        login: 'alice',
        password: 'pw',
        primaryHash: '$argon2id$...',
        nested: [{ token: 'x', after: 'enforce' }],
        imapPassword: true,
        issued: true,
      }),
    ).toEqual({
      login: 'alice',
      password: '[redacted]',
      primaryHash: '[redacted]',
      nested: [{ token: '[redacted]', after: 'enforce' }],
      imapPassword: true,
      issued: true,
    });
  });
});

describe('AdminServer (fake service, no Redis)', () => {
  const actors: string[] = [];
  let fail: Error | null = null;
  const fakeOps = (actor: string) =>
    ({
      async showAccount(login: string) {
        actors.push(actor);
        if (fail) throw fail;
        return { login };
      },
    }) as unknown as OperatorService;
  const logs: Array<Record<string, unknown>> = [];
  const server = new AdminServer({
    config: {
      listen: { host: '127.0.0.1', port: 0 },
      token: ALICE_TOKEN,
      tokens: [{ name: 'deploy-bot', token: BOT_TOKEN }],
    },
    operatorService: fakeOps,
    audit: { tail: async () => [], flush: async () => {} },
    metrics: { expose: async () => ({ contentType: 'text/plain', body: 'm 1\n' }) },
    readiness: { slow: () => new Promise(() => {}), ok: () => 1 },
    log: pino({ level: 'debug' }, { write: (l: string) => logs.push(JSON.parse(l)) }),
  });
  let base = '';

  beforeAll(async () => {
    const addr = await server.listen();
    base = `http://127.0.0.1:${addr.port}`;
  });
  afterAll(() => server.close());

  const get = (path: string, token: string | null = ALICE_TOKEN, init: RequestInit = {}) =>
    fetch(`${base}${path}`, {
      ...init,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...init.headers },
    });

  it('the service acts as api:<token name>', async () => {
    actors.length = 0;
    expect((await get('/v1/accounts/a')).status).toBe(200);
    expect((await get('/v1/accounts/b', BOT_TOKEN)).status).toBe(200);
    expect(actors).toEqual(['api:admin', 'api:deploy-bot']);
  });

  it('a chunked body over the limit (no Content-Length) is a 413', async () => {
    const big = new ReadableStream({
      start(c) {
        for (let i = 0; i < 40; i++) c.enqueue(new Uint8Array(64 * 1024));
        c.close();
      },
    });
    const r = await get('/v1/accounts', ALICE_TOKEN, {
      method: 'POST',
      body: big,
      duplex: 'half',
    }).catch((err: Error) => err);
    if (r instanceof Error) throw r;
    expect(r.status).toBe(413);
    expect(r.headers.get('connection')).toBe('close');
  });

  it('HEAD and OPTIONS on a GET route are 405 with Allow', async () => {
    const r = await get('/v1/accounts/a', ALICE_TOKEN, { method: 'OPTIONS' });
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('GET');
  });

  it('an unexpected error is a 500 that tells nothing; the log has it', async () => {
    fail = new Error('ENOENT /srv/secret/state.db');
    try {
      const r = await get('/v1/accounts/a');
      expect(r.status).toBe(500);
      const text = await r.text();
      expect(text).not.toContain('secret');
      expect(JSON.parse(text)).toEqual({
        error: { code: 'MG_INTERNAL', message: 'internal error; see the gateway log' },
      });
      expect(logs.some((l) => l.event === 'http' && l.level === 50)).toBe(true);
    } finally {
      fail = null;
    }
  });

  it('a readiness check that never answers fails after its timeout, the others still report', async () => {
    const started = Date.now();
    const r = await get('/readyz', null);
    expect(r.status).toBe(503);
    expect(await r.json()).toEqual({
      status: 'unavailable',
      checks: { slow: 'failed: no answer within 2000 ms', ok: 'ok' },
    });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('/metrics needs no token; request lines never carry the token', async () => {
    const r = await get('/metrics', null);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('m 1\n');
    expect(JSON.stringify(logs)).not.toContain(ALICE_TOKEN);
    expect(JSON.stringify(logs)).not.toContain(BOT_TOKEN);
  });
});
