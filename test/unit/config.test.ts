// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${VAR} references in config values are the subject here
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfig, parseConfig, redactConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { ConfigError } from '../../src/util/errors.js';

const EXAMPLE = fileURLToPath(new URL('../../config/example.yaml', import.meta.url));

// biome-ignore lint/suspicious/noExplicitAny: raw configs are arbitrary data before validation
type Raw = Record<string, any>;

function minimal(): Raw {
  return { redis: { url: 'redis://127.0.0.1:6379/0' }, geo: { domesticCountries: ['JP'] } };
}

function withImap(): Raw {
  return {
    ...minimal(),
    imap: {
      listen: [{ port: 993, tls: 'implicit' }],
      upstream: {
        servers: ['127.0.0.1:10143'],
        login: { style: 'master', user: 'proxy', password: 'master-secret' },
      },
    },
  };
}

/** The ConfigError message parseConfig throws for `raw`. */
function problem(raw: unknown, env: NodeJS.ProcessEnv = {}): string {
  try {
    parseConfig(raw, { env });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('MG_CONFIG');
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    return message;
  }
  throw new Error('expected a ConfigError');
}

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mailgate-config-test-'));
  tempDirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

describe('defaults', () => {
  it('a minimal config gets the documented defaults', () => {
    expect(parseConfig(minimal(), { env: {} })).toEqual({
      log: { level: 'info' },
      workers: 'auto',
      redis: { url: 'redis://127.0.0.1:6379/0', keyPrefix: 'mg:', commandTimeoutMs: 2000 },
      proxyProtocol: { trusted: [], timeoutMs: 3000 },
      geo: {
        countryDb: 'bundled',
        asnDb: 'bundled',
        domesticCountries: ['JP'],
        unknownCountry: 'overseas',
        overrides: [],
      },
      passwords: {
        argon2: { memoryKiB: 19456, iterations: 2, parallelism: 1 },
        maxConcurrentVerifies: 2,
        maxQueuedVerifies: 1000,
        cache: { ttlMs: 3_600_000, maxEntries: 100_000, negativeTtlMs: 60_000, maxNegativeEntries: 10_000 },
      },
      lockout: {
        windowMs: 900_000,
        sourceMaxFailures: 30,
        tarpitAfter: 3,
        tarpitBaseMs: 250,
        tarpitMaxMs: 5_000,
        pairMaxFailures: 10,
        accountMaxFailures: 50,
        lockMs: 1_800_000,
        knownSourceMs: 2_592_000_000,
      },
      notify: {
        worker: {
          inServe: true,
          concurrency: 8,
          maxAttempts: 8,
          backoff: { baseMs: 2_000, maxMs: 600_000 },
          claimIdleMs: 60_000,
        },
        dedupeWindowMs: 86_400_000,
        dailyCap: 5,
        quietHours: null,
        loginNotification: { enabled: true, windowDays: 90, notifyFirstLogin: false },
        defaults: { lang: 'ja', tz: 'Asia/Tokyo' },
        brand: { ja: 'メールサービス', en: 'Mail service' },
        links: {},
      },
    });
  });

  it('notify: bad quiet hours, time zone or a claim time below the webhook timeout name the key', () => {
    const raw = minimal();
    raw.notify = { quietHours: { start: '25:00', end: '08:00' } };
    expect(problem(raw)).toBe('notify.quietHours.start: expected HH:MM (24-hour clock)');
    raw.notify = { defaults: { tz: 'Asia/Nowhere' } };
    expect(problem(raw)).toBe('notify.defaults.tz: expected an IANA time zone such as Asia/Tokyo');
    raw.notify = {
      webhook: { url: 'http://127.0.0.1:9/sms', timeoutMs: 5_000 },
      worker: { claimIdleMs: 5_000 },
    };
    expect(problem(raw)).toMatch(/^notify\.worker\.claimIdleMs: must be above notify\.webhook\.timeoutMs/);
    raw.notify = { webhook: { url: 'ftp://x' } };
    expect(problem(raw)).toBe('notify.webhook.url: expected an http:// or https:// URL');
  });

  it('an imap section gets its defaults', () => {
    const { imap } = parseConfig(withImap(), { env: {} });
    expect(imap).toEqual({
      listen: [{ host: '0.0.0.0', port: 993, tls: 'implicit' }],
      greeting: 'mailgate ready.',
      upstream: {
        servers: ['127.0.0.1:10143'],
        tls: 'none',
        tlsVerify: true,
        login: { style: 'master', user: 'proxy', password: 'master-secret', separator: '*' },
        forwardClientAddress: true,
        connectTimeoutMs: 5000,
        loginTimeoutMs: 10000,
      },
      limits: {
        maxLineBytes: 8192,
        maxLiteralBytes: 8192,
        maxBadCommands: 10,
        maxAuthFailures: 3,
        preauthTimeoutMs: 60000,
        maxConnectionsPerIp: 50,
      },
    });
  });

  it('accepts the plain-authzid upstream login and IPv6 upstreams', () => {
    const raw = withImap();
    raw.imap.upstream.servers = ['[::1]:143', 'store.example.jp:143'];
    raw.imap.upstream.login = { style: 'plain-authzid', user: 'proxy', password: 'pw' };
    const { imap } = parseConfig(raw, { env: {} });
    expect(imap?.upstream.login).toEqual({ style: 'plain-authzid', user: 'proxy', password: 'pw' });
    expect(imap?.upstream.servers).toEqual(['[::1]:143', 'store.example.jp:143']);
  });

  it('each parse gets its own objects', () => {
    const a = parseConfig(minimal(), { env: {} });
    const b = parseConfig({ ...minimal(), passwords: { argon2: { memoryKiB: 64 } } }, { env: {} });
    expect(a.passwords.argon2.memoryKiB).toBe(19456);
    expect(b.passwords.argon2).toEqual({ memoryKiB: 64, iterations: 2, parallelism: 1 });
  });
});

