/**
 * The durable SMS outbox in Redis, and what queues into it.
 *
 * Keys (under the configured prefix):
 *   notify:outbox       stream: notices ready to send (field `notice`: OutboxNotice JSON);
 *                       consumer group `delivery` (worker.ts). Entries are deleted once done.
 *   notify:deferred     zset: notices waiting for a time (quiet hours, retry backoff), score =
 *                       due time (ms), member = OutboxNotice JSON; moved to the stream when due
 *   notify:dlq          stream: notices that kept failing (fields notice, error, at)
 *   notify:log          stream, capped ~10,000: queued / deferred / sent / retry / dead events,
 *                       msisdn masked (for `notify tail`)
 *   notify:dd:<login>:<dedupe>   string with expiry: "this notice went out recently"
 *   notify:cap:<login>:<date>    counter: notices queued on the subscriber's calendar day
 *   seen:<login>        hash: `c:<country>` and `a:<asn>` -> last allowed login (ms), `first`
 *                       -> first recorded login; for login notifications (rules.md R11)
 *
 * Every queueing decision (dedupe, cap, quiet hours) is one Lua script run, so concurrent
 * gateways never double-send and a notice is either queued whole or not at all. A login
 * notification check is one round trip, made after the login's reply is decided.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { NotifyConfig } from '../config/schema.js';
import type { Logger } from '../observability/logger.js';
import { StoreUnavailableError } from '../util/errors.js';
import type { LoginEvent, NoticeRequest, NoticeSink } from './notices.js';
import { capDay, dedupeKey, isTimeZone, maskMsisdn, quietUntil } from './schedule.js';
import { LANGS, type Lang, type NoticeParams, render, type TemplateId } from './templates.js';

/** A notice as stored in the outbox, the deferred set and the dead-letter stream. */
export interface OutboxNotice {
  /** Idempotency key: the same for every delivery attempt of this notice. */
  key: string;
  template: TemplateId;
  login: string;
  msisdn: string;
  lang: Lang;
  tz: string;
  params: NoticeParams;
  queuedAt: number;
  /** Failed delivery attempts so far. */
  attempt: number;
}

/** One notice to queue. */
export interface NoticeSpec {
  template: TemplateId;
  login: string;
  msisdn: string | null;
  lang?: string | null | undefined;
  tz?: string | null | undefined;
  params: NoticeParams;
  /** Domestic wave (rule seq) a notice is about: part of its dedupe key. */
  waveSeq?: number;
  /** A deterministic idempotency key; default: a random one. */
  key?: string;
}

export type EnqueueResult = 'queued' | 'deferred' | 'duplicate' | 'capped' | 'no-msisdn';

/** A line of `notify tail`. */
export interface NotifyLogEntry {
  id: string;
  ts: string;
  event: string;
  key: string;
  template: string;
  login: string;
  /** Masked. */
  msisdn: string;
  [field: string]: string;
}

export const NOTIFY_LOG_MAXLEN = 10_000;
/** Fields kept per account in seen:<login>, besides `first`: enough for a traveller's year. */
export const SEEN_MAX_FIELDS = 64;
/** A daily-cap counter outlives its day by this much (the subscriber's day, any time zone). */
const CAP_TTL_MS = 2 * 86_400_000;
/** Accounts per pipeline when queueing many notices (a domestic wave). */
export const ENQUEUE_BATCH = 500;

export function outboxKeys(prefix: string) {
  return {
    outbox: `${prefix}notify:outbox`,
    deferred: `${prefix}notify:deferred`,
    dlq: `${prefix}notify:dlq`,
    log: `${prefix}notify:log`,
    group: 'delivery',
  };
}

// enqueue(p, login, dedupe, ddMs, day, cap, dueAt, now, notice, key, template, masked)
const ENQUEUE_LUA = `
local function enqueue(p, login, dedupe, ddMs, day, cap, dueAt, now, notice, key, template, masked)
  if dedupe ~= '' and tonumber(ddMs) > 0 then
    if not redis.call('SET', p .. 'notify:dd:' .. login .. ':' .. dedupe, '1', 'NX', 'PX', ddMs) then
      return 'duplicate'
    end
  end
  if tonumber(cap) > 0 then
    local ck = p .. 'notify:cap:' .. login .. ':' .. day
    local n = redis.call('INCR', ck)
    if n == 1 then redis.call('PEXPIRE', ck, ${CAP_TTL_MS}) end
    if n > tonumber(cap) then return 'capped' end
  end
  local state = 'queued'
  if tonumber(dueAt) > tonumber(now) then
    redis.call('ZADD', p .. 'notify:deferred', dueAt, notice)
    state = 'deferred'
  else
    redis.call('XADD', p .. 'notify:outbox', '*', 'notice', notice)
  end
  redis.call('XADD', p .. 'notify:log', 'MAXLEN', '~', ${NOTIFY_LOG_MAXLEN}, '*', 'event', state, 'key', key,
    'template', template, 'login', login, 'msisdn', masked, 'at', now)
  return state
end
`;

