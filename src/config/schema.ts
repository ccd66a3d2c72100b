import { z } from 'zod';

/**
 * The configuration file's schema. Key paths listed in PROXY headers are trusted only from configured peers are the documented interface;
 * config/example.yaml documents every key. Defaults are chosen for a production deployment;
 * tests and the demo override what they need.
 */

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'expected HOST:PORT (IPv6 as [addr]:port)');

const port = z.number().int().min(0).max(65535);

const listener = z.strictObject({
  host: z.string().default('0.0.0.0'),
  port,
  /**
   * implicit: TLS from the first byte (993/465). starttls: plaintext until STARTTLS, no login
   * before it (RFC 9051 §6.2.3 LOGINDISABLED). none: plaintext with login allowed, only for a
   * front that is already encrypted (a TLS-terminating load balancer on the same host) or tests.
   */
  tls: z.enum(['implicit', 'starttls', 'none']),
});

const upstreamLogin = z.discriminatedUnion('style', [
  z.strictObject({
    /** Dovecot master user: LOGIN "user*master" "secret" (auth_master_user_separator). */
    style: z.literal('master'),
    user: z.string().min(1),
    password: z.string().min(1),
    separator: z.string().min(1).default('*'),
  }),
  z.strictObject({
    /** SASL PLAIN with authzid = the user, authcid = the master user (RFC 4616 §2). */
    style: z.literal('plain-authzid'),
    user: z.string().min(1),
    password: z.string().min(1),
  }),
]);

const imapLimits = z.strictObject({
  maxLineBytes: z.number().int().min(512).max(1048576).default(8192),
  maxLiteralBytes: z.number().int().min(64).max(1048576).default(8192),
  maxBadCommands: z.number().int().min(1).max(1000).default(10),
  maxAuthFailures: z.number().int().min(1).max(100).default(3),
  preauthTimeoutMs: z.number().int().min(100).default(60_000),
  maxConnectionsPerIp: z.number().int().min(1).default(50),
});

const imap = z.strictObject({
  listen: z.array(listener).default([]),
  /** Sent in the greeting; keep it free of version numbers. */
  greeting: z.string().default('mailgate ready.'),
  upstream: z.strictObject({
    servers: z.array(hostPort).min(1),
    tls: z.enum(['none', 'starttls', 'implicit']).default('none'),
    /** Verify the upstream's certificate (turn off only for a self-signed store on loopback). */
    tlsVerify: z.boolean().default(true),
    login: upstreamLogin,
    /** Send ID x-originating-ip/-port so the store logs and rate-limits the real client. */
    forwardClientAddress: z.boolean().default(true),
    connectTimeoutMs: z.number().int().min(100).default(5_000),
    loginTimeoutMs: z.number().int().min(100).default(10_000),
  }),
  limits: imapLimits.default(imapLimits.parse({})),
});

const smtpUpstreamLogin = z.discriminatedUnion('style', [
  /**
   * XCLIENT ADDR/PORT/NAME/HELO/LOGIN (Postfix XCLIENT_README): the store sees the client's
   * address and the user's login as if it had authenticated them itself. The gateway must be
   * in the store's smtpd_authorized_xclient_hosts.
   */
  z.strictObject({ style: z.literal('xclient') }),
  /** AUTH PLAIN with authzid = the user, authcid = the master user (RFC 4616 §2; Dovecot SASL). */
  z.strictObject({ style: z.literal('master'), user: z.string().min(1), password: z.string().min(1) }),
]);

const smtpLimits = z.strictObject({
  /** Largest message accepted (SIZE, RFC 1870); larger gets 552. Default 35 MiB. */
  maxMessageBytes: z
    .number()
    .int()
    .min(1024)
    .default(35 * 1024 * 1024),
  maxMessagesPerSession: z.number().int().min(1).default(100),
  maxRecipientsPerMessage: z.number().int().min(1).default(100),
  /**
   * Commands other than AUTH before a successful AUTH, then 421 and close. At least 4: on 587
   * EHLO, STARTTLS and EHLO again come first, and smtp-server refuses the one that reaches it.
   */
  maxUnauthenticatedCommands: z.number().int().min(4).max(1000).default(10),
  /** Refused AUTH attempts on one connection, then 421 and close. */
  maxAuthFailures: z.number().int().min(1).max(100).default(3),
  /** Idle time while the gateway waits for the client (RFC 5321 §4.5.3.2: at least 5 minutes). */
  idleTimeoutMs: z.number().int().min(1_000).default(300_000),
  maxConnectionsPerIp: z.number().int().min(1).default(50),
});

