import { readFileSync } from 'node:fs';
import { UsageError } from '../util/errors.js';

/**
 * The accounts a load test logs in with, from a file: one per line, either CSV `login,password`
 * (the password is everything after the first comma, so it may hold commas; a field in double
 * quotes may hold anything, "" for a quote) or a JSON object `{"login": ..., "password": ...}`.
 * Blank lines and lines starting with # are skipped, as is a `login,password` header.
 * Passwords stay in memory only; the report names accounts by count, never by password.
 */

export interface LoadtestAccount {
  login: string;
  password: string;
}

/** Bounds what a load test reads into memory. */
export const MAX_ACCOUNTS = 1_000_000;

export function parseAccounts(text: string, name = 'accounts file'): LoadtestAccount[] {
  const out: LoadtestAccount[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const where = `${name} line ${i + 1}`;
    let account: LoadtestAccount;
    if (line.startsWith('{')) {
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        throw new UsageError(`${where}: not valid JSON`);
      }
      const o = v as { login?: unknown; password?: unknown };
      if (typeof o.login !== 'string' || typeof o.password !== 'string') {
        throw new UsageError(`${where}: expected {"login": "...", "password": "..."}`);
      }
      account = { login: o.login, password: o.password };
    } else {
      const fields = splitCsvLine(line, where);
      if (out.length === 0 && fields[0]?.toLowerCase() === 'login' && fields[1]?.toLowerCase() === 'password')
        return;
      if (fields.length < 2) throw new UsageError(`${where}: expected login,password`);
      account = { login: fields[0]!, password: fields.slice(1).join(',') };
    }
    if (!account.login || /[\r\n\0]/.test(account.login + account.password)) {
      throw new UsageError(`${where}: empty login, or a line break or NUL in login or password`);
    }
    if (out.length >= MAX_ACCOUNTS) throw new UsageError(`${name}: more than ${MAX_ACCOUNTS} accounts`);
    out.push(account);
  });
  if (out.length === 0) throw new UsageError(`${name}: no accounts (login,password per line, or JSON lines)`);
  return out;
}

/** CSV fields of one line (RFC 4180 quoting); fields after the first are rejoined by the caller. */
function splitCsvLine(line: string, where: string): string[] {
  const fields: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let v = '';
      i++;
      for (;;) {
        if (i >= line.length) throw new UsageError(`${where}: unterminated quoted field`);
        if (line[i] === '"') {
          if (line[i + 1] === '"') {
            v += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        v += line[i++];
      }
      fields.push(v);
      if (i < line.length && line[i] !== ',') throw new UsageError(`${where}: text after a quoted field`);
      i++;
    } else {
      const comma = line.indexOf(',', i);
      const end = comma < 0 ? line.length : comma;
      fields.push(line.slice(i, end));
      i = end + 1;
    }
  }
  return fields;
}

export function readAccounts(file: string): LoadtestAccount[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  return parseAccounts(text, file);
}
