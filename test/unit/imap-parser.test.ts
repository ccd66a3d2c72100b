import { describe, expect, it } from 'vitest';
import {
  DEFAULT_MAX_LINE_BYTES,
  DEFAULT_MAX_LITERAL_BYTES,
  type ImapArg,
  ImapCommandReader,
  type ImapCommandReaderOptions,
  type ReaderEvent,
} from '../../src/imap/parser.js';

const bytes = (s: string): Buffer => Buffer.from(s, 'utf8');
const atom = (value: string): ImapArg => ({ type: 'atom', value });
const str = (value: string | Buffer): ImapArg => ({
  type: 'string',
  value: typeof value === 'string' ? bytes(value) : value,
});
const list = (...items: ImapArg[]): ImapArg => ({ type: 'list', items });
const nil: ImapArg = { type: 'nil' };
const command = (tag: string, verb: string, ...args: ImapArg[]): ReaderEvent => ({
  type: 'command',
  tag,
  verb,
  args,
});
const syntax = (tag: string | null, message?: RegExp) =>
  expect.objectContaining({
    type: 'error',
    kind: 'syntax',
    tag,
    fatal: false,
    ...(message ? { message: expect.stringMatching(message) } : {}),
  });

/** Feeds one chunk and resumes after every event, like a driver that answers at once. */
function readAll(input: string | Buffer, opts?: ImapCommandReaderOptions): ReaderEvent[] {
  const reader = new ImapCommandReader(opts);
  const events = reader.push(typeof input === 'string' ? bytes(input) : input);
  while (reader.paused) events.push(...reader.resume());
  return events;
}

describe('LOGIN arguments', () => {
  it('reads atoms and upper-cases the verb, not the tag or the arguments', () => {
    expect(readAll('A1 login alice s3cret\r\n')).toEqual([
      command('A1', 'LOGIN', atom('alice'), atom('s3cret')),
    ]);
  });

  it('accepts astring atoms with "]" and tags with "]"', () => {
    expect(readAll('a] LOGIN us]er pw]\r\n')).toEqual([command('a]', 'LOGIN', atom('us]er'), atom('pw]'))]);
  });

  it('reads quoted strings with spaces, escaped quotes and backslashes', () => {
    expect(readAll('a LOGIN "alice smith" "p\\"w\\\\d x"\r\n')).toEqual([
      command('a', 'LOGIN', str('alice smith'), str('p"w\\d x')),
    ]);
  });

  it('keeps UTF-8 passwords as bytes', () => {
    const [ev] = readAll('a LOGIN "jörg@example.com" "pässwörd€"\r\n');
    expect(ev).toEqual(command('a', 'LOGIN', str('jörg@example.com'), str('pässwörd€')));
  });

  it('reads an empty quoted string', () => {
    expect(readAll('a LOGIN "" ""\r\n')).toEqual([command('a', 'LOGIN', str(''), str(''))]);
  });

  it('reads NIL as nil in any case, but "NIL" quoted as a string', () => {
    expect(readAll('a X nil NIL "NIL" NILS\r\n')).toEqual([
      command('a', 'X', nil, nil, str('NIL'), atom('NILS')),
    ]);
  });

  it('rejects backslash escapes other than \\" and \\\\', () => {
    expect(readAll('a LOGIN alice "p\\nw"\r\n')).toEqual([syntax('a', /escape/)]);
  });

  it('rejects CR inside a quoted string, and a quoted string cut by the line end', () => {
    expect(readAll('a LOGIN alice "p\rw"\r\n')).toEqual([syntax('a', /CR/)]);
    expect(readAll('a LOGIN alice "pw\r\n')).toEqual([syntax('a', /Unterminated/)]);
  });

  it('accepts a bare LF as line end', () => {
    expect(readAll('a LOGIN alice pw\nb NOOP\r\n')).toEqual([
      command('a', 'LOGIN', atom('alice'), atom('pw')),
      command('b', 'NOOP'),
    ]);
  });
});

