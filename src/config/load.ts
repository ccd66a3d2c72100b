import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../util/errors.js';
import { type Config, configSchema } from './schema.js';

/**
 * Loads and validates a config file. Any problem ends in one ConfigError whose message names
 * the key path and the problem, e.g. `imap.upstream.servers[0]: expected HOST:PORT`.
 *
 * Strings may reference environment variables as `${NAME}` or `${NAME:-default}`, so that
 * secrets need not be written into the file. A reference to an unset variable without a
 * default is an error naming the key.
 */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseConfig(raw, { env, baseDir: dirname(resolve(file)) });
}

export function parseConfig(raw: unknown, opts: { env?: NodeJS.ProcessEnv; baseDir?: string } = {}): Config {
  const env = opts.env ?? process.env;
  const expanded = expandEnv(raw ?? {}, env, []);
  const result = configSchema.safeParse(expanded);
  if (!result.success) throw new ConfigError(describeIssue(result.error));
  const config = result.data;
  if (opts.baseDir) resolvePaths(config, opts.baseDir);
  return deepFreeze(config);
}

function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid configuration';
  const path = formatPath(issue.path);
  let message = issue.message;
  if (issue.code === 'unrecognized_keys')
    message = `unknown key ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
  if (issue.code === 'invalid_type' && /received undefined/.test(message)) message = 'is required';
  return `${path || '(top level)'}: ${message}`;
}

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

function expandEnv(value: unknown, env: NodeJS.ProcessEnv, path: PropertyKey[]): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (_match, name: string, fallback: string | undefined) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`${formatPath(path)}: environment variable ${name} is not set`);
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, env, [...path, i]));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandEnv(v, env, [...path, k])]));
  }
  return value;
}

/** Relative file paths in the config are relative to the config file, not the working directory. */
function resolvePaths(config: Config, baseDir: string): void {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  if (config.tls) {
    config.tls.cert = abs(config.tls.cert);
    config.tls.key = abs(config.tls.key);
  }
  if (config.geo.countryDb !== 'bundled') config.geo.countryDb = abs(config.geo.countryDb);
  if (config.geo.asnDb !== 'bundled') config.geo.asnDb = abs(config.geo.asnDb);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

const SECRET_KEYS = new Set(['password', 'token', 'secret']);

/** A copy of the config fit to print: secrets replaced, passwords in URLs removed. */
export function redactConfig(config: Config): unknown {
  const walk = (value: unknown, key: string): unknown => {
    if (typeof value === 'string') {
      if (SECRET_KEYS.has(key)) return '[redacted]';
      return value.replace(/^(rediss?:\/\/)([^@/]*)@/, (_m, scheme: string) => `${scheme}[redacted]@`);
    }
    if (Array.isArray(value)) return value.map((v) => walk(v, ''));
    if (value && typeof value === 'object') {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v, k)]));
    }
    return value;
  };
  return walk(config, '');
}
