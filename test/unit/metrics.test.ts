import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/observability/metrics.js';

describe('Metrics', () => {
  it('each instance has its own registry, so several gateways can share a process', async () => {
    const a = new Metrics({ processMetrics: true });
    const b = new Metrics({ processMetrics: true });
    a.auth('imap', 'allow', 'primary', 'none', 12);
    const textA = (await a.expose()).body;
    const textB = (await b.expose()).body;
    expect(textA).toContain(
      'mailgate_auth_attempts_total{protocol="imap",result="allow",reason="primary",cohort="none"} 1',
    );
    expect(textB).not.toContain('result="allow"');
    expect(textA).toContain('process_cpu_user_seconds_total');
    expect(textA).toContain('nodejs_eventloop_lag_seconds');
  });

  it('counts attempts, durations, sessions, upstream errors and refused connections', async () => {
    const m = new Metrics({ processMetrics: false, passwordQueue: () => ({ queued: 7, active: 2 }) });
    m.auth('imap', 'deny', 'bad-password', 'none', 25);
    m.auth('imap', 'deny', 'bad-password', 'none', 30);
    m.auth('smtp', 'tempfail', 'store-unavailable', 'none', 3);
    m.sessionOpened('imap');
    m.sessionOpened('imap');
    m.sessionClosed('imap');
    m.upstreamError('imap', 'MG_UPSTREAM_CONNECT');
    m.connectionRefused('imap', 'per-ip-limit');
    const { body, contentType } = await m.expose();
    expect(contentType).toMatch(/^text\/plain/);
    const lines = body.split('\n');
    expect(lines).toContain(
      'mailgate_auth_attempts_total{protocol="imap",result="deny",reason="bad-password",cohort="none"} 2',
    );
    expect(lines).toContain(
      'mailgate_auth_attempts_total{protocol="smtp",result="tempfail",reason="store-unavailable",cohort="none"} 1',
    );
    expect(lines).toContain(
      'mailgate_auth_duration_seconds_bucket{le="0.025",protocol="imap",result="deny"} 1',
    );
    expect(lines).toContain(
      'mailgate_auth_duration_seconds_bucket{le="0.05",protocol="imap",result="deny"} 2',
    );
    expect(lines).toContain('mailgate_auth_duration_seconds_count{protocol="imap",result="deny"} 2');
    expect(lines).toContain('mailgate_sessions_open{protocol="imap"} 1');
    expect(lines).toContain('mailgate_sessions_total{protocol="imap"} 2');
    expect(lines).toContain('mailgate_upstream_errors_total{protocol="imap",code="MG_UPSTREAM_CONNECT"} 1');
    expect(lines).toContain('mailgate_connections_refused_total{protocol="imap",reason="per-ip-limit"} 1');
    expect(lines).toContain('mailgate_password_verifications_queued 7');
    expect(lines).toContain('mailgate_password_verifications_active 2');
    expect(body).not.toContain('process_cpu');
  });
});
