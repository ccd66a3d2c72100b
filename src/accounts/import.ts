import { checkPasswordHash } from '../auth/passwords.js';
import { parseHostPort } from '../net/upstream-connect.js';
import { isTimeZone } from '../notify/schedule.js';
import { UsageError } from '../util/errors.js';
import { checkLoginName } from './store.js';

/**
 * `account import`: accounts from JSON lines or CSV into the store, idempotently.
 *
 * The file is read as a stream, line by line, and sent in pipelined batches; each account is
 * one Lua script (AccountStore.importBatch) that checks the login and alias ownership and then
 * writes the account, its aliases and the `logins` set together, or writes nothing. Memory
 * stays bounded whatever the file size: a few batches in flight and the rejected lines.
 *
 * What a line means:
 * - A field the file does not give (CSV: no such column; JSON: no such key) is left as it is.
 *   A given field replaces the stored one: an empty value (CSV: empty cell; JSON: null, "" or
 *   []) clears msisdn, upstreamUser, upstream or the aliases. The primary hash is never
 *   cleared by an import: an empty one counts as not given. Fields the import does not manage
 *   (IMAP-only password, versions, rollout, lockout, exemptions) are never touched.
 * - `aliases` replaces the alias set: aliases no longer listed are released, new ones claimed.
 *   An alias that belongs to another account is refused with the whole line. Lines are applied
 *   in file order, so an alias can move within one file only when the line releasing it comes
 *   first; otherwise the claiming line is rejected (and succeeds on the next run).
 * - A login that appears on an earlier line of the same file is rejected, so that re-running a
 *   file always ends in the same state.
 * - A changed primary hash bumps primaryVersion and announces it, like set-primary.
 *
 * Re-importing the same file changes nothing and reports every line `unchanged`.
 */

export type ImportFormat = 'jsonl' | 'csv';

/** Accounts per pipeline: large enough to amortise round trips, small enough for latency. */
export const IMPORT_BATCH_ACCOUNTS = 500;
/** Pipelines sent before waiting for the oldest: keeps Redis busy while this process parses. */
export const IMPORT_BATCHES_IN_FLIGHT = 4;
/** A longer line is rejected without being parsed (and without buffering it whole). */
export const IMPORT_MAX_LINE_BYTES = 64 * 1024;
/** Rejected lines kept for the report; beyond this only the count goes on. */
export const IMPORT_MAX_REJECTED_KEPT = 100_000;
/** How often progress is reported. */
export const IMPORT_PROGRESS_INTERVAL_MS = 2_000;

export const IMPORT_COLUMNS = [
  'login',
  'aliases',
  'msisdn',
  'primaryHash',
  'upstreamUser',
  'upstream',
  'lang',
  'tz',
] as const;
export type ImportColumn = (typeof IMPORT_COLUMNS)[number];

const E164 = /^\+[1-9]\d{6,14}$/; // as `account add --msisdn`

/**
 * One account as a line gives it, checked and normalised. A missing property is a field the
 * line does not give; null clears it.
 */
export interface ImportRecord {
  line: number;
  login: string;
  aliases?: string[];
  primaryHash?: string;
  msisdn?: string | null;
  upstreamUser?: string | null;
  upstream?: string | null;
  /** SMS language, ja | en (notify/templates.ts). */
  lang?: string | null;
  /** IANA time zone for quiet hours and dates in SMS. */
  tz?: string | null;
}

export type RejectReason =
  | 'malformed'
  | 'unknown-field'
  | 'bad-login'
  | 'bad-alias'
  | 'bad-msisdn'
  | 'bad-hash'
  | 'bad-upstream'
  | 'bad-lang'
  | 'bad-tz'
  | 'login-taken'
  | 'alias-taken'
  | 'duplicate';

export interface RejectedLine {
  line: number;
  /** The login as the line gives it, when it could be read. */
  login: string | null;
  reason: RejectReason;
  message: string;
}

