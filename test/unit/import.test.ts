// account import without Redis: line splitting (chunk-split fuzzing), CSV and JSON line parsing,
// field checks, and the streaming loop against a fake store.
import { describe, expect, it } from 'vitest';
import {
  checkFields,
  detectFormat,
  IMPORT_BATCH_ACCOUNTS,
  IMPORT_MAX_REJECTED_KEPT,
  type ImportOutcome,
  type ImportRecord,
  type ImportTarget,
  importAccounts,
  type Line,
  parseCsvHeader,
  parseCsvRow,
  parseJsonLine,
  readLines,
  splitCsv,
} from '../../src/accounts/import.js';
import { UsageError } from '../../src/util/errors.js';

const PHC = '$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQxMjM0NTY$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGg';
const BCRYPT = '$2b$04$W030Ab3M9yum5jFaPWQ4lu/nU9IKF./BtPg21XqRm6KBx2hlbbDVq';

async function* chunks(parts: Array<string | Buffer>): AsyncGenerator<Buffer> {
  for (const p of parts) yield typeof p === 'string' ? Buffer.from(p) : p;
}

async function collect(parts: Array<string | Buffer>, max?: number): Promise<Line[]> {
  const out: Line[] = [];
  for await (const l of readLines(chunks(parts), max)) out.push(l);
  return out;
}

/** Splits `text` at random byte offsets (deterministic seed). */
function splitRandomly(buf: Buffer, seed: number): Buffer[] {
  let s = seed;
  const rand = () => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s;
  };
  const parts: Buffer[] = [];
  let i = 0;
  while (i < buf.length) {
    const n = 1 + (rand() % 7);
    parts.push(buf.subarray(i, i + n));
    i += n;
  }
  return parts;
}

describe('readLines', () => {
  it('numbers lines from 1, handles CRLF, a missing final newline and blank lines', async () => {
    expect(await collect(['a\r\nb\n\nc'])).toEqual([
      { n: 1, text: 'a' },
      { n: 2, text: 'b' },
      { n: 3, text: '' },
      { n: 4, text: 'c' },
    ]);
  });

  it('drops a UTF-8 byte order mark at the start only', async () => {
    expect(await collect(['\ufefflogin\n\ufeffx\n'])).toEqual([
      { n: 1, text: 'login' },
      { n: 2, text: '\ufeffx' },
    ]);
  });

  it('gives the same lines whatever the chunk boundaries, multi-byte characters included', async () => {
    const text = Buffer.from('ålice@example.jp,日本\r\n\nbob,"x,y"\nlast line without newline ✓');
    const whole = await collect([text]);
    for (let seed = 1; seed <= 200; seed++) {
      expect(await collect(splitRandomly(text, seed)), `seed ${seed}`).toEqual(whole);
    }
  });

  it('a line longer than the limit comes out as null, without being buffered, and the next lines go on', async () => {
    const long = 'x'.repeat(100);
    for (let seed = 1; seed <= 50; seed++) {
      const lines = await collect(splitRandomly(Buffer.from(`ok\n${long}\nnext\n${long}`), seed), 50);
      expect(lines).toEqual([
        { n: 1, text: 'ok' },
        { n: 2, text: null },
        { n: 3, text: 'next' },
        { n: 4, text: null },
      ]);
    }
  });

  it('a line exactly at the limit passes, with or without CR', async () => {
    const at = 'y'.repeat(50);
    expect(await collect([`${at}\r\n${at}\n`], 50)).toEqual([
      { n: 1, text: at },
      { n: 2, text: at },
    ]);
  });
});

describe('detectFormat', () => {
  it.each([
    ['a.jsonl', 'login,msisdn', 'jsonl'],
    ['A.NDJSON', '', 'jsonl'],
    ['a.csv', '{"login":"x"}', 'csv'],
    ['accounts.txt', '  {"login":"x"}', 'jsonl'],
    [null, 'login,msisdn', 'csv'],
    [null, '{', 'jsonl'],
  ] as const)('%s starting with %j is %s', (name, first, format) => {
    expect(detectFormat(name, first)).toBe(format);
  });
});

