import type { Notice, Protocol, Restriction } from '../auth/policy.js';
import type { Provider } from '../geo/asn.js';
import type { Logger } from '../observability/logger.js';

/** Everything a notice needs to be rendered later; no secret ever goes in here. */
export interface NoticeRequest {
  notice: Notice;
  login: string;
  msisdn: string | null;
  protocol: Protocol;
  ip: string;
  country: string | null;
  at: number;
  /** The account's language and time zone; absent or null: the configured defaults. */
  lang?: string | null | undefined;
  tz?: string | null | undefined;
  /**
   * restriction-warning: the restrictions in `warn` that would have refused this login, each
   * with the start of a scheduled `enforce` when one is known.
   */
  warnings?: ReadonlyArray<{ restriction: Restriction; enforceAt: number | null }>;
}

/** An allowed login, for the login notification (rules.md R11). */
export interface LoginEvent {
  login: string;
  msisdn: string | null;
  lang?: string | null | undefined;
  tz?: string | null | undefined;
  protocol: Protocol;
  country: string | null;
  /** AS number and organisation; null when unknown (the check then uses the country only). */
  provider: Provider | null;
  at: number;
}

/** Where the authenticator queues subscriber notices (rules.md R7, R8, R11, R12). */
export interface NoticeSink {
  queue(request: NoticeRequest): void;
  /**
   * After an allowed login: record its provider and country, and queue a login notification
   * when either is new for the account. Must not delay the caller (work goes on in the
   * background). Optional: a sink without it sends no login notifications.
   */
  loginAllowed?(event: LoginEvent): void;
}

/** Records notices as log lines (no SMS gateway configured). */
export class LogNoticeSink implements NoticeSink {
  constructor(private readonly log: Logger) {}

  queue(r: NoticeRequest): void {
    this.log.info(
      {
        event: 'notify',
        notice: r.notice,
        login: r.login,
        protocol: r.protocol,
        ip: r.ip,
        country: r.country,
      },
      'notice queued',
    );
  }
}