describe('errors name the key path', () => {
  it('bad upstream server', () => {
    const raw = withImap();
    raw.imap.upstream.servers = ['no-port'];
    expect(problem(raw)).toBe('imap.upstream.servers[0]: expected HOST:PORT (IPv6 as [addr]:port)');
  });

  it('unknown key at the top level', () => {
    expect(problem({ ...minimal(), colour: 'blue' })).toBe('(top level): unknown key "colour"');
  });

  it('unknown nested key', () => {
    const raw = withImap();
    raw.imap.upstream.retries = 3;
    expect(problem(raw)).toBe('imap.upstream: unknown key "retries"');
    const raw2 = minimal();
    raw2.redis.passwd = 'x';
    expect(problem(raw2)).toBe('redis: unknown key "passwd"');
  });

  it('wrong enum value for a listener', () => {
    const raw = withImap();
    raw.imap.listen = [{ port: 993, tls: 'ssl' }];
    const msg = problem(raw);
    expect(msg).toMatch(/^imap\.listen\[0\]\.tls: /);
    expect(msg).toContain('implicit');
    expect(msg).toContain('starttls');
  });

  it('missing geo.domesticCountries', () => {
    expect(problem({ redis: minimal().redis, geo: {} })).toBe('geo.domesticCountries: is required');
  });

  it('missing required sections', () => {
    expect(problem({ redis: minimal().redis })).toBe('geo: is required');
    expect(problem({ geo: minimal().geo })).toBe('redis: is required');
    expect(problem(null)).toBe('redis: is required');
  });

  it('empty domesticCountries', () => {
    expect(problem({ ...minimal(), geo: { domesticCountries: [] } })).toMatch(/^geo\.domesticCountries: /);
  });

  it.each(['jp', 'JPN', 'J', ''])('bad country code %j', (code) => {
    expect(problem({ ...minimal(), geo: { domesticCountries: ['JP', code] } })).toBe(
      'geo.domesticCountries[1]: expected an ISO 3166 alpha-2 code',
    );
  });

  it('bad override country', () => {
    const raw = minimal();
    raw.geo.overrides = [{ cidr: '203.0.113.0/24', country: 'Japan' }];
    expect(problem(raw)).toBe('geo.overrides[0].country: expected an ISO 3166 alpha-2 code');
  });

  it('wrong type', () => {
    const raw = minimal();
    raw.passwords = { argon2: { memoryKiB: 'lots' } };
    expect(problem(raw)).toMatch(/^passwords\.argon2\.memoryKiB: .*number/);
  });

  it('unknown upstream login style', () => {
    const raw = withImap();
    raw.imap.upstream.login = { style: 'oauth' };
    expect(problem(raw)).toMatch(/^imap\.upstream\.login\.style: /);
  });

  it('missing upstream password', () => {
    const raw = withImap();
    delete raw.imap.upstream.login.password;
    expect(problem(raw)).toBe('imap.upstream.login.password: is required');
  });

  it('redis url must be redis:// or rediss://', () => {
    expect(problem({ ...minimal(), redis: { url: 'http://127.0.0.1:6379' } })).toMatch(/^redis\.url: /);
  });
});