describe('literals', () => {
  it('asks for a synchronising literal exactly once, before the literal bytes', () => {
    const reader = new ImapCommandReader();
    expect(reader.push(bytes('a LOGIN {5}\r\n'))).toEqual([{ type: 'continuation-needed', bytes: 5 }]);
    expect(reader.push(bytes('ali'))).toEqual([]);
    expect(reader.push(bytes('ce {6}\r\n'))).toEqual([{ type: 'continuation-needed', bytes: 6 }]);
    expect(reader.push(bytes('pä\r\nw'))).toEqual([]);
    expect(reader.push(bytes('\r\n'))).toEqual([command('a', 'LOGIN', str('alice'), str('pä\r\nw'))]);
  });

  it('does not ask for non-synchronising literals', () => {
    expect(readAll('a LOGIN {5+}\r\nalice {2+}\r\npw\r\n')).toEqual([
      command('a', 'LOGIN', str('alice'), str('pw')),
    ]);
  });

  it('mixes a literal with a quoted string on the continued line', () => {
    expect(readAll('a LOGIN {5}\r\nalice "pw"\r\n')).toEqual([
      { type: 'continuation-needed', bytes: 5 },
      command('a', 'LOGIN', str('alice'), str('pw')),
    ]);
  });

  it('reads a zero-length literal (still asks for it when synchronising)', () => {
    expect(readAll('a LOGIN alice {0}\r\n\r\n')).toEqual([
      { type: 'continuation-needed', bytes: 0 },
      command('a', 'LOGIN', atom('alice'), str('')),
    ]);
  });

  it('never interprets literal contents, even when they look like commands or literals', () => {
    expect(readAll('a LOGIN {16+}\r\nb LOGOUT\r\n"{3}\r\n {5+}\r\n\r\n{1}\r\nc NOOP\r\n')).toEqual([
      command('a', 'LOGIN', str('b LOGOUT\r\n"{3}\r\n'), str('\r\n{1}')),
      command('c', 'NOOP'),
    ]);
  });

  it('treats {n} inside a quoted string as text, not as a literal', () => {
    expect(readAll('a LOGIN alice "x{3}"\r\n')).toEqual([command('a', 'LOGIN', atom('alice'), str('x{3}'))]);
  });

  it('requires the literal announcement to end the line', () => {
    expect(readAll('a LOGIN {3} x\r\nb NOOP\r\n')).toEqual([
      syntax('a', /end the line/),
      command('b', 'NOOP'),
    ]);
  });

  it('rejects literal8 and skips the bytes of a non-synchronising one', () => {
    expect(readAll('a LOGIN ~{3}\r\nb LOGIN ~{3+}\r\nc N\r\nd NOOP\r\n')).toEqual([
      syntax('a', /literal8/),
      syntax('b', /literal8/),
      command('d', 'NOOP'),
    ]);
  });

  it('rejects a NUL inside a literal, skipping the rest of the command', () => {
    expect(readAll('a LOGIN {3+}\r\na\0b {2+}\r\npw\r\nb NOOP\r\n')).toEqual([
      syntax('a', /NUL/),
      command('b', 'NOOP'),
    ]);
  });
});