/** What the store did with one record. */
export type ImportOutcome =
  | { kind: 'created' }
  | { kind: 'updated'; fields: string[] }
  | { kind: 'unchanged' }
  | { kind: 'rejected'; reason: 'login-taken' | 'alias-taken' | 'duplicate'; message: string };

/** The store side of an import (AccountStore implements it). */
export interface ImportTarget {
  beginImport(): Promise<string>;
  importBatch(run: string, records: readonly ImportRecord[], now: number): Promise<ImportOutcome[]>;
  endImport(run: string): Promise<void>;
}

export interface ImportSummary {
  format: ImportFormat;
  /** Lines read, the CSV header and blank lines included. */
  lines: number;
  created: number;
  updated: number;
  unchanged: number;
  rejected: number;
  /** Per field, how many updated accounts changed it. */
  changedFields: Record<string, number>;
  /** In line order; at most IMPORT_MAX_REJECTED_KEPT of them. */
  rejectedLines: RejectedLine[];
  /** Rejected lines beyond those kept. */
  rejectedOmitted: number;
  ms: number;
}

export interface ImportProgress {
  lines: number;
  accounts: number;
  ms: number;
}

// ---------------------------------------------------------------------------------------------
// Lines

export interface Line {
  n: number;
  /** null when the line is longer than IMPORT_MAX_LINE_BYTES. */
  text: string | null;
}

/**
 * Splits a byte stream into lines (LF or CRLF), numbered from 1, without ever buffering more
 * than one line of at most `maxBytes`. A UTF-8 byte order mark at the start is dropped.
 */
export async function* readLines(
  source: AsyncIterable<Buffer | string>,
  maxBytes = IMPORT_MAX_LINE_BYTES,
): AsyncGenerator<Line> {
  let n = 0;
  let parts: Buffer[] = [];
  let size = 0;
  let tooLong = false;
  let first = true;
  const finish = (): Line => {
    n++;
    let text: string | null = null;
    if (!tooLong) {
      let buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
      if (buf.length > 0 && buf[buf.length - 1] === 0x0d) buf = buf.subarray(0, buf.length - 1);
      text = buf.toString('utf8');
      if (first && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    first = false;
    parts = [];
    size = 0;
    tooLong = false;
    return { n, text };
  };
  const add = (piece: Buffer) => {
    if (tooLong || piece.length === 0) return;
    if (size + piece.length > maxBytes + 1) {
      // +1: room for the CR of a CRLF ending
      tooLong = true;
      parts = [];
      size = 0;
      return;
    }
    parts.push(piece);
    size += piece.length;
  };
  for await (const chunk of source) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(0x0a, start);
      if (nl < 0) {
        add(buf.subarray(start));
        break;
      }
      add(buf.subarray(start, nl));
      yield finish();
      start = nl + 1;
    }
  }
  if (size > 0 || tooLong) yield finish();
}

/** By the file name's extension, else by the first non-blank character: `{` is JSON lines. */
export function detectFormat(name: string | null, firstLine: string): ImportFormat {
  const lower = (name ?? '').toLowerCase();
  if (lower.endsWith('.jsonl') || lower.endsWith('.ndjson')) return 'jsonl';
  if (lower.endsWith('.csv')) return 'csv';
  return firstLine.trimStart().startsWith('{') ? 'jsonl' : 'csv';
}

// ---------------------------------------------------------------------------------------------
// Parsing one line

/** The fields of one line before checking: undefined = not given, null = cleared. */
type RawFields = { [K in ImportColumn]?: K extends 'aliases' ? string[] | null : string | null };

const reject = (line: number, login: string | null, reason: RejectReason, message: string): RejectedLine => ({
  line,
  login,
  reason,
  message,
});

export function isRejected(r: ImportRecord | RejectedLine): r is RejectedLine {
  return 'reason' in r;
}