describe('environment variables', () => {
  it('expands ${VAR} and ${VAR:-default}', () => {
    const raw = withImap();
    raw.imap.upstream.login.password = '${UP_PW}';
    raw.redis.url = 'redis://${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}/0';
    raw.redis.keyPrefix = '${PREFIX:-mg}-${ENVNAME}:';
    const config = parseConfig(raw, { env: { UP_PW: 's3cr3t', REDIS_PORT: '6380', ENVNAME: 'prod' } });
    expect(config.imap?.upstream.login.password).toBe('s3cr3t');
    expect(config.redis.url).toBe('redis://127.0.0.1:6380/0');
    expect(config.redis.keyPrefix).toBe('mg-prod:');
  });

  it('expands inside arrays, and does not expand a value twice', () => {
    const raw = withImap();
    raw.imap.upstream.servers = ['${STORE}'];
    raw.imap.upstream.login.password = '${UP_PW}';
    const config = parseConfig(raw, { env: { STORE: 'store.example.jp:143', UP_PW: '${STORE}' } });
    expect(config.imap?.upstream.servers).toEqual(['store.example.jp:143']);
    expect(config.imap?.upstream.login.password).toBe('${STORE}');
  });

  it('an empty default is allowed', () => {
    const raw = withImap();
    raw.imap.greeting = 'hello${SUFFIX:-}';
    expect(parseConfig(raw, { env: {} }).imap?.greeting).toBe('hello');
  });

  it('an unset variable is an error naming the key', () => {
    const raw = withImap();
    raw.imap.upstream.login.password = '${MAILGATE_UPSTREAM_PASSWORD}';
    expect(problem(raw, {})).toBe(
      'imap.upstream.login.password: environment variable MAILGATE_UPSTREAM_PASSWORD is not set',
    );
    const raw2 = withImap();
    raw2.imap.upstream.servers = ['127.0.0.1:143', '${SECOND}'];
    expect(problem(raw2, {})).toBe('imap.upstream.servers[1]: environment variable SECOND is not set');
  });

  it('defaults to process.env', () => {
    const name = `MAILGATE_TEST_VAR_${process.pid}`;
    process.env[name] = 'from-process-env:';
    try {
      const raw = minimal();
      raw.redis.keyPrefix = `\${${name}}`;
      expect(parseConfig(raw).redis.keyPrefix).toBe('from-process-env:');
    } finally {
      delete process.env[name];
    }
  });
});

describe('loadConfig', () => {
  it('reads YAML and resolves relative paths against the config file directory', () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'conf'));
    const file = join(dir, 'conf', 'mailgate.yaml');
    writeFileSync(
      file,
      [
        'redis: { url: "redis://127.0.0.1:6379/0" }',
        'tls: { cert: certs/cert.pem, key: ../key.pem }',
        'geo:',
        '  countryDb: geo/country.mmdb',
        '  asnDb: /var/lib/geo/asn.mmdb',
        '  domesticCountries: [JP]',
      ].join('\n'),
    );
    const config = loadConfig(file, {});
    expect(config.tls).toEqual({ cert: join(dir, 'conf', 'certs', 'cert.pem'), key: join(dir, 'key.pem') });
    expect(config.geo.countryDb).toBe(join(dir, 'conf', 'geo', 'country.mmdb'));
    expect(config.geo.asnDb).toBe('/var/lib/geo/asn.mmdb');
  });

  it('uses the env it is given', () => {
    const dir = tempDir();
    const file = join(dir, 'mailgate.yaml');
    writeFileSync(file, 'redis: { url: "${URL}" }\ngeo: { domesticCountries: [JP] }\n');
    expect(loadConfig(file, { URL: 'rediss://cache:6380/1' }).redis.url).toBe('rediss://cache:6380/1');
    expect(() => loadConfig(file, {})).toThrow('redis.url: environment variable URL is not set');
  });

  it('a missing file is a ConfigError naming the file', () => {
    const file = join(tempDir(), 'nope.yaml');
    expect(() => loadConfig(file, {})).toThrow(ConfigError);
    expect(() => loadConfig(file, {})).toThrow(`cannot read config file ${file}: ENOENT`);
  });

  it('invalid YAML is a ConfigError on one line', () => {
    const file = join(tempDir(), 'bad.yaml');
    writeFileSync(file, 'redis: { url: [\n  - nope\n');
    let message = '';
    try {
      loadConfig(file, {});
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      message = (err as Error).message;
    }
    expect(message).toMatch(/not valid YAML/);
    expect(message).not.toContain('\n');
  });

  it('an empty file reports the first missing section', () => {
    const file = join(tempDir(), 'empty.yaml');
    writeFileSync(file, '');
    expect(() => loadConfig(file, {})).toThrow('redis: is required');
  });
});