describe('literal too large', () => {
  const opts = { maxLiteralBytes: 16 };

  it('refuses a synchronising literal with a non-fatal error and reads on (RFC 9051 §7.5)', () => {
    const reader = new ImapCommandReader(opts);
    expect(reader.push(bytes('a LOGIN {17}\r\n'))).toEqual([
      { type: 'error', tag: 'a', kind: 'literal-too-large', message: expect.any(String), fatal: false },
    ]);
    expect(reader.push(bytes('b LOGIN {16}\r\n'))).toEqual([{ type: 'continuation-needed', bytes: 16 }]);
  });

  it('closes on a non-synchronising literal over the limit: its bytes are already coming', () => {
    const reader = new ImapCommandReader(opts);
    expect(reader.push(bytes('a LOGIN {17+}\r\n'))).toEqual([
      { type: 'error', tag: 'a', kind: 'literal-too-large', message: expect.any(String), fatal: true },
    ]);
    expect(reader.push(bytes('b NOOP\r\n'))).toEqual([]);
    expect(reader.resume()).toEqual([]);
    expect(reader.bufferedBytes).toBe(0);
  });

  it('counts all literals of one command against the limit', () => {
    expect(readAll('a LOGIN {10+}\r\n0123456789 {7}\r\nb NOOP\r\n', opts)).toEqual([
      expect.objectContaining({ tag: 'a', kind: 'literal-too-large', fatal: false }),
      command('b', 'NOOP'),
    ]);
  });

  it('handles absurd sizes without overflow', () => {
    expect(readAll(`a LOGIN {${'9'.repeat(40)}}\r\nb NOOP\r\n`)).toEqual([
      expect.objectContaining({ tag: 'a', kind: 'literal-too-large', fatal: false }),
      command('b', 'NOOP'),
    ]);
  });

  it('defaults to 8 KiB', () => {
    expect(DEFAULT_MAX_LITERAL_BYTES).toBe(8192);
    const reader = new ImapCommandReader();
    expect(reader.push(bytes('a LOGIN {8192}\r\n'))).toEqual([{ type: 'continuation-needed', bytes: 8192 }]);
    expect(new ImapCommandReader().push(bytes('a LOGIN {8193}\r\n'))).toEqual([
      expect.objectContaining({ kind: 'literal-too-large', fatal: false }),
    ]);
  });
});

describe('AUTHENTICATE and line mode', () => {
  it('reads SASL-IR as an atom (RFC 4959), "=" included', () => {
    expect(readAll('a AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==\r\nb AUTHENTICATE PLAIN =\r\n')).toEqual([
      command('a', 'AUTHENTICATE', atom('PLAIN'), atom('AGFsaWNlAHMzY3JldA==')),
      command('b', 'AUTHENTICATE', atom('PLAIN'), atom('=')),
    ]);
  });

  it('delivers SASL responses raw in line mode, then tokenises again', () => {
    const reader = new ImapCommandReader();
    // The client answers the "+ " before it sees it: the response must still be a line.
    expect(reader.push(bytes('a AUTHENTICATE PLAIN\r\nAGFsaWNlAHB3\r\n'))).toEqual([
      command('a', 'AUTHENTICATE', atom('PLAIN')),
    ]);
    reader.setLineMode(true);
    expect(reader.resume()).toEqual([{ type: 'line', text: 'AGFsaWNlAHB3' }]);
    expect(reader.paused).toBe(true);
    reader.setLineMode(false);
    expect(reader.resume()).toEqual([]);
    expect(reader.push(bytes('b AUTHENTICATE LOGIN\r\n'))).toEqual([
      command('b', 'AUTHENTICATE', atom('LOGIN')),
    ]);
    reader.setLineMode(true);
    expect(reader.resume()).toEqual([]);
    expect(reader.push(bytes('YWxp'))).toEqual([]);
    expect(reader.push(bytes('Y2U=\r\n*\n\r\n'))).toEqual([{ type: 'line', text: 'YWxpY2U=' }]);
    expect(reader.resume()).toEqual([{ type: 'line', text: '*' }]);
    expect(reader.resume()).toEqual([{ type: 'line', text: '' }]);
  });

  it('does not tokenise in line mode ({n} and quotes are plain text)', () => {
    const reader = new ImapCommandReader();
    reader.setLineMode(true);
    expect(reader.push(bytes('x "y {5}\r\n'))).toEqual([{ type: 'line', text: 'x "y {5}' }]);
  });

  it('refuses to switch mode in the middle of a command', () => {
    const reader = new ImapCommandReader();
    reader.push(bytes('a LOGIN {5}\r\n'));
    expect(() => reader.setLineMode(true)).toThrow(/middle of a command/);
  });

  it('limits line-mode lines too', () => {
    const reader = new ImapCommandReader({ maxLineBytes: 32 });
    reader.setLineMode(true);
    expect(reader.push(bytes('x'.repeat(33)))).toEqual([
      expect.objectContaining({ kind: 'line-too-long', fatal: true }),
    ]);
  });
});