/** Checks and normalises one line's fields into a record, or says why the line is refused. */
export function checkFields(line: number, raw: RawFields): ImportRecord | RejectedLine {
  const given = typeof raw.login === 'string' ? raw.login : null;
  let login: string;
  try {
    if (!given) throw new UsageError('login is missing');
    login = checkLoginName(given);
  } catch (err) {
    return reject(line, given, 'bad-login', (err as Error).message);
  }
  const rec: ImportRecord = { line, login };
  if (raw.aliases !== undefined) {
    const aliases: string[] = [];
    for (const a of raw.aliases ?? []) {
      let alias: string;
      try {
        alias = checkLoginName(a, 'alias');
      } catch (err) {
        return reject(line, login, 'bad-alias', (err as Error).message);
      }
      // As `account add`: the login itself is not an alias, and each alias counts once.
      if (alias !== login && !aliases.includes(alias)) aliases.push(alias);
    }
    rec.aliases = aliases;
  }
  if (raw.primaryHash) {
    try {
      rec.primaryHash = checkPasswordHash(raw.primaryHash);
    } catch (err) {
      return reject(line, login, 'bad-hash', `primaryHash: ${(err as Error).message}`);
    }
  }
  if (raw.msisdn !== undefined) {
    if (raw.msisdn && !E164.test(raw.msisdn))
      return reject(
        line,
        login,
        'bad-msisdn',
        `msisdn "${raw.msisdn}" is not an E.164 number like +819012345678`,
      );
    rec.msisdn = raw.msisdn || null;
  }
  if (raw.upstream !== undefined) {
    if (raw.upstream) {
      if (!parseHostPort(raw.upstream)) {
        return reject(line, login, 'bad-upstream', `upstream "${raw.upstream}" is not HOST:PORT`);
      }
    }
    rec.upstream = raw.upstream || null;
  }
  if (raw.upstreamUser !== undefined) {
    if (raw.upstreamUser && /[\s\p{Cc}]/u.test(raw.upstreamUser))
      return reject(line, login, 'malformed', 'upstreamUser must not contain spaces or control characters');
    rec.upstreamUser = raw.upstreamUser || null;
  }
  if (raw.lang !== undefined) {
    if (raw.lang && raw.lang !== 'ja' && raw.lang !== 'en')
      return reject(line, login, 'bad-lang', `lang "${raw.lang}" is not ja or en`);
    rec.lang = raw.lang || null;
  }
  if (raw.tz !== undefined) {
    if (raw.tz && !isTimeZone(raw.tz))
      return reject(line, login, 'bad-tz', `tz "${raw.tz}" is not an IANA time zone like Asia/Tokyo`);
    rec.tz = raw.tz || null;
  }
  return rec;
}

const FIELD_REASON: Record<ImportColumn, RejectReason> = {
  login: 'bad-login',
  aliases: 'bad-alias',
  msisdn: 'bad-msisdn',
  primaryHash: 'bad-hash',
  upstreamUser: 'malformed',
  upstream: 'bad-upstream',
  lang: 'bad-lang',
  tz: 'bad-tz',
};