describe('the result', () => {
  it('is deeply frozen', () => {
    const config = parseConfig(withImap(), { env: {} });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.redis)).toBe(true);
    expect(Object.isFrozen(config.geo.domesticCountries)).toBe(true);
    expect(Object.isFrozen(config.imap?.upstream.login)).toBe(true);
    expect(Object.isFrozen(config.passwords.argon2)).toBe(true);
    expect(() => {
      (config.redis as { keyPrefix: string }).keyPrefix = 'x:';
    }).toThrow(TypeError);
    expect(() => {
      (config.geo.domesticCountries as string[]).push('US');
    }).toThrow(TypeError);
  });

  it('does not freeze or change the raw input', () => {
    const raw = withImap();
    raw.imap.upstream.login.password = '${PW}';
    parseConfig(raw, { env: { PW: 'x' } });
    expect(Object.isFrozen(raw.imap)).toBe(false);
    expect(raw.imap.upstream.login.password).toBe('${PW}');
  });
});

describe('redactConfig', () => {
  it('hides passwords, tokens and the password in a redis URL', () => {
    const raw = withImap();
    raw.redis.url = 'redis://:redis-pw-123@cache.example.jp:6379/0';
    raw.imap.upstream.login.password = 'master-pw-456';
    const config = parseConfig(raw, { env: {} });
    const withToken = {
      ...config,
      admin: { token: 'admin-token-789', secret: 'more-secret' },
    } as unknown as Config;
    const redacted = redactConfig(withToken) as Raw;
    const text = JSON.stringify(redacted);
    for (const secret of ['redis-pw-123', 'master-pw-456', 'admin-token-789', 'more-secret']) {
      expect(text).not.toContain(secret);
    }
    expect(redacted.redis.url).toBe('redis://[redacted]@cache.example.jp:6379/0');
    expect(redacted.imap.upstream.login).toEqual({
      style: 'master',
      user: 'proxy',
      password: '[redacted]',
      separator: '*',
    });
    expect(redacted.admin.token).toBe('[redacted]');
    // Everything else is kept, and the config itself is untouched.
    expect(redacted.imap.upstream.servers).toEqual(['127.0.0.1:10143']);
    expect(redacted.geo).toEqual(config.geo);
    expect(config.redis.url).toBe('redis://:redis-pw-123@cache.example.jp:6379/0');
  });

  it('hides user:password in a rediss URL and keeps a URL without one', () => {
    const secret = parseConfig(
      { ...minimal(), redis: { url: 'rediss://mailgate:pw@cache:6380/2' } },
      { env: {} },
    );
    expect((redactConfig(secret) as Raw).redis.url).toBe('rediss://[redacted]@cache:6380/2');
    const plain = parseConfig(minimal(), { env: {} });
    expect((redactConfig(plain) as Raw).redis.url).toBe('redis://127.0.0.1:6379/0');
  });
});

describe('config/example.yaml', () => {
  const env = {
    MAILGATE_UPSTREAM_PASSWORD: 'example-upstream-pw',
    MAILGATE_ADMIN_TOKEN: 'example-admin-token',
  };

  it('exists and loads with the environment variables it references', () => {
    expect(existsSync(EXAMPLE)).toBe(true);
    const config = loadConfig(EXAMPLE, env);
    expect(config.geo.domesticCountries.length).toBeGreaterThan(0);
    expect(config.imap?.upstream.login.password).toBe('example-upstream-pw');
    expect(JSON.stringify(redactConfig(config))).not.toContain('example-upstream-pw');
  });

  it('mentions every key of the effective config (config/example.yaml documents every key)', () => {
    const config = loadConfig(EXAMPLE, env);
    const raw = parseYaml(readFileSync(EXAMPLE, 'utf8')) as unknown;
    const written = new Set(keyPaths(raw));
    const missing = keyPaths(config).filter((k) => !written.has(k));
    expect(missing).toEqual([]);
  });
});

/** Dotted key paths of every object key, array elements collapsed to `[]`. */
function keyPaths(value: unknown, prefix = ''): string[] {
  if (Array.isArray(value)) return value.flatMap((v) => keyPaths(v, `${prefix}[]`));
  if (value && typeof value === 'object') {
    return Object.entries(value).flatMap(([k, v]) => {
      const path = prefix ? `${prefix}.${k}` : k;
      return [path, ...keyPaths(v, path)];
    });
  }
  return [];
}
