import type { Notice, Protocol } from '../auth/policy.js';
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
}

/** Where the authenticator queues subscriber notices (S7, S8, S11, S12). */
export interface NoticeSink {
  queue(request: NoticeRequest): void;
}

/** Records notices as log lines; a durable SMS outbox replaces it. */
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