const ENQUEUE_SCRIPT = `${ENQUEUE_LUA}
return enqueue(unpack(ARGV, 1, 12))
`;

// rules.md R11. ARGV: p, login, now, windowMs, countryField, asnField, notifyFirst, send, then the
// 10 enqueue arguments after p/login. Returns { outcome, new fields... }.
const LOGIN_SCRIPT = `${ENQUEUE_LUA}
local p, login, now, window = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local key = p .. 'seen:' .. login
local first = redis.call('EXISTS', key) == 0
local fresh = {}
for _, f in ipairs({ ARGV[5], ARGV[6] }) do
  if f ~= '' then
    local last = tonumber(redis.call('HGET', key, f) or '0')
    if last < now - window then fresh[#fresh + 1] = f end
    redis.call('HSET', key, f, ARGV[3])
  end
end
if first then redis.call('HSET', key, 'first', ARGV[3]) end
if redis.call('HLEN', key) > ${SEEN_MAX_FIELDS} + 1 then
  local all = redis.call('HGETALL', key)
  local rows = {}
  for i = 1, #all, 2 do
    if all[i] ~= 'first' then rows[#rows + 1] = { all[i], tonumber(all[i + 1]) } end
  end
  table.sort(rows, function(a, b) return a[2] > b[2] end)
  for i = ${SEEN_MAX_FIELDS} + 1, #rows do redis.call('HDEL', key, rows[i][1]) end
end
if #fresh == 0 then return { 'known' } end
if first and ARGV[7] ~= '1' then return { 'first', unpack(fresh) } end
if ARGV[8] ~= '1' then return { 'no-msisdn', unpack(fresh) } end
return { enqueue(p, login, unpack(ARGV, 9, 18)), unpack(fresh) }
`;

type OutboxRedis = Redis & {
  mgNotifyEnqueue(...args: string[]): Promise<string>;
  mgNotifyLogin(...args: string[]): Promise<string[]>;
};
type OutboxPipeline = { mgNotifyEnqueue(...args: string[]): unknown };

export function defineOutboxScripts(redis: Redis): OutboxRedis {
  if (!('mgNotifyEnqueue' in redis)) {
    redis.defineCommand('mgNotifyEnqueue', { numberOfKeys: 0, lua: ENQUEUE_SCRIPT });
    redis.defineCommand('mgNotifyLogin', { numberOfKeys: 0, lua: LOGIN_SCRIPT });
  }
  return redis as OutboxRedis;
}

export interface OutboxDeps {
  redis: Redis;
  prefix: string;
  config: NotifyConfig;
  log: Logger;
  clock: () => number;
  /** Counts what became of each notice (mailgate_notices_total). */
  metrics?: NoticeMetrics;
}

export interface NoticeMetrics {
  notice(template: string, result: string): void;
}

/**
 * Queues notices into the Redis outbox. As the authenticator's NoticeSink it never delays a
 * login: each notice is one script run in the background; `flush()` waits for them (tests, and
 * commands that exit).
 */
export class RedisOutbox implements NoticeSink {
  readonly #redis: OutboxRedis;
  readonly #p: string;
  readonly #config: NotifyConfig;
  readonly #log: Logger;
  readonly #clock: () => number;
  readonly #metrics: NoticeMetrics | undefined;
  readonly #pending = new Set<Promise<unknown>>();

  constructor(deps: OutboxDeps) {
    this.#metrics = deps.metrics;
    this.#redis = defineOutboxScripts(deps.redis);
    this.#p = deps.prefix;
    this.#config = deps.config;
    this.#log = deps.log;
    this.#clock = deps.clock;
  }