describe('ID', () => {
  it('reads a parameter list with NIL values', () => {
    expect(readAll('a ID ("name" "Thunderbird" "version" NIL)\r\n')).toEqual([
      command('a', 'ID', list(str('name'), str('Thunderbird'), str('version'), nil)),
    ]);
  });

  it('reads ID NIL, empty and nested lists, and literals inside lists', () => {
    expect(readAll('a ID NIL\r\nb X () (a (b ()) {2+}\r\nxy) c\r\n')).toEqual([
      command('a', 'ID', nil),
      command('b', 'X', list(), list(atom('a'), list(atom('b'), list()), str('xy')), atom('c')),
    ]);
  });

  it('rejects unbalanced lists', () => {
    expect(readAll('a ID ("name" "x"\r\n')).toEqual([syntax('a', /Unclosed/)]);
    expect(readAll('a ID "name")\r\n')).toEqual([syntax('a')]);
    expect(readAll('a ID ( "x")\r\n')).toEqual([syntax('a')]);
  });
});

describe('pipelining and the hold after each command', () => {
  it('holds after a command: later bytes are not acted on until resume()', () => {
    const reader = new ImapCommandReader();
    expect(reader.push(bytes('a CAPABILITY\r\nb NOOP\r\nc LOG'))).toEqual([command('a', 'CAPABILITY')]);
    expect(reader.paused).toBe(true);
    expect(reader.push(bytes('OUT\r\n'))).toEqual([]);
    expect(reader.resume()).toEqual([command('b', 'NOOP')]);
    expect(reader.resume()).toEqual([command('c', 'LOGOUT')]);
    expect(reader.resume()).toEqual([]);
    expect(reader.paused).toBe(false);
  });

  it('after LOGIN, returns the following bytes intact and uninterpreted', () => {
    const reader = new ImapCommandReader();
    const after = Buffer.concat([
      bytes('b SELECT {5}\r\n'),
      Buffer.from([0, 0xff, 0x0d]),
      bytes('\nc FETCH 1:* ALL\r\n'),
    ]);
    const events = reader.push(Buffer.concat([bytes('a LOGIN alice pw\r\n'), after.subarray(0, 10)]));
    expect(events).toEqual([command('a', 'LOGIN', atom('alice'), atom('pw'))]);
    expect(reader.push(after.subarray(10))).toEqual([]); // no continuation-needed for b's literal
    expect(reader.bufferedBytes).toBe(after.length);
    expect(reader.takeBuffered()).toEqual(after);
    expect(reader.bufferedBytes).toBe(0);
  });

  it('after STARTTLS, the injected plaintext can be discarded and reading starts afresh', () => {
    const reader = new ImapCommandReader();
    expect(reader.push(bytes('a STARTTLS\r\nb LOGIN mallory x\r\n'))).toEqual([command('a', 'STARTTLS')]);
    expect(reader.takeBuffered()).toEqual(bytes('b LOGIN mallory x\r\n'));
    expect(reader.resume()).toEqual([]);
    expect(reader.push(bytes('c CAPABILITY\r\n'))).toEqual([command('c', 'CAPABILITY')]);
  });

  it('takeBuffered includes a partly read command', () => {
    const reader = new ImapCommandReader();
    expect(reader.push(bytes('a LOGIN {5}\r\nal'))).toEqual([{ type: 'continuation-needed', bytes: 5 }]);
    expect(reader.takeBuffered()).toEqual(bytes('a LOGIN {5}\r\nal'));
    expect(reader.push(bytes('b NOOP\r\n'))).toEqual([command('b', 'NOOP')]);
  });

  it('closes when too much arrives while held', () => {
    const reader = new ImapCommandReader({ maxBufferedBytes: 1024 });
    expect(reader.push(bytes('a LOGIN alice pw\r\n'))).toHaveLength(1);
    expect(reader.push(Buffer.alloc(1024, 'x'))).toEqual([]);
    expect(reader.push(bytes('x'))).toEqual([
      { type: 'error', tag: null, kind: 'buffer-full', message: expect.any(String), fatal: true },
    ]);
    expect(reader.bufferedBytes).toBe(0);
    expect(reader.resume()).toEqual([]);
  });
});

