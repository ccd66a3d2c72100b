import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { AdminConfig } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import {
  MailgateError,
  NotFoundError,
  RefusedError,
  StoreUnavailableError,
  UsageError,
} from '../util/errors.js';
import type { RedisAuditLog } from './audit.js';
import type { OperatorService } from './service.js';

/**
 * The admin HTTP API: JSON in and out, a bearer token per operator or tool (RFC 6750), and
 * the same service functions as bin/mailgate (STYLE rule 9): each route only translates a
 * request into one service call and its result (or error class) into a response.
 *
 * /healthz, /readyz and /metrics need no token: they tell nothing about accounts, and
 * Prometheus and orchestrators scrape them on the loopback admin port.
 */

/** Largest request body; a bigger one gets 413 before it is read. */
export const MAX_BODY_BYTES = 1024 * 1024;
/** The request line and headers must arrive within this (slowloris). */
const HEADERS_TIMEOUT_MS = 10_000;
/** The whole request, body included, must arrive within this. */
const REQUEST_TIMEOUT_MS = 30_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** Each readiness check (Redis PING, ...) must answer within this. */
const READY_CHECK_TIMEOUT_MS = 2_000;

// ---------------------------------------------------------------------------------------------
// Tokens

/** Every configured token with its name: `admin.token` is named "admin". */
export function adminTokens(config: AdminConfig): Array<{ name: string; token: string }> {
  return [...(config.token !== undefined ? [{ name: 'admin', token: config.token }] : []), ...config.tokens];
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * Checks presented tokens in constant time: both sides are hashed first, so the comparison
 * always runs over 32 bytes and a token's length does not leak, and every configured token is
 * compared, so which one matched does not leak either.
 */
export class TokenVerifier {
  readonly #tokens: ReadonlyArray<{ name: string; digest: Buffer }>;

  constructor(tokens: ReadonlyArray<{ name: string; token: string }>) {
    this.#tokens = tokens.map((t) => ({ name: t.name, digest: sha256(t.token) }));
  }

  /** The name of the token, or null when it is none of them. */
  check(presented: string): string | null {
    const digest = sha256(presented);
    let name: string | null = null;
    for (const t of this.#tokens) {
      if (timingSafeEqual(digest, t.digest) && name === null) name = t.name;
    }
    return name;
  }
}

/** The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235 §2.1), or null. */
export function bearerToken(header: string | undefined): string | null {
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header ?? '');
  return m?.[1] ?? null;
}

// ---------------------------------------------------------------------------------------------
// Routing

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';

/** `'/v1/accounts/{login}/x'` → `'login'`: route parameters are typed from the path pattern. */
export type PathParams<P extends string> = P extends `${string}{${infer Name}}${infer Rest}`
  ? Name | PathParams<Rest>
  : never;

/** A handler's answer other than a plain 200 with a JSON body. */
export class Reply {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> = {},
  ) {}
}

export interface Route<Ctx> {
  method: HttpMethod;
  path: string;
  segments: ReadonlyArray<{ literal: string } | { param: string }>;
  /** Largest body this route accepts. Default MAX_BODY_BYTES. */
  maxBodyBytes: number;
  handle(ctx: Ctx, params: Record<string, string>): Promise<unknown>;
}

/**
 * The route builder for one context type: `const api = router<ApiContext>()`, then one line
 * per route, `api('GET', '/v1/accounts/{login}', ({ ops, params }) => ops.showAccount(params.login))`.
 */
export function router<Ctx>() {
  return <P extends string>(
    method: HttpMethod,
    path: P,
    handle: (ctx: Ctx & { params: Record<PathParams<P>, string> }) => Promise<unknown>,
    opts: { maxBodyBytes?: number } = {},
  ): Route<Ctx> => {
    const segments = path
      .split('/')
      .slice(1)
      .map((s) => (/^\{\w+\}$/.test(s) ? { param: s.slice(1, -1) } : { literal: s }));
    return {
      method,
      path,
      segments,
      maxBodyBytes: opts.maxBodyBytes ?? MAX_BODY_BYTES,
      handle: (ctx, params) => handle({ ...ctx, params: params as Record<PathParams<P>, string> }),
    };
  };
}

export type RouteMatch<Ctx> =
  | { kind: 'found'; route: Route<Ctx>; params: Record<string, string> }
  | { kind: 'wrong-method'; allow: HttpMethod[] }
  | { kind: 'none' };