const smtp = z.strictObject({
  listen: z.array(listener).default([]),
  /** Name in the greeting and EHLO reply; default: this machine's host name. */
  hostname: z
    .string()
    .regex(/^[A-Za-z0-9.-]{1,253}$/, 'expected a host name')
    .optional(),
  /** The envelope sender (MAIL FROM) must be the account's login or one of its aliases. */
  requireSenderMatch: z.boolean().default(true),
  upstream: z.strictObject({
    servers: z.array(hostPort).min(1),
    tls: z.enum(['none', 'starttls', 'implicit']).default('none'),
    tlsVerify: z.boolean().default(true),
    login: smtpUpstreamLogin,
    connectTimeoutMs: z.number().int().min(100).default(5_000),
    /** Greeting, EHLO, STARTTLS and XCLIENT or AUTH must finish within this. */
    loginTimeoutMs: z.number().int().min(100).default(10_000),
    /** Wait for the reply to MAIL, RCPT or DATA (RFC 5321 §4.5.3.2: 5 minutes). */
    replyTimeoutMs: z.number().int().min(100).default(300_000),
    /** Wait for the reply after the message's final dot (RFC 5321 §4.5.3.2: 10 minutes). */
    dataTimeoutMs: z.number().int().min(100).default(600_000),
  }),
  limits: smtpLimits.default(smtpLimits.parse({})),
});

const geo = z.strictObject({
  countryDb: z.string().default('bundled'),
  asnDb: z.string().default('bundled'),
  domesticCountries: z.array(z.string().regex(/^[A-Z]{2}$/, 'expected an ISO 3166 alpha-2 code')).min(1),
  unknownCountry: z.enum(['overseas', 'domestic']).default('overseas'),
  overrides: z
    .array(
      z.strictObject({
        cidr: z.string(),
        country: z.string().regex(/^[A-Z]{2}$/, 'expected an ISO 3166 alpha-2 code'),
        asn: z.number().int().min(0).optional(),
        org: z.string().optional(),
      }),
    )
    .default([]),
});

const argon2 = z.strictObject({
  memoryKiB: z.number().int().min(8).max(4_194_304).default(19456),
  iterations: z.number().int().min(1).max(100).default(2),
  parallelism: z.number().int().min(1).max(16).default(1),
});

const credentialCache = z.strictObject({
  /** A password that matched is remembered this long (Dovecot auth_cache_ttl: 1 h); 0 turns the cache off. */
  ttlMs: z.number().int().min(0).default(3_600_000),
  maxEntries: z.number().int().min(1).default(100_000),
  /** A password that matched nothing is remembered this long; 0: no negative entries. */
  negativeTtlMs: z.number().int().min(0).default(60_000),
  maxNegativeEntries: z.number().int().min(1).default(10_000),
});

const passwords = z.strictObject({
  argon2: argon2.default(argon2.parse({})),
  /** Hash verifications running at once in this process; the rest queue (libuv pool has 4 threads). */
  maxConcurrentVerifies: z.number().int().min(1).max(64).default(2),
  /** Verifications allowed to wait; beyond this a login gets a temporary failure instead of queueing. */
  maxQueuedVerifies: z.number().int().min(0).default(1000),
  /** Verified passwords remembered per process (auth/credential-cache.ts), as Dovecot's auth_cache. */
  cache: credentialCache.default(credentialCache.parse({})),
});

/**
 * Failure counting (rules.md R13), by source first: a client address (IPv6: its /64) that keeps failing
 * is slowed down and then refused whatever account it names; a (account, source) pair that
 * keeps failing is locked; an account failing from many sources is locked only for sources
 * that have not logged in to it successfully before, so a spray from elsewhere cannot lock
 * the subscriber out.
 */