describe('splitCsv', () => {
  it.each([
    ['a,b,c', ['a', 'b', 'c']],
    [' a , b ,', ['a', 'b', '']],
    ['', ['']],
    ['"a,b",c', ['a,b', 'c']],
    ['"say ""hi""",x', ['say "hi"', 'x']],
    ['"",x', ['', 'x']],
    ['"q" ,x', ['q', 'x']],
    [`"${PHC}"`, [PHC]],
  ])('%j', (text, cells) => {
    expect(splitCsv(text)).toEqual(cells);
  });

  it.each(['"unclosed,x', 'a"b,c', '"closed"junk,x', '"a""'])('%j is malformed', (text) => {
    expect(splitCsv(text)).toBeNull();
  });
});

describe('parseCsvHeader', () => {
  it('accepts known columns in any order and case', () => {
    expect(parseCsvHeader(1, 'MSISDN, Login ,primaryhash')).toEqual(['msisdn', 'login', 'primaryHash']);
  });

  it.each([
    ['login,password', 'line 1: unknown column "password" in the CSV header'],
    ['msisdn,aliases', 'line 1: the CSV header has no "login" column'],
    ['login,msisdn,MSISDN', 'line 1: column "msisdn" appears twice in the CSV header'],
    ['"login,msisdn', 'line 1: the CSV header has an unclosed quote'],
  ])('%j is a usage error', (text, message) => {
    expect(() => parseCsvHeader(1, text)).toThrow(UsageError);
    expect(() => parseCsvHeader(1, text)).toThrow(message);
  });
});

describe('parseCsvRow', () => {
  const cols = parseCsvHeader(1, 'login,aliases,msisdn,primaryHash,upstreamUser,upstream');

  it('reads every field; aliases are ;-separated', () => {
    expect(
      parseCsvRow(2, cols, `Alice@Example.JP, alice ; a.smith;;,+819012345678,"${PHC}",alice,mail1:143`),
    ).toEqual({
      line: 2,
      login: 'alice@example.jp',
      aliases: ['alice', 'a.smith'],
      msisdn: '+819012345678',
      primaryHash: PHC,
      upstreamUser: 'alice',
      upstream: 'mail1:143',
    });
  });

  it('empty cells clear, except the primary hash, which is then not given', () => {
    expect(parseCsvRow(3, cols, 'bob@example.jp,,,,,')).toEqual({
      line: 3,
      login: 'bob@example.jp',
      aliases: [],
      msisdn: null,
      upstreamUser: null,
      upstream: null,
    });
  });

  it('columns the header does not have are not given', () => {
    expect(parseCsvRow(2, parseCsvHeader(1, 'login'), 'carol@example.jp')).toEqual({
      line: 2,
      login: 'carol@example.jp',
    });
  });

  it('a row with the wrong number of cells is malformed', () => {
    expect(parseCsvRow(4, cols, 'x@example.jp,a')).toMatchObject({
      line: 4,
      login: 'x@example.jp',
      reason: 'malformed',
    });
  });
});