/** One JSON line: an object with the import columns as keys. */
export function parseJsonLine(n: number, text: string): ImportRecord | RejectedLine {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return reject(n, null, 'malformed', `not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return reject(n, null, 'malformed', 'not a JSON object');
  const obj = value as Record<string, unknown>;
  const login = typeof obj.login === 'string' ? obj.login : null;
  const raw: RawFields = {};
  for (const [key, v] of Object.entries(obj)) {
    if (!(IMPORT_COLUMNS as readonly string[]).includes(key))
      return reject(
        n,
        login,
        'unknown-field',
        `unknown field "${key}" (fields: ${IMPORT_COLUMNS.join(', ')})`,
      );
    const col = key as ImportColumn;
    if (col === 'aliases') {
      if (v === null) raw.aliases = null;
      else if (Array.isArray(v) && v.every((a) => typeof a === 'string')) raw.aliases = v as string[];
      else return reject(n, login, 'bad-alias', 'aliases must be an array of strings');
    } else if (v === null || typeof v === 'string') {
      raw[col] = v;
    } else {
      return reject(
        n,
        login,
        FIELD_REASON[col],
        `${col} must be a string${col === 'login' ? '' : ' or null'}`,
      );
    }
  }
  return checkFields(n, raw);
}

/**
 * Splits one CSV record (RFC 4180 quoting: "a ""quoted"", value"). Returns null for a quote
 * that does not close on the line: no column may hold a line break, so that is a broken row.
 */
export function splitCsv(text: string): string[] | null {
  const cells: string[] = [];
  let i = 0;
  for (;;) {
    let cell = '';
    if (text[i] === '"') {
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        if (q < 0) return null;
        cell += text.slice(i, q);
        if (text[q + 1] === '"') {
          cell += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      const comma = text.indexOf(',', i);
      const rest = comma < 0 ? text.slice(i) : text.slice(i, comma);
      if (rest.trim() !== '') return null; // text after the closing quote
      cells.push(cell);
      if (comma < 0) return cells;
      i = comma + 1;
    } else {
      const comma = text.indexOf(',', i);
      cell = comma < 0 ? text.slice(i) : text.slice(i, comma);
      if (cell.includes('"')) return null; // a quote inside an unquoted cell
      cells.push(cell.trim());
      if (comma < 0) return cells;
      i = comma + 1;
    }
  }
}

/** The header row: known column names (case-insensitive), each once, `login` among them. */
export function parseCsvHeader(n: number, text: string): ImportColumn[] {
  const cells = splitCsv(text);
  if (!cells) throw new UsageError(`line ${n}: the CSV header has an unclosed quote`);
  const byLower = new Map(IMPORT_COLUMNS.map((c) => [c.toLowerCase(), c]));
  const columns: ImportColumn[] = [];
  for (const cell of cells) {
    const col = byLower.get(cell.trim().toLowerCase());
    if (!col)
      throw new UsageError(
        `line ${n}: unknown column "${cell.trim()}" in the CSV header (columns: ${IMPORT_COLUMNS.join(', ')})`,
      );
    if (columns.includes(col))
      throw new UsageError(`line ${n}: column "${col}" appears twice in the CSV header`);
    columns.push(col);
  }
  if (!columns.includes('login')) throw new UsageError(`line ${n}: the CSV header has no "login" column`);
  return columns;
}

export function parseCsvRow(
  n: number,
  columns: readonly ImportColumn[],
  text: string,
): ImportRecord | RejectedLine {
  const cells = splitCsv(text);
  if (!cells) return reject(n, null, 'malformed', 'malformed CSV row: unbalanced quotes');
  const loginAt = columns.indexOf('login');
  const login = cells[loginAt] || null;
  if (cells.length !== columns.length)
    return reject(
      n,
      login,
      'malformed',
      `malformed CSV row: ${cells.length} cells, the header has ${columns.length}${cells.length > columns.length ? ' (quote a value that holds commas, as argon2 hashes do)' : ''}`,
    );
  const raw: RawFields = {};
  columns.forEach((col, i) => {
    const cell = cells[i]!;
    if (col === 'aliases')
      raw.aliases = cell
        .split(';')
        .map((a) => a.trim())
        .filter((a) => a !== '');
    else raw[col] = cell === '' ? null : cell;
  });
  return checkFields(n, raw);
}

// ---------------------------------------------------------------------------------------------
// The import

/**
 * Imports every line of `source` into the store. `name` (a file name, or null for a pipe)
 * picks the format by extension. Throws UsageError for a file that cannot be an import at all
 * (empty, or a bad CSV header), before anything is written; a store failure midway throws
 * StoreUnavailableError, every account written until then being complete (re-run the file).
 */
export async function importAccounts(
  target: ImportTarget,
  source: AsyncIterable<Buffer | string>,
  opts: {
    name: string | null;
    format?: ImportFormat;
    clock: () => number;
    onProgress?: (p: ImportProgress) => void;
  },
): Promise<ImportSummary> {
  const started = opts.clock();
  const lines = readLines(source);
  const summary: ImportSummary = {
    format: opts.format ?? 'csv',
    lines: 0,
    created: 0,
    updated: 0,
    unchanged: 0,
    rejected: 0,
    changedFields: {},
    rejectedLines: [],
    rejectedOmitted: 0,
    ms: 0,
  };
  const addRejected = (r: RejectedLine) => {
    summary.rejected++;
    if (summary.rejectedLines.length < IMPORT_MAX_REJECTED_KEPT) summary.rejectedLines.push(r);
    else summary.rejectedOmitted++;
  };

  // The first non-blank line decides the format (and is the CSV header).
  // (Read with next(): leaving a for-await loop early would close the generator.)
  let first: Line | undefined;
  for (let r = await lines.next(); !r.done; r = await lines.next()) {
    summary.lines = r.value.n;
    if (r.value.text === null || r.value.text.trim() !== '') {
      first = r.value;
      break;
    }
  }
  if (!first) throw new UsageError(`${opts.name ?? 'standard input'} is empty: no accounts to import`);
  const format = opts.format ?? detectFormat(opts.name, first.text ?? '');
  summary.format = format;
  let columns: ImportColumn[] | null = null;
  if (format === 'csv') {
    if (first.text === null) throw new UsageError(`line ${first.n}: the CSV header is too long`);
    columns = parseCsvHeader(first.n, first.text);
  }

  const run = await target.beginImport();
  const inFlight: Array<Promise<void>> = [];
  let batch: ImportRecord[] = [];
  let accounts = 0;
  let lastProgress = started;

  const settle = (records: ImportRecord[], outcomes: ImportOutcome[]) => {
    records.forEach((rec, i) => {
      const o = outcomes[i];
      switch (o?.kind) {
        case 'created':
          summary.created++;
          break;
        case 'updated':
          summary.updated++;
          for (const f of o.fields) summary.changedFields[f] = (summary.changedFields[f] ?? 0) + 1;
          break;
        case 'unchanged':
          summary.unchanged++;
          break;
        case 'rejected':
          addRejected(reject(rec.line, rec.login, o.reason, o.message));
          break;
        case undefined:
          throw new Error(`the store returned no outcome for line ${rec.line}`);
      }
    });
  };
  const flush = async () => {
    if (batch.length === 0) return;
    const records = batch;
    batch = [];
    accounts += records.length;
    const sent = target.importBatch(run, records, opts.clock()).then((o) => settle(records, o));
    sent.catch(() => {}); // observed when awaited below; this only keeps it from counting as unhandled
    inFlight.push(sent);
    if (inFlight.length >= IMPORT_BATCHES_IN_FLIGHT) await inFlight.shift();
    const now = opts.clock();
    if (opts.onProgress && now - lastProgress >= IMPORT_PROGRESS_INTERVAL_MS) {
      lastProgress = now;
      opts.onProgress({ lines: summary.lines, accounts, ms: now - started });
    }
  };

  const parse = (l: Line): ImportRecord | RejectedLine => {
    if (l.text === null)
      return reject(l.n, null, 'malformed', `line longer than ${IMPORT_MAX_LINE_BYTES} bytes`);
    return columns ? parseCsvRow(l.n, columns, l.text) : parseJsonLine(l.n, l.text);
  };

  try {
    if (format === 'jsonl') {
      const r = parse(first);
      if (isRejected(r)) addRejected(r);
      else batch.push(r);
    }
    for await (const l of lines) {
      summary.lines = l.n;
      if (l.text !== null && l.text.trim() === '') continue;
      const r = parse(l);
      if (isRejected(r)) addRejected(r);
      else {
        batch.push(r);
        if (batch.length >= IMPORT_BATCH_ACCOUNTS) await flush();
      }
    }
    await flush();
    while (inFlight.length) await inFlight.shift();
  } finally {
    // On failure, let the pipelines already sent finish before giving up, so that none of them
    // rejects unobserved; their accounts are complete either way.
    await Promise.allSettled(inFlight);
    await target.endImport(run).catch(() => {});
  }
  summary.rejectedLines.sort((a, b) => a.line - b.line);
  summary.ms = opts.clock() - started;
  return summary;
}