describe('line too long', () => {
  it('is fatal as soon as the limit is passed, without waiting for a line end', () => {
    const reader = new ImapCommandReader();
    expect(DEFAULT_MAX_LINE_BYTES).toBe(8192);
    for (let i = 0; i < 8; i++) expect(reader.push(Buffer.alloc(1024, 'a'))).toEqual([]);
    expect(reader.push(bytes('\r'))).toEqual([]); // 8192 bytes + CR: a CRLF may still follow
    expect(reader.push(bytes('a'))).toEqual([
      { type: 'error', tag: null, kind: 'line-too-long', message: expect.any(String), fatal: true },
    ]);
    expect(reader.bufferedBytes).toBe(0);
    expect(reader.push(Buffer.alloc(1 << 20, 'a'))).toEqual([]);
    expect(reader.bufferedBytes).toBe(0);
  });

  it('accepts a line of exactly the limit', () => {
    const line = `a LOGIN alice ${'p'.repeat(8192 - 14)}`;
    expect(readAll(`${line}\r\n`)).toEqual([
      command('a', 'LOGIN', atom('alice'), atom('p'.repeat(8192 - 14))),
    ]);
    expect(readAll(`${line}p\r\n`)).toEqual([
      expect.objectContaining({ kind: 'line-too-long', fatal: true }),
    ]);
  });

  it('reports 1 MB without a line end at once and keeps nothing of it', () => {
    const reader = new ImapCommandReader();
    expect(reader.push(Buffer.alloc(1 << 20, 'a'))).toEqual([
      expect.objectContaining({ kind: 'line-too-long', fatal: true }),
    ]);
    expect(reader.bufferedBytes).toBe(0);
  });

  it('reports 1 MB fed in 1 KiB chunks on the chunk that passes the limit', () => {
    const reader = new ImapCommandReader();
    const chunk = Buffer.alloc(1024, 'a');
    let errorAt = -1;
    for (let i = 0; i < 1024; i++) {
      const events = reader.push(chunk);
      if (events.length > 0) {
        expect(errorAt).toBe(-1);
        expect(events).toEqual([expect.objectContaining({ kind: 'line-too-long', fatal: true })]);
        errorAt = i;
      }
      expect(reader.bufferedBytes).toBeLessThanOrEqual(DEFAULT_MAX_LINE_BYTES + 2);
    }
    expect(errorAt).toBe(8); // 9 KiB > 8 KiB
  });

  it('counts every line of a command with literals against one budget, keeping the tag', () => {
    const events = readAll(`a LOGIN {1+}\r\nx ${'y'.repeat(30)}\r\n`, { maxLineBytes: 32 });
    expect(events).toEqual([expect.objectContaining({ tag: 'a', kind: 'line-too-long', fatal: true })]);
  });
});