describe('parseJsonLine', () => {
  it('reads the fields; null and [] clear; a missing key is not given', () => {
    expect(
      parseJsonLine(
        1,
        JSON.stringify({ login: 'a@example.jp', aliases: ['A', 'a', 'a@example.jp'], msisdn: null }),
      ),
    ).toEqual({ line: 1, login: 'a@example.jp', aliases: ['a'], msisdn: null });
    expect(parseJsonLine(2, '{"login":"b@example.jp","aliases":null,"upstream":""}')).toEqual({
      line: 2,
      login: 'b@example.jp',
      aliases: [],
      upstream: null,
    });
  });

  it('reads the SMS language and time zone; empty clears them', () => {
    expect(parseJsonLine(1, '{"login":"a","lang":"en","tz":"Europe/London"}')).toEqual({
      line: 1,
      login: 'a',
      lang: 'en',
      tz: 'Europe/London',
    });
    expect(parseCsvRow(2, parseCsvHeader(1, 'login,lang,tz'), 'b,,')).toEqual({
      line: 2,
      login: 'b',
      lang: null,
      tz: null,
    });
  });

  it('normalises an argon2 hash and keeps a bcrypt hash', () => {
    const reordered = PHC.replace('m=64,t=1,p=1', 'm=64,p=1,t=1');
    expect(parseJsonLine(1, JSON.stringify({ login: 'a', primaryHash: reordered }))).toMatchObject({
      primaryHash: PHC,
    });
    expect(parseJsonLine(1, JSON.stringify({ login: 'a', primaryHash: BCRYPT }))).toMatchObject({
      primaryHash: BCRYPT,
    });
  });

  it.each([
    ['{"login": ', 'malformed'],
    ['[1]', 'malformed'],
    ['"login"', 'malformed'],
    ['null', 'malformed'],
    ['{}', 'bad-login'],
    ['{"login": 7}', 'bad-login'],
    ['{"login": ""}', 'bad-login'],
    ['{"login": "a b"}', 'bad-login'],
    ['{"login": "a", "extra": 1}', 'unknown-field'],
    ['{"login": "a", "aliases": "b;c"}', 'bad-alias'],
    ['{"login": "a", "aliases": ["ok", "not ok"]}', 'bad-alias'],
    ['{"login": "a", "msisdn": 819012345678}', 'bad-msisdn'],
    ['{"login": "a", "msisdn": "+0123456789"}', 'bad-msisdn'],
    ['{"login": "a", "msisdn": "+81 90 1234 5678"}', 'bad-msisdn'],
    ['{"login": "a", "primaryHash": "hunter2"}', 'bad-hash'],
    [
      '{"login": "a", "primaryHash": "$2x$04$W030Ab3M9yum5jFaPWQ4lu/nU9IKF./BtPg21XqRm6KBx2hlbbDVq"}',
      'bad-hash',
    ],
    ['{"login": "a", "upstream": "mail1"}', 'bad-upstream'],
    ['{"login": "a", "upstreamUser": "a b"}', 'malformed'],
    ['{"login": "a", "lang": "fr"}', 'bad-lang'],
    ['{"login": "a", "tz": "Asia/Nowhere"}', 'bad-tz'],
  ])('%s is rejected: %s', (text, reason) => {
    expect(parseJsonLine(5, text)).toMatchObject({ line: 5, reason });
  });

  it('a rejected line never echoes the hash it was given', () => {
    const r = parseJsonLine(1, JSON.stringify({ login: 'a', primaryHash: `${PHC}$extra` }));
    expect(r).toMatchObject({ reason: 'bad-hash' });
    expect(JSON.stringify(r)).not.toContain('c2FsdHNhbHQxMjM0NTY');
  });
});

describe('checkFields', () => {
  it('lower-cases and NFC-normalises the login and aliases, and drops the login from its aliases', () => {
    expect(checkFields(1, { login: 'Ｅ\u0301', aliases: ['ALIAS', 'é', 'alias'] })).toMatchObject({
      login: 'ｅ\u0301'.normalize('NFC').toLowerCase(),
      aliases: ['alias', 'é'],
    });
  });
});

/** A store that records what it is sent and answers by a rule. */
function fakeTarget(answer: (r: ImportRecord) => ImportOutcome = () => ({ kind: 'created' })) {
  const batches: ImportRecord[][] = [];
  let active = 0;
  let maxActive = 0;
  const runs: string[] = [];
  const target: ImportTarget = {
    async beginImport() {
      runs.push('begin');
      return 'run-1';
    },
    async importBatch(run, records) {
      expect(run).toBe('run-1');
      batches.push([...records]);
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise((r) => setImmediate(r));
      active--;
      return records.map(answer);
    },
    async endImport() {
      runs.push('end');
    },
  };
  return { target, batches, runs, maxActive: () => maxActive };
}

const clock = () => 0;

