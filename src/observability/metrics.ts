import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Prometheus metrics, one Registry per gateway (never prom-client's global one), so tests can
 * run several gateways in one process and each /metrics shows only its own.
 *
 * Label values come from small fixed sets (protocol, result, reason, cohort, error code);
 * never a login or an address, which would make one time series per subscriber.
 */

export type MetricsProtocol = 'imap' | 'smtp';
export type AuthResultLabel = 'allow' | 'deny' | 'tempfail';

/**
 * What the protocol code reports. Narrow on purpose: the authenticator, listeners and
 * connection drivers depend on this interface, not on prom-client.
 */
export interface GatewayMetrics {
  /** One login attempt, after the decision (or the temporary failure). */
  auth(protocol: MetricsProtocol, result: AuthResultLabel, reason: string, cohort: string, ms: number): void;
  /** A client was joined to its mail store. */
  sessionOpened(protocol: MetricsProtocol): void;
  sessionClosed(protocol: MetricsProtocol): void;
  /** The store refused or failed the gateway's login, by error code (`MG_UPSTREAM_*`). */
  upstreamError(protocol: MetricsProtocol, code: string): void;
  /** A connection refused before the protocol started (PROXY header, TLS, per-IP limit). */
  connectionRefused(protocol: MetricsProtocol, reason: string): void;
}

/** Seconds; argon2id at the production parameters takes ~10 ms per verification. */
const AUTH_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface MetricsOptions {
  /** Password verifications waiting for the hashing semaphore, read at scrape time. */
  passwordQueue?: () => { queued: number; active: number };
  /** Credential cache counts, read at scrape time. */
  credentialCache?: () => {
    hits: number;
    negativeHits: number;
    misses: number;
    entries: number;
    negativeEntries: number;
  };
  /** Node.js process metrics (CPU, memory, event loop lag, GC). Default true. */
  processMetrics?: boolean;
}

export class Metrics implements GatewayMetrics {
  readonly registry = new Registry();
  readonly authAttempts: Counter<'protocol' | 'result' | 'reason' | 'cohort'>;
  readonly authDuration: Histogram<'protocol' | 'result'>;
  readonly sessionsOpen: Gauge<'protocol'>;
  readonly sessionsTotal: Counter<'protocol'>;
  readonly upstreamErrors: Counter<'protocol' | 'code'>;
  readonly connectionsRefused: Counter<'protocol' | 'reason'>;
  readonly notices: Counter<'template' | 'result'>;

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    this.authAttempts = new Counter({
      name: 'mailgate_auth_attempts_total',
      help: 'Login attempts by outcome: result allow|deny|tempfail, reason the credential or refusal reason',
      labelNames: ['protocol', 'result', 'reason', 'cohort'] as const,
      registers,
    });
    this.authDuration = new Histogram({
      name: 'mailgate_auth_duration_seconds',
      help: 'Time from the login command to the decision, password verification included',
      labelNames: ['protocol', 'result'] as const,
      buckets: AUTH_DURATION_BUCKETS,
      registers,
    });
    this.sessionsOpen = new Gauge({
      name: 'mailgate_sessions_open',
      help: 'Clients currently joined to their mail store',
      labelNames: ['protocol'] as const,
      registers,
    });
    this.sessionsTotal = new Counter({
      name: 'mailgate_sessions_total',
      help: 'Clients joined to their mail store since start',
      labelNames: ['protocol'] as const,
      registers,
    });
    this.upstreamErrors = new Counter({
      name: 'mailgate_upstream_errors_total',
      help: 'Failed logins to the mail store after an allowed login, by error code',
      labelNames: ['protocol', 'code'] as const,
      registers,
    });
    this.connectionsRefused = new Counter({
      name: 'mailgate_connections_refused_total',
      help: 'Connections refused before the protocol started, by reason',
      labelNames: ['protocol', 'reason'] as const,
      registers,
    });
    this.notices = new Counter({
      name: 'mailgate_notices_total',
      help:
        'Subscriber SMS notices by template and result: queued, deferred, duplicate, capped, no-msisdn, first ' +
        "(when queued); sent, retry, dead, quiet (by this process's delivery worker)",
      labelNames: ['template', 'result'] as const,
      registers,
    });
    const passwordQueue = opts.passwordQueue;
    if (passwordQueue) {
      new Gauge({
        name: 'mailgate_password_verifications_queued',
        help: 'Password hash operations waiting for a slot (passwords.maxConcurrentVerifies)',
        registers,
        collect() {
          this.set(passwordQueue().queued);
        },
      });
      new Gauge({
        name: 'mailgate_password_verifications_active',
        help: 'Password hash operations running now',
        registers,
        collect() {
          this.set(passwordQueue().active);
        },
      });
    }
    const cache = opts.credentialCache;
    if (cache) {
      new Counter({
        name: 'mailgate_credential_cache_lookups_total',
        help: 'Credential cache lookups: result hit (password matched), negative-hit (matched nothing) or miss',
        labelNames: ['result'] as const,
        registers,
        collect() {
          const s = cache();
          this.reset();
          this.inc({ result: 'hit' }, s.hits);
          this.inc({ result: 'negative-hit' }, s.negativeHits);
          this.inc({ result: 'miss' }, s.misses);
        },
      });
      new Gauge({
        name: 'mailgate_credential_cache_entries',
        help: 'Entries in the credential cache: kind positive or negative',
        labelNames: ['kind'] as const,
        registers,
        collect() {
          const s = cache();
          this.set({ kind: 'positive' }, s.entries);
          this.set({ kind: 'negative' }, s.negativeEntries);
        },
      });
    }
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  auth(protocol: MetricsProtocol, result: AuthResultLabel, reason: string, cohort: string, ms: number): void {
    this.authAttempts.inc({ protocol, result, reason, cohort });
    this.authDuration.observe({ protocol, result }, ms / 1000);
  }

  sessionOpened(protocol: MetricsProtocol): void {
    this.sessionsOpen.inc({ protocol });
    this.sessionsTotal.inc({ protocol });
  }

  sessionClosed(protocol: MetricsProtocol): void {
    this.sessionsOpen.dec({ protocol });
  }

  upstreamError(protocol: MetricsProtocol, code: string): void {
    this.upstreamErrors.inc({ protocol, code });
  }

  connectionRefused(protocol: MetricsProtocol, reason: string): void {
    this.connectionsRefused.inc({ protocol, reason });
  }

  notice(template: string, result: string): void {
    this.notices.inc({ template, result });
  }

  /** The Prometheus text exposition format, and its content type. */
  async expose(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