/** Finds the route for a method and path (`/v1/accounts/alice%40example.jp`, query excluded). */
export function matchRoute<Ctx>(
  routes: ReadonlyArray<Route<Ctx>>,
  method: string,
  path: string,
): RouteMatch<Ctx> {
  const parts = path.split('/').slice(1);
  const allow: HttpMethod[] = [];
  for (const r of routes) {
    if (r.segments.length !== parts.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < parts.length && ok; i++) {
      const seg = r.segments[i]!;
      const part = parts[i]!;
      if ('literal' in seg) ok = seg.literal === part;
      else if (part === '') ok = false;
      else {
        try {
          params[seg.param] = decodeURIComponent(part);
        } catch {
          throw new HttpError(400, 'MG_BAD_REQUEST', `malformed percent-encoding in the path: ${part}`);
        }
      }
    }
    if (!ok) continue;
    if (r.method === method) return { kind: 'found', route: r, params };
    allow.push(r.method);
  }
  return allow.length ? { kind: 'wrong-method', allow } : { kind: 'none' };
}

// ---------------------------------------------------------------------------------------------
// The API: one line per route, each a translation to one service call

export interface ApiContext {
  ops: OperatorService;
  /** The request body as parsed JSON; {} when there is none. */
  body: unknown;
  query: URLSearchParams;
  audit: Pick<RedisAuditLog, 'tail'>;
}

const phase = z.enum(['off', 'warn', 'enforce']);

const addAccountBody = z.strictObject({
  login: z.string(),
  primaryPassword: z.string().optional(),
  primaryHash: z.string().optional(),
  msisdn: z.string().optional(),
  aliases: z.array(z.string()).optional(),
  upstreamUser: z.string().optional(),
  upstream: z.string().optional(),
  lang: z.string().optional(),
  tz: z.string().optional(),
});
const issueBody = z.strictObject({ ifAbsent: z.boolean().default(false) });
/** A start time for a rollout rule: ISO 8601, like the CLI's --at. */
const isoTime = z
  .string()
  .refine((v) => /^\d{4}-\d{2}-\d{2}/.test(v) && !Number.isNaN(Date.parse(v)), 'expected an ISO 8601 time')
  .transform((v) => Date.parse(v));
const overseasBody = z.strictObject({ phase, at: isoTime.optional() });
const domesticBody = z
  .strictObject({
    phase,
    logins: z.array(z.string()).min(1).optional(),
    percent: z.number().optional(),
    all: z.literal(true).optional(),
    at: isoTime.optional(),
  })
  .refine(
    (b) => [b.logins, b.percent, b.all].filter((x) => x !== undefined).length === 1,
    'give exactly one of "logins", "percent" or "all": true',
  );
const exemptBody = z.strictObject({ until: z.union([isoTime, z.literal('now')]) });

/** Drops keys whose value is undefined (zod's optional output) for exactOptionalPropertyTypes. */
type Defined<T> = { [K in keyof T]: Exclude<T[K], undefined> };
function defined<T extends object>(o: T): Defined<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Defined<T>;
}

/** Validates a request body; a problem is a 400 naming the field. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue?.path.length ? issue.path.map(String).join('.') : 'body';
  const message =
    issue?.code === 'unrecognized_keys'
      ? `unknown field ${issue.keys.map((k) => `"${k}"`).join(', ')}`
      : (issue?.message ?? 'invalid');
  throw new UsageError(`${where}: ${message}`);
}

function queryInt(query: URLSearchParams, name: string, fallback: number): number {
  const v = query.get(name);
  if (v === null) return fallback;
  if (!/^\d{1,9}$/.test(v)) throw new UsageError(`${name}: expected a non-negative integer`);
  return Number(v);
}

const created = (location: string) => (body: unknown) => new Reply(201, body, { location });

const api = router<ApiContext>();

export const API_ROUTES: ReadonlyArray<Route<ApiContext>> = [
  api('POST', '/v1/accounts', ({ ops, body }) =>
    ops
      .addAccount(defined(parseBody(addAccountBody, body)))
      .then((v) => created(`/v1/accounts/${encodeURIComponent(v.login)}`)(v)),
  ),
  api('GET', '/v1/accounts/{login}', ({ ops, params }) => ops.showAccount(params.login)),
  api('POST', '/v1/accounts/{login}/imap-password', ({ ops, params, body }) =>
    ops.issueImapPassword(params.login, parseBody(issueBody, body)),
  ),
  api('DELETE', '/v1/accounts/{login}/imap-password', ({ ops, params }) =>
    ops.revokeImapPassword(params.login),
  ),
  api('GET', '/v1/rollout', ({ ops }) => ops.rolloutStatus()),
  api('PUT', '/v1/rollout/overseas', ({ ops, body }) => {
    const b = parseBody(overseasBody, body);
    return ops.setOverseasPhase(b.phase, b.at);
  }),
  api('PUT', '/v1/rollout/domestic', ({ ops, body }) => {
    const b = parseBody(domesticBody, body);
    const target = b.all
      ? { all: true as const }
      : b.percent !== undefined
        ? { percent: b.percent }
        : { logins: b.logins ?? [] };
    return ops.setDomesticPhase(target, b.phase, b.at);
  }),
  api('PUT', '/v1/accounts/{login}/exempt', ({ ops, params, body }) => {
    const { until } = parseBody(exemptBody, body);
    return ops.exempt(params.login, until === 'now' ? 0 : until);
  }),
  api('POST', '/v1/accounts/{login}/unlock', ({ ops, params }) => ops.unlock(params.login)),
  api('GET', '/v1/audit', async ({ audit, query }) => ({
    entries: await audit.tail(queryInt(query, 'limit', 100)),
  })),
];

// ---------------------------------------------------------------------------------------------
// Probes and metrics: no token

export interface ProbeContext {
  metrics: Pick<Metrics, 'expose'>;
  /** Named readiness checks; each resolves when its part is usable. */
  readiness: Readonly<Record<string, () => Promise<unknown> | unknown>>;
}