const lockout = z.strictObject({
  windowMs: z
    .number()
    .int()
    .min(1_000)
    .default(15 * 60_000),
  /** Failures per source per window before the source is refused outright. */
  sourceMaxFailures: z.number().int().min(1).default(30),
  /** Failures per source after which each refusal is delayed, doubling up to tarpitMaxMs. */
  tarpitAfter: z.number().int().min(0).default(3),
  tarpitBaseMs: z.number().int().min(0).default(250),
  tarpitMaxMs: z.number().int().min(0).default(5_000),
  /** Failures on one account from one source per window before that pair is locked. */
  pairMaxFailures: z.number().int().min(1).default(10),
  /** Failures on one account from all sources per window before it is locked for unknown sources. */
  accountMaxFailures: z.number().int().min(1).default(50),
  lockMs: z
    .number()
    .int()
    .min(1_000)
    .default(30 * 60_000),
  /** A source that logged in successfully within this is "known" to the account. */
  knownSourceMs: z
    .number()
    .int()
    .min(60_000)
    .default(30 * 24 * 3_600_000),
});

/** Admin API tokens: long enough that guessing is hopeless even without a rate limit. */
const adminToken = z
  .string()
  .min(16, 'must be at least 16 characters')
  // What an Authorization: Bearer header can carry (RFC 6750 §2.1 b64token).
  .regex(/^[A-Za-z0-9\-._~+/]+=*$/, 'may hold only letters, digits and - . _ ~ + / (then = padding)');

const admin = z
  .strictObject({
    /** Loopback by default: the API can change every account; reach it through SSH or a proxy. */
    listen: z
      .strictObject({ host: z.string().default('127.0.0.1'), port: port.default(8025) })
      .default({ host: '127.0.0.1', port: 8025 }),
    /** The token named "admin" in audit lines (actor api:admin). */
    token: adminToken.optional(),
    /** More tokens, each with a name that audit lines show as actor api:<name>. */
    tokens: z
      .array(
        z.strictObject({
          name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected 1-64 letters, digits, ".", "_" or "-"'),
          token: adminToken,
        }),
      )
      .default([]),
  })
  .superRefine((a, ctx) => {
    if (a.token === undefined && a.tokens.length === 0)
      ctx.addIssue({ code: 'custom', path: ['token'], message: 'is required (or give admin.tokens)' });
    const names = new Set<string>(a.token !== undefined ? ['admin'] : []);
    const secrets = new Set<string>(a.token !== undefined ? [a.token] : []);
    a.tokens.forEach((t, i) => {
      if (names.has(t.name))
        ctx.addIssue({ code: 'custom', path: ['tokens', i, 'name'], message: `"${t.name}" is used twice` });
      // Two names for one secret would make the audit trail name the wrong operator.
      if (secrets.has(t.token))
        ctx.addIssue({ code: 'custom', path: ['tokens', i, 'token'], message: 'is used twice' });
      names.add(t.name);
      secrets.add(t.token);
    });
  });

const clockTime = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'expected HH:MM (24-hour clock)');

/** An IANA time zone name that this Node.js knows (Intl), e.g. Asia/Tokyo. */
export const timeZone = z.string().refine((tz) => {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}, 'expected an IANA time zone such as Asia/Tokyo');

const notifyWorker = z.strictObject({
  /** Run a delivery worker inside `serve` (as well as, or instead of, `notify worker`). */
  inServe: z.boolean().default(true),
  /** Webhook requests in flight at once per worker. */
  concurrency: z.number().int().min(1).max(256).default(8),
  /** Delivery attempts before a notice goes to the dead-letter stream. */
  maxAttempts: z.number().int().min(1).max(100).default(8),
  backoff: z
    .strictObject({
      baseMs: z.number().int().min(10).default(2_000),
      maxMs: z.number().int().min(10).default(600_000),
    })
    .default({ baseMs: 2_000, maxMs: 600_000 }),
  /** A notice delivered to a worker that has not finished it within this is taken over by another. */
  claimIdleMs: z.number().int().min(100).default(60_000),
});