describe('syntax errors', () => {
  it('reports an empty line without a tag and reads on', () => {
    expect(readAll('\r\n\na NOOP\r\n')).toEqual([
      syntax(null, /Empty/),
      syntax(null, /Empty/),
      command('a', 'NOOP'),
    ]);
  });

  it('reports errors without a tag when none can be read', () => {
    expect(readAll('* NOOP\r\n+ NOOP\r\n"a" NOOP\r\n a NOOP\r\n')).toEqual([
      syntax(null, /tag/),
      syntax(null, /tag/),
      syntax(null, /tag/),
      syntax(null, /tag/),
    ]);
  });

  it('reports errors with the tag once it is read', () => {
    expect(readAll('a\r\nb \r\nc NOOP \r\nd LOGIN  x\r\ne LOGIN x%\\y\r\n')).toEqual([
      syntax('a', /command name/),
      syntax('b', /command name/),
      syntax('c', /Missing argument/),
      syntax('d', /0x20/),
      syntax('e'),
    ]);
  });

  it('rejects NUL bytes in a command line', () => {
    expect(readAll('a NO\0OP\r\nb LOGIN al\0ice pw\r\nc LOGIN "a\0" pw\r\nd NOOP\r\n')).toEqual([
      syntax('a', /NUL/),
      syntax('b', /NUL/),
      syntax('c', /NUL/),
      command('d', 'NOOP'),
    ]);
  });

  it('rejects 8-bit bytes outside quoted strings and literals', () => {
    expect(readAll('a LOGIN jörg pw\r\n')).toEqual([syntax('a')]);
  });

  it('skips the non-synchronising literal of a malformed command instead of reading it as commands', () => {
    expect(readAll('a LOGIN "x\\q" {12+}\r\nb LOGOUT\r\n\r\n z\r\nc NOOP\r\n')).toEqual([
      syntax('a', /escape/),
      command('c', 'NOOP'),
    ]);
  });

  it('ends a malformed command at a synchronising literal: no "+" is sent, so no bytes follow', () => {
    expect(readAll('a LOGIN "x\\q" {5}\r\nb NOOP\r\n')).toEqual([
      syntax('a', /escape/),
      command('b', 'NOOP'),
    ]);
  });

  it('messages are printable ASCII, fit for a BAD reply', () => {
    const events = readAll('a LOGIN \x01\xff\r\nb LOGIN "x\r\n');
    for (const ev of events) {
      if (ev.type !== 'error') throw new Error('expected errors only');
      expect(ev.message).toMatch(/^[\x20-\x7e]+$/);
    }
  });
});

// --- chunk-split fuzzing -------------------------------------------------------------------

/**
 * A scripted driver: resumes after every event except LOGIN and STARTTLS (where a real driver
 * authenticates or starts TLS), switches to line mode for AUTHENTICATE without an initial
 * response and back after one line. Returns the events and what was left unread.
 */
function drive(chunks: Buffer[], opts?: ImapCommandReaderOptions): { events: ReaderEvent[]; rest: Buffer } {
  const reader = new ImapCommandReader(opts);
  const events: ReaderEvent[] = [];
  let stopped = false;
  const handle = (batch: ReaderEvent[]): void => {
    for (const ev of batch) {
      events.push(ev);
      if (ev.type === 'command') {
        if (ev.verb === 'LOGIN' || ev.verb === 'STARTTLS') stopped = true;
        if (ev.verb === 'AUTHENTICATE' && ev.args.length === 1) reader.setLineMode(true);
      } else if (ev.type === 'line') {
        reader.setLineMode(false);
      }
    }
  };
  for (const chunk of chunks) {
    handle(reader.push(chunk));
    while (reader.paused && !stopped) handle(reader.resume());
  }
  return { events, rest: reader.takeBuffered() };
}