async function runCheck(check: () => Promise<unknown> | unknown): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      Promise.resolve().then(check),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${READY_CHECK_TIMEOUT_MS} ms`)),
          READY_CHECK_TIMEOUT_MS,
        );
      }),
    ]);
    return 'ok';
  } catch (err) {
    return `failed: ${(err as Error).message}`;
  } finally {
    clearTimeout(timer);
  }
}

const probe = router<ProbeContext>();

export const PROBE_ROUTES: ReadonlyArray<Route<ProbeContext>> = [
  probe('GET', '/healthz', async () => ({ status: 'ok' })),
  probe('GET', '/readyz', async ({ readiness }) => {
    const names = Object.keys(readiness);
    const results = await Promise.all(names.map((n) => runCheck(readiness[n]!)));
    const checks = Object.fromEntries(names.map((n, i) => [n, results[i]]));
    const ready = results.every((r) => r === 'ok');
    return new Reply(ready ? 200 : 503, { status: ready ? 'ready' : 'unavailable', checks });
  }),
  probe('GET', '/metrics', async ({ metrics }) => {
    const { contentType, body } = await metrics.expose();
    return new Reply(200, body, { 'content-type': contentType });
  }),
];

// ---------------------------------------------------------------------------------------------
// Errors

/** A request the API refuses before any service call (bad JSON, too large, no such route). */
export class HttpError extends MailgateError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(code, message);
  }
}

/** Status and public body for an error; internals of unexpected errors are never sent. */
export function errorResponse(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof HttpError) return { status: err.status, code: err.code, message: err.message };
  if (err instanceof UsageError) return { status: 400, code: err.code, message: err.message };
  if (err instanceof NotFoundError) return { status: 404, code: err.code, message: err.message };
  if (err instanceof RefusedError) return { status: 409, code: err.code, message: err.message };
  if (err instanceof StoreUnavailableError || (err instanceof MailgateError && err.code === 'MG_OVERLOADED'))
    return { status: 503, code: err.code, message: 'temporarily unavailable, try again' };
  return { status: 500, code: 'MG_INTERNAL', message: 'internal error; see the gateway log' };
}

// ---------------------------------------------------------------------------------------------
// The server

export interface AdminServerDeps {
  config: AdminConfig;
  /** The operator service acting as `actor` (`api:<token name>`), for the audit trail. */
  operatorService: (actor: string) => OperatorService;
  audit: Pick<RedisAuditLog, 'tail' | 'flush'>;
  metrics: Pick<Metrics, 'expose'>;
  readiness: ProbeContext['readiness'];
  log: Logger;
}

const JSON_TYPE = 'application/json; charset=utf-8';

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.');
}

export class AdminServer {
  readonly server: http.Server;
  readonly #tokens: TokenVerifier;

  constructor(private readonly deps: AdminServerDeps) {
    this.#tokens = new TokenVerifier(adminTokens(deps.config));
    this.server = http.createServer(
      {
        headersTimeout: HEADERS_TIMEOUT_MS,
        requestTimeout: REQUEST_TIMEOUT_MS,
        keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
      },
      (req, res) => {
        this.#serve(req, res).catch((err: unknown) => {
          // #serve answers every error itself; this is the last guard against a crashed process.
          this.deps.log.error({ event: 'http', err }, 'admin request handler failed');
          res.destroy();
        });
      },
    );
  }

  listen(): Promise<AddressInfo> {
    const { host, port } = this.deps.config.listen;
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const addr = this.server.address() as AddressInfo;
        if (!isLoopback(addr.address)) {
          this.deps.log.warn(
            { event: 'listen', protocol: 'admin', host: addr.address, port: addr.port },
            'admin API on a non-loopback address: /metrics, /healthz and /readyz answer without a token, and the API is plain HTTP',
          );
        }
        resolve(addr);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  async #serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    const method = req.method ?? 'GET';
    // Read now: once a 413 has closed the connection, req.socket is gone.
    const ip = req.socket?.remoteAddress ?? null;
    let path = '/';
    let actor: string | null = null;
    let status = 500;
    try {
      const url = new URL(req.url ?? '/', 'http://admin.invalid');
      path = url.pathname;
      const probe = matchRoute(PROBE_ROUTES, method, path);
      if (probe.kind === 'found') {
        const { metrics, readiness } = this.deps;
        status = this.#send(res, await probe.route.handle({ metrics, readiness }, probe.params));
        return;
      }
      // Everything else needs a token, before the path is even looked up.
      const presented = bearerToken(req.headers.authorization);
      const name = presented === null ? null : this.#tokens.check(presented);
      if (name === null) {
        throw new HttpError(
          401,
          'MG_UNAUTHORIZED',
          presented === null ? 'missing bearer token (Authorization: Bearer ...)' : 'invalid token',
          { 'www-authenticate': presented === null ? 'Bearer' : 'Bearer error="invalid_token"' },
        );
      }
      actor = `api:${name}`;
      const m = matchRoute(API_ROUTES, method, path);
      if (m.kind === 'none') throw new HttpError(404, 'MG_NO_ROUTE', `no route ${method} ${path}`);
      if (m.kind === 'wrong-method') {
        throw new HttpError(405, 'MG_METHOD', `${method} is not allowed on ${path}`, {
          allow: m.allow.join(', '),
        });
      }
      const body = await readJson(req, m.route.maxBodyBytes);
      const ctx: ApiContext = {
        ops: this.deps.operatorService(actor),
        body,
        query: url.searchParams,
        audit: this.deps.audit,
      };
      const result = await m.route.handle(ctx, m.params);
      // The action is in the audit stream before the caller hears it is done.
      await this.deps.audit.flush();
      status = this.#send(res, result);
    } catch (err) {
      const e = errorResponse(err);
      status = e.status;
      if (status === 500) {
        this.deps.log.error({ event: 'http', method, path, actor, err }, 'admin request failed');
      }
      const headers: Record<string, string> = err instanceof HttpError ? { ...err.headers } : {};
      if (status === 503) headers['retry-after'] = '1';
      // A body we did not read: say so, and close, rather than read megabytes to keep the connection.
      if (status === 413) headers.connection = 'close';
      this.#send(res, new Reply(status, { error: { code: e.code, message: e.message } }, headers));
    } finally {
      const line = {
        event: 'http',
        method,
        path,
        actor,
        status,
        ip,
        ms: Math.round((performance.now() - started) * 10) / 10,
      };
      if (status === 401) this.deps.log.warn(line, 'admin request refused');
      else if (path.startsWith('/v1/')) this.deps.log.info(line, 'admin request');
      else this.deps.log.debug(line, 'admin request');
    }
  }

  #send(res: http.ServerResponse, result: unknown): number {
    const reply = result instanceof Reply ? result : new Reply(200, result);
    const isText = typeof reply.body === 'string';
    const payload = isText ? (reply.body as string) : `${JSON.stringify(reply.body)}\n`;
    res.writeHead(reply.status, {
      'content-type': isText ? 'text/plain; charset=utf-8' : JSON_TYPE,
      'content-length': Buffer.byteLength(payload),
      // Responses may carry a freshly issued IMAP-only password: never cache one.
      'cache-control': 'no-store',
      ...reply.headers,
    });
    res.end(payload);
    return reply.status;
  }
}

/** The request body as JSON ({} when empty), at most `max` bytes. */
async function readJson(req: http.IncomingMessage, max: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) throw new HttpError(413, 'MG_TOO_LARGE', `request body larger than ${max} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > max) throw new HttpError(413, 'MG_TOO_LARGE', `request body larger than ${max} bytes`);
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (err instanceof HttpError) throw err;
    // The client went away mid-body: nobody will read the answer, and it is no server fault.
    throw new HttpError(400, 'MG_BAD_REQUEST', `request body not received: ${(err as Error).message}`);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new HttpError(400, 'MG_BAD_JSON', `request body is not valid JSON: ${(err as Error).message}`);
  }
}
