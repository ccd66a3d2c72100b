import { describe, expect, it } from 'vitest';
import { parseConfig, redactConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/util/errors.js';

// biome-ignore lint/suspicious/noExplicitAny: raw config before validation
type Raw = Record<string, any>;

const base = (smtp: Raw): Raw => ({
  redis: { url: 'redis://127.0.0.1:6379/0' },
  geo: { domesticCountries: ['JP'] },
  smtp,
});

describe('smtp config', () => {
  it('fills in the defaults', () => {
    const c = parseConfig(base({ upstream: { servers: ['127.0.0.1:10025'], login: { style: 'xclient' } } }), {
      env: {},
    });
    expect(c.smtp).toMatchObject({
      listen: [],
      requireSenderMatch: true,
      upstream: { tls: 'none', tlsVerify: true, connectTimeoutMs: 5_000, replyTimeoutMs: 300_000 },
      limits: {
        maxMessageBytes: 35 * 1024 * 1024,
        maxMessagesPerSession: 100,
        maxRecipientsPerMessage: 100,
        maxUnauthenticatedCommands: 10,
        maxAuthFailures: 3,
        idleTimeoutMs: 300_000,
        maxConnectionsPerIp: 50,
      },
    });
  });

  it('master style needs a user and a password, and the password is redacted', () => {
    const master = { style: 'master', user: 'proxy', password: 'smtp-master-pw' };
    const c = parseConfig(base({ upstream: { servers: ['[::1]:25'], login: master } }), { env: {} });
    expect(JSON.stringify(redactConfig(c))).not.toContain('smtp-master-pw');
    expect(() =>
      parseConfig(base({ upstream: { servers: ['a:25'], login: { style: 'master', user: 'proxy' } } }), {
        env: {},
      }),
    ).toThrow(/smtp\.upstream\.login\.password/);
  });

  it('names the key of a bad value', () => {
    const bad = (smtp: Raw) => () => parseConfig(base(smtp), { env: {} });
    const up = { servers: ['a:25'], login: { style: 'xclient' } };
    expect(bad({ upstream: { ...up, servers: ['no-port'] } })).toThrow(
      /smtp\.upstream\.servers\[0\]: expected HOST:PORT/,
    );
    expect(bad({ upstream: up, hostname: 'bad name' })).toThrow(/smtp\.hostname/);
    expect(bad({ upstream: up, listen: [{ port: 465, tls: 'ssl' }] })).toThrow(/smtp\.listen\[0\]\.tls/);
    expect(bad({ upstream: { ...up, login: { style: 'sasl' } } })).toThrow(ConfigError);
  });
});