  /** A decision's notice (rules.md R7, R12, warn phases). */
  queue(r: NoticeRequest): void {
    const base = { login: r.login, msisdn: r.msisdn, lang: r.lang, tz: r.tz };
    const params: NoticeParams = { at: r.at, protocol: r.protocol, country: r.country };
    switch (r.notice) {
      case 'overseas-restricted':
        this.#background(this.enqueue({ ...base, template: 'overseas-restricted', params }));
        break;
      case 'domestic-restricted':
        // A login refused by the domestic restriction: the connection-error SMS (rules.md R12).
        this.#background(this.enqueue({ ...base, template: 'connection-error', params }));
        break;
      case 'restriction-warning':
        for (const w of r.warnings ?? []) {
          this.#background(
            this.enqueue({
              ...base,
              template: 'restriction-warning',
              params: { ...params, restriction: w.restriction, from: w.enforceAt },
            }),
          );
        }
        break;
    }
  }

  /** rules.md R11: one script run records the login's country and provider and queues a notice if either is new. */
  loginAllowed(e: LoginEvent): void {
    const cfg = this.#config.loginNotification;
    if (!cfg.enabled) return;
    const countryField = e.country ? `c:${e.country}` : '';
    const asnField = e.provider ? `a:${e.provider.asn}` : '';
    if (!countryField && !asnField) return; // nothing known about where it came from
    const spec: NoticeSpec = {
      template: 'login-notification',
      login: e.login,
      msisdn: e.msisdn,
      lang: e.lang,
      tz: e.tz,
      params: {
        at: e.at,
        protocol: e.protocol,
        country: e.country,
        asn: e.provider?.asn ?? null,
        org: e.provider?.org ?? null,
      },
    };
    const now = this.#clock();
    const args = [
      this.#p,
      e.login,
      String(now),
      String(cfg.windowDays * 86_400_000),
      countryField,
      asnField,
      cfg.notifyFirstLogin ? '1' : '0',
      e.msisdn ? '1' : '0',
      ...this.#plan(spec, now),
    ];
    this.#background(
      this.#call(() => this.#redis.mgNotifyLogin(...args)).then(([outcome, ...fresh]) => {
        if (outcome !== 'known') this.#logged(spec, outcome ?? '?', { new: fresh });
      }),
    );
  }

  /** Queues one notice; resolves to what became of it. */
  async enqueue(spec: NoticeSpec): Promise<EnqueueResult> {
    if (!spec.msisdn) {
      this.#logged(spec, 'no-msisdn');
      return 'no-msisdn';
    }
    const r = (await this.#call(() =>
      this.#redis.mgNotifyEnqueue(this.#p, spec.login, ...this.#plan(spec, this.#clock())),
    )) as EnqueueResult;
    this.#logged(spec, r);
    return r;
  }

  /** Queues many notices in pipelines of ENQUEUE_BATCH; results in order. */
  async enqueueMany(specs: readonly NoticeSpec[]): Promise<EnqueueResult[]> {
    const out: EnqueueResult[] = [];
    for (let i = 0; i < specs.length; i += ENQUEUE_BATCH) {
      const batch = specs.slice(i, i + ENQUEUE_BATCH);
      const now = this.#clock();
      const replies = await this.#call(() => {
        const pipe = this.#redis.pipeline();
        for (const s of batch) {
          if (s.msisdn)
            (pipe as unknown as OutboxPipeline).mgNotifyEnqueue(this.#p, s.login, ...this.#plan(s, now));
        }
        return pipe.exec();
      });
      let j = 0;
      for (const s of batch) {
        if (!s.msisdn) {
          out.push('no-msisdn');
          continue;
        }
        const [err, reply] = replies?.[j++] ?? [new Error('no reply')];
        if (err) throw new StoreUnavailableError(`redis: ${err.message}`, { cause: err });
        out.push(reply as EnqueueResult);
        this.#logged(s, reply as string, {}, 'debug');
      }
    }
    return out;
  }

  /** Waits for the notices queued in the background so far. */
  async flush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  /** The script arguments after prefix and login: dedupe, window, day, cap, due, now, notice, key, template, masked. */
  #plan(spec: NoticeSpec, now: number): string[] {
    const cfg = this.#config;
    const lang = LANGS.includes(spec.lang as Lang) ? (spec.lang as Lang) : cfg.defaults.lang;
    // Checked on the way in (account add, import); a bad one here falls back, never throws.
    const tz = spec.tz && isTimeZone(spec.tz) ? spec.tz : cfg.defaults.tz;
    const msisdn = spec.msisdn ?? '';
    const notice: OutboxNotice = {
      key: spec.key ?? `${spec.template}-${randomUUID()}`,
      template: spec.template,
      login: spec.login,
      msisdn,
      lang,
      tz,
      params: spec.params,
      queuedAt: now,
      attempt: 0,
    };
    const due = quietUntil(now, tz, cfg.quietHours) ?? now;
    return [
      dedupeKey(spec.template, spec.params, spec.waveSeq),
      String(cfg.dedupeWindowMs),
      capDay(now, tz),
      String(cfg.dailyCap),
      String(due),
      String(now),
      JSON.stringify(notice),
      notice.key,
      notice.template,
      maskMsisdn(msisdn),
    ];
  }

  #logged(
    spec: NoticeSpec,
    result: string,
    extra: Record<string, unknown> = {},
    level: 'info' | 'debug' = 'info',
  ) {
    this.#metrics?.notice(spec.template, result);
    this.#log[level](
      {
        event: 'notify',
        result,
        template: spec.template,
        login: spec.login,
        msisdn: spec.msisdn ? maskMsisdn(spec.msisdn) : null,
        ...extra,
      },
      `notice ${result}`,
    );
  }

  #background(p: Promise<unknown>): void {
    const tracked = p.catch((err: Error) =>
      this.#log.warn({ event: 'notify', result: 'error', error: err.message }, 'notice not queued'),
    );
    this.#pending.add(tracked);
    void tracked.finally(() => this.#pending.delete(tracked));
  }

  async #call<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      throw new StoreUnavailableError(`redis: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** The message a notice carries, with the operator's brand and links. */
export function renderNotice(n: OutboxNotice, config: NotifyConfig): string {
  return render(n.template, n.params, { lang: n.lang, tz: n.tz, brand: config.brand, links: config.links });
}

/** A stable idempotency key for a wave notice: the same account and wave always get the same key. */
export function waveNoticeKey(template: TemplateId, seq: number, login: string): string {
  return `${template}-w${seq}-${createHash('sha256').update(login).digest('hex').slice(0, 24)}`;
}