/** mulberry32: a small seeded PRNG, so a failure reproduces. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const streams: { name: string; data: Buffer; opts?: ImapCommandReaderOptions }[] = [
  {
    name: 'pre-auth chatter then LOGIN with literals, then pipelined bytes',
    data: bytes(
      'a CAPABILITY\r\nb ID ("name" "x" "version" NIL ("n" ()))\r\nb2 ID NIL\r\nc NOOP\n' +
        'd LOGIN {5}\r\nalice {6+}\r\npä\r\nw "q\\"\\\\"\r\ne SELECT INBOX\r\nf {3}\r\n',
    ),
  },
  {
    name: 'SASL in line mode',
    data: bytes(
      'a AUTHENTICATE PLAIN\r\nAGFsaWNlAHB3\r\nb AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n' +
        'c AUTHENTICATE LOGIN\n*\nd NOOP\r\ne AUTHENTICATE PLAIN\r\n\r\n',
    ),
  },
  {
    name: 'errors that the reader recovers from',
    data: Buffer.concat([
      bytes('\r\n* BAD\r\nx LOGIN "a\\q" {3+}\r\nabc\r\ny NOOP\r\nz LOGIN {99999}\r\nw NO'),
      Buffer.from([0]),
      bytes('OP\r\nv LOGIN {2+}\r\na'),
      Buffer.from([0]),
      bytes(' {1+}\r\n\n\r\nu LOGIN ~{1+}\r\n}\r\nt ID (\r\ns LOGIN "\xff\r\nr LOGOUT\r\n'),
    ]),
  },
  {
    name: 'literal contents that look like protocol',
    data: bytes('a X {13+}\r\nb LOGOUT\r\n{1} {3}\r\n{\r\n\r\nc STARTTLS\r\nd LOGIN x y\r\n'),
  },
  {
    name: 'line too long after a valid command',
    data: bytes(`a NOOP\r\nb LOGIN ${'x'.repeat(100)}\r\nc NOOP\r\n`),
    opts: { maxLineBytes: 40 },
  },
  {
    name: 'line of exactly the limit, with CRLF split around it',
    data: bytes(`a X ${'x'.repeat(36)}\r\nb NOOP\r\n${'y'.repeat(40)}\r\n`),
    opts: { maxLineBytes: 40 },
  },
  {
    name: 'non-synchronising literal over the limit',
    data: bytes('a LOGIN {4}\r\nabcd {20+}\r\n0123456789012345678\r\nb NOOP\r\n'),
    opts: { maxLiteralBytes: 16 },
  },
];

describe('chunk-split fuzzing: events do not depend on how the bytes arrive', () => {
  for (const { name, data, opts } of streams) {
    const expected = drive([data], opts);

    it(`${name}: split in two at every byte`, () => {
      expect(expected.events.length).toBeGreaterThan(1);
      for (let at = 0; at <= data.length; at++) {
        expect(drive([data.subarray(0, at), data.subarray(at)], opts), `split at ${at}`).toEqual(expected);
      }
    });

    it(`${name}: one byte at a time`, () => {
      const chunks = Array.from({ length: data.length }, (_, i) => data.subarray(i, i + 1));
      expect(drive(chunks, opts)).toEqual(expected);
    });

    it(`${name}: random chunk sizes`, () => {
      const random = prng(0x1ba9 + data.length);
      for (let iteration = 0; iteration < 300; iteration++) {
        const chunks: Buffer[] = [];
        for (let at = 0; at < data.length; ) {
          const size = Math.floor(random() * 24);
          chunks.push(data.subarray(at, at + size));
          at += size;
        }
        expect(drive(chunks, opts), `iteration ${iteration}`).toEqual(expected);
      }
    });
  }

  it('the scripted streams produce the events a driver relies on', () => {
    const [first, sasl, errors, lookalike] = streams.map((s) => drive([s.data], s.opts));
    expect(first?.events.at(-1)).toEqual(command('d', 'LOGIN', str('alice'), str('pä\r\nw'), str('q"\\')));
    expect(first?.events.filter((e) => e.type === 'continuation-needed')).toEqual([
      { type: 'continuation-needed', bytes: 5 },
    ]);
    expect(first?.rest).toEqual(bytes('e SELECT INBOX\r\nf {3}\r\n'));
    expect(sasl?.events).toEqual([
      command('a', 'AUTHENTICATE', atom('PLAIN')),
      { type: 'line', text: 'AGFsaWNlAHB3' },
      command('b', 'AUTHENTICATE', atom('PLAIN'), atom('AGFsaWNlAHB3')),
      command('c', 'AUTHENTICATE', atom('LOGIN')),
      { type: 'line', text: '*' },
      command('d', 'NOOP'),
      command('e', 'AUTHENTICATE', atom('PLAIN')),
      { type: 'line', text: '' },
    ]);
    expect(
      errors?.events.map((e) =>
        e.type === 'error' ? `${e.tag} ${e.kind}` : e.type === 'command' ? `${e.tag} command` : e.type,
      ),
    ).toEqual([
      'null syntax',
      'null syntax',
      'x syntax',
      'y command',
      'z literal-too-large',
      'w syntax',
      'v syntax',
      'u syntax',
      't syntax',
      's syntax',
      'r command',
    ]);
    expect(lookalike?.events).toEqual([
      { type: 'continuation-needed', bytes: 3 },
      command('a', 'X', str('b LOGOUT\r\n{1}'), str('{\r\n')),
      command('c', 'STARTTLS'),
    ]);
    expect(lookalike?.rest).toEqual(bytes('d LOGIN x y\r\n'));
  });
});