describe('importAccounts', () => {
  it('sends every good line once, in file order, in bounded batches, and counts the outcomes', async () => {
    const n = IMPORT_BATCH_ACCOUNTS * 9 + 7;
    const lines = ['login,msisdn'];
    for (let i = 0; i < n; i++)
      lines.push(i % 100 === 5 ? `bad${i},0901` : `u${i},+8190${String(i).padStart(8, '0')}`);
    const fake = fakeTarget((r) =>
      r.login.endsWith('0')
        ? { kind: 'unchanged' }
        : r.login.endsWith('1')
          ? { kind: 'updated', fields: ['msisdn'] }
          : { kind: 'created' },
    );
    const s = await importAccounts(fake.target, chunks([`${lines.join('\n')}\n`]), { name: 'x.csv', clock });
    const sent = fake.batches.flat();
    const bad = Math.ceil((n - 5) / 100);
    expect(sent.length).toBe(n - bad);
    expect(sent.map((r) => r.line)).toEqual([...sent.map((r) => r.line)].sort((a, b) => a - b));
    expect(Math.max(...fake.batches.map((b) => b.length))).toBe(IMPORT_BATCH_ACCOUNTS);
    expect(fake.maxActive()).toBeLessThanOrEqual(4);
    expect(fake.runs).toEqual(['begin', 'end']);
    expect(s.rejected).toBe(bad);
    expect(s.rejectedLines[0]).toMatchObject({ line: 7, login: 'bad5', reason: 'bad-msisdn' });
    expect(s.created + s.updated + s.unchanged).toBe(n - bad);
    expect(s.changedFields).toEqual({ msisdn: s.updated });
    expect(s.lines).toBe(n + 1);
  });

  it('reports store rejections with the line they came from, in line order', async () => {
    const fake = fakeTarget((r) =>
      r.login === 'b'
        ? { kind: 'rejected', reason: 'alias-taken', message: 'alias "x" belongs to "c"' }
        : { kind: 'created' },
    );
    const s = await importAccounts(fake.target, chunks(['{"login":"a"}\n{oops\n{"login":"b"}\n']), {
      name: null,
      clock,
    });
    expect(s.format).toBe('jsonl');
    expect(s.rejectedLines.map((r) => [r.line, r.reason])).toEqual([
      [2, 'malformed'],
      [3, 'alias-taken'],
    ]);
  });

  it('keeps at most IMPORT_MAX_REJECTED_KEPT rejected lines and counts the rest', async () => {
    const extra = 3;
    async function* many(): AsyncGenerator<Buffer> {
      for (let i = 0; i < IMPORT_MAX_REJECTED_KEPT + extra; i++) yield Buffer.from('{"login": ""}\n');
    }
    const s = await importAccounts(fakeTarget().target, many(), { name: 'x.jsonl', clock });
    expect(s.rejected).toBe(IMPORT_MAX_REJECTED_KEPT + extra);
    expect(s.rejectedLines).toHaveLength(IMPORT_MAX_REJECTED_KEPT);
    expect(s.rejectedOmitted).toBe(extra);
  });

  it('an empty input or a bad CSV header is a usage error, and the store is not touched', async () => {
    for (const input of ['', '\n \n', 'login,nope\nx,y\n']) {
      const fake = fakeTarget();
      await expect(
        importAccounts(fake.target, chunks([input]), { name: 'x.csv', clock }),
      ).rejects.toBeInstanceOf(UsageError);
      expect(fake.runs).toEqual([]);
    }
  });

  it('a store failure midway ends the run, after the pipelines already sent have settled', async () => {
    let calls = 0;
    const settled: number[] = [];
    const runs: string[] = [];
    const target: ImportTarget = {
      beginImport: async () => 'run',
      async importBatch(_run, records) {
        const call = ++calls;
        await new Promise((r) => setTimeout(r, call === 2 ? 1 : 5));
        settled.push(call);
        if (call === 2) throw new Error('redis went away');
        return records.map(() => ({ kind: 'created' }) as const);
      },
      endImport: async () => {
        runs.push('end');
      },
    };
    const lines = Array.from({ length: IMPORT_BATCH_ACCOUNTS * 6 }, (_, i) => `{"login":"u${i}"}`).join('\n');
    await expect(importAccounts(target, chunks([lines]), { name: null, clock })).rejects.toThrow(
      'redis went away',
    );
    expect(settled.length).toBe(calls); // nothing left running
    expect(runs).toEqual(['end']);
  });

  it('reports progress by time', async () => {
    let now = 0;
    const seen: number[] = [];
    const lines = Array.from({ length: IMPORT_BATCH_ACCOUNTS * 3 }, (_, i) => `{"login":"u${i}"}`).join('\n');
    await importAccounts(fakeTarget().target, chunks([lines]), {
      name: null,
      clock: () => (now += 1_000),
      onProgress: (p) => seen.push(p.accounts),
    });
    expect(seen.length).toBeGreaterThan(0);
  });
});