const notify = z
  .strictObject({
    /** The SMS gateway. Absent: notices are only logged (event notify); no outbox, no worker. */
    webhook: z
      .strictObject({
        url: z.string().regex(/^https?:\/\/\S+$/, 'expected an http:// or https:// URL'),
        /** Sent as Authorization: Bearer <token>. */
        token: z.string().min(1).optional(),
        timeoutMs: z.number().int().min(100).default(10_000),
      })
      .optional(),
    worker: notifyWorker.default(notifyWorker.parse({})),
    /** The same notice to the same account at most once per window. */
    dedupeWindowMs: z
      .number()
      .int()
      .min(0)
      .default(24 * 3_600_000),
    /** Notices per account per day (the subscriber's day); 0: no cap. */
    dailyCap: z.number().int().min(0).default(5),
    /** Notices that fall in these hours (subscriber's time zone) wait until the end; null: none. */
    quietHours: z.strictObject({ start: clockTime, end: clockTime }).nullable().default(null),
    loginNotification: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** A provider (AS) or country not seen for this long is "unusual" (rules.md R11). */
        windowDays: z.number().int().min(1).max(3650).default(90),
        /** Notify the very first recorded login of an account too. */
        notifyFirstLogin: z.boolean().default(false),
      })
      .default({ enabled: true, windowDays: 90, notifyFirstLogin: false }),
    /** For accounts that do not set their own language or time zone. */
    defaults: z
      .strictObject({ lang: z.enum(['ja', 'en']).default('ja'), tz: timeZone.default('Asia/Tokyo') })
      .default({ lang: 'ja', tz: 'Asia/Tokyo' }),
    /** The service name at the head of every message, per language. */
    brand: z
      .strictObject({
        ja: z.string().min(1).default('メールサービス'),
        en: z.string().min(1).default('Mail service'),
      })
      .default({ ja: 'メールサービス', en: 'Mail service' }),
    /** Pages named in the messages: where to issue an IMAP-only password, and web mail. */
    links: z
      .strictObject({ imapPassword: z.string().min(1).optional(), webmail: z.string().min(1).optional() })
      .default({}),
  })
  .superRefine((n, ctx) => {
    if (n.webhook && n.worker.claimIdleMs <= n.webhook.timeoutMs)
      ctx.addIssue({
        code: 'custom',
        path: ['worker', 'claimIdleMs'],
        message: 'must be above notify.webhook.timeoutMs (else a slow request is taken over and sent twice)',
      });
    if (n.worker.backoff.maxMs < n.worker.backoff.baseMs)
      ctx.addIssue({
        code: 'custom',
        path: ['worker', 'backoff', 'maxMs'],
        message: 'must be at least baseMs',
      });
  });

export const configSchema = z.strictObject({
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    })
    .default({ level: 'info' }),
  /** serve: worker processes sharing the listeners; "auto" is one per core (README, Workers), 1 runs in one process. */
  workers: z.union([z.literal('auto'), z.number().int().min(1).max(256)]).default('auto'),
  redis: z.strictObject({
    url: z.string().regex(/^rediss?:\/\//, 'expected redis://HOST:PORT/DB or rediss://'),
    /** Prefix of every key, so that several deployments (or tests) can share one Redis. */
    keyPrefix: z.string().default('mg:'),
    commandTimeoutMs: z.number().int().min(10).default(2_000),
  }),
  tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
  proxyProtocol: z
    .strictObject({
      trusted: z.array(z.string()).default([]),
      timeoutMs: z.number().int().min(10).default(3_000),
    })
    .default({ trusted: [], timeoutMs: 3_000 }),
  imap: imap.optional(),
  smtp: smtp.optional(),
  geo,
  passwords: passwords.default(passwords.parse({})),
  lockout: lockout.default(lockout.parse({})),
  /** The admin HTTP API; absent: no admin listener. */
  admin: admin.optional(),
  /** Subscriber notifications (SMS): outbox, delivery worker, dedupe and throttling (rules.md R7, R8, R11, R12). */
  notify: notify.default(notify.parse({})),
});

export type Config = z.infer<typeof configSchema>;
export type ImapConfig = NonNullable<Config['imap']>;
export type ImapLimits = ImapConfig['limits'];
export type SmtpConfig = NonNullable<Config['smtp']>;
export type SmtpUpstreamConfig = SmtpConfig['upstream'];
export type ListenerConfig = z.infer<typeof listener>;
export type UpstreamLoginConfig = z.infer<typeof upstreamLogin>;
export type Argon2Params = z.infer<typeof argon2>;
export type AdminConfig = NonNullable<Config['admin']>;
export type LockoutConfig = z.infer<typeof lockout>;
export type NotifyConfig = z.infer<typeof notify>;
