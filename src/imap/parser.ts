/**
 * Incremental, sans-I/O reader for IMAP client commands in the not-authenticated state
 * (RFC 9051 §2.2, §4.3, §7.5, §9; RFC 7888 for `{n+}`). It frames bytes into command lines and
 * literals and tokenises the arguments; what a command means is the session's business.
 *
 * Framing and tokenising are one pass: each line segment (the bytes up to a LF, or up to a
 * literal announcement that ends the segment) is tokenised as soon as it is complete, so a
 * `{5}` inside a quoted string is never mistaken for a literal. Only complete segments are
 * tokenised, so the events do not depend on how the bytes were split into chunks.
 *
 * The reader holds itself after every `command` and `line` event: nothing after that event is
 * interpreted until the driver calls `resume()`. So bytes pipelined after STARTTLS (RFC 9051
 * §6.2.1) are never acted on as if they had come over TLS (the CVE-2011-0411 class of
 * injection), a SASL response is read in line mode even if the client sent it early, and LOGIN
 * can wait for the authenticator and hand the rest of the stream upstream untouched via
 * `takeBuffered()`.
 *
 * Every buffer is bounded: a command line by `maxLineBytes`, the literals of one command by
 * `maxLiteralBytes`, input received while held by `maxBufferedBytes`.
 */

import { assertNever } from '../util/errors.js';

/** One command line, excluding literal payloads and line terminators, summed over its segments. */
export const DEFAULT_MAX_LINE_BYTES = 8192;
/**
 * Literal payload of one command, summed over its literals. Pre-auth literals only carry
 * credentials (and ID values), so one budget per command bounds memory without hurting anyone.
 */
export const DEFAULT_MAX_LITERAL_BYTES = 8192;
/**
 * Input that may pile up while the reader is held (LOGIN being verified, SASL step pending).
 * Pipelining before login (RFC 9051 §5.5) amounts to a few short commands, far below this.
 */
export const DEFAULT_MAX_BUFFERED_BYTES = 65_536;
/** An idle reader drops a buffer grown beyond this, so one burst does not pin memory. */
const RETAINED_BUFFER_BYTES = 65_536;
/** Digits of a literal size beyond which it is certainly too large (number64 has at most 19). */
const MAX_LITERAL_SIZE_DIGITS = 15;

export type ImapArg =
  | { type: 'atom'; value: string }
  /** A quoted string or a literal; bytes, because a password may be any UTF-8 (RFC 9051 §4.3). */
  | { type: 'string'; value: Buffer }
  | { type: 'list'; items: ImapArg[] }
  | { type: 'nil' };

export type ReaderErrorKind = 'syntax' | 'line-too-long' | 'literal-too-large' | 'buffer-full';

export type ReaderEvent =
  /** A complete command. The reader is now held: call `resume()` for the next event. */
  | { type: 'command'; tag: string; verb: string; args: ImapArg[] }
  /**
   * A synchronising literal `{n}` was announced and is acceptable: send
   * "+ Ready for literal data" (RFC 9051 §7.5) so the client sends the bytes.
   */
  | { type: 'continuation-needed'; bytes: number }
  /**
   * A line received in line mode (SASL response or `*`), terminator removed, one char per byte
   * (latin1), so nothing is lost; responses are base64 (RFC 9051 §6.2.2). The reader is now held.
   */
  | { type: 'line'; text: string }
  /**
   * Non-fatal: reply `tag BAD` (or `* BAD` when `tag` is null) and carry on; the reader has
   * already skipped the rest of the command. Fatal: the stream cannot be resynchronised, say BYE
   * and close; the reader ignores all further input. `message` is fit to send to the client.
   */
  | { type: 'error'; tag: string | null; kind: ReaderErrorKind; message: string; fatal: boolean };

export interface ImapCommandReaderOptions {
  maxLineBytes?: number;
  maxLiteralBytes?: number;
  maxBufferedBytes?: number;
}

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;
const NUL = 0x00;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const LPAREN = 0x28;
const RPAREN = 0x29;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const RBRACKET = 0x5d;
const PERCENT = 0x25;
const ASTERISK = 0x2a;
const PLUS = 0x2b;
const TILDE = 0x7e;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

/** RFC 9051 §9: ATOM-CHAR is any CHAR except atom-specials (CTL, SP, `(){%*"\]`). */
function isAtomChar(c: number): boolean {
  return (
    c > SP &&
    c < 0x7f &&
    c !== LPAREN &&
    c !== RPAREN &&
    c !== LBRACE &&
    c !== PERCENT &&
    c !== ASTERISK &&
    c !== DQUOTE &&
    c !== BACKSLASH &&
    c !== RBRACKET
  );
}

/** RFC 9051 §9: tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR = ATOM-CHAR / "]". */
function isTagChar(c: number): boolean {
  return (isAtomChar(c) || c === RBRACKET) && c !== PLUS;
}

/**
 * Argument atoms: ASTRING-CHAR, plus the list-wildcards `%` and `*` (list-mailbox, sequence
 * sets), so that e.g. `a FETCH 1:* FLAGS` sent before login tokenises and earns "not valid in
 * this state" from the session rather than a confusing syntax error.
 */
function isArgAtomChar(c: number): boolean {
  return isAtomChar(c) || c === RBRACKET || c === PERCENT || c === ASTERISK;
}

function describeByte(c: number): string {
  if (c === NUL) return 'NUL byte in command';
  if (c === CR) return 'Bare CR in command';
  return `Unexpected byte 0x${c.toString(16).padStart(2, '0')}`;
}

/** The command being read; its segments and literals so far. */
interface PartialCommand {
  /** At least one segment of this command has been consumed. */
  started: boolean;
  tag: string | null;
  verb: string | null;
  /** stack[0] holds the arguments; each deeper entry is a list opened by `(` and not yet closed. */
  stack: ImapArg[][];
  /** An argument just ended: the next byte must be SP, `)` or the end of the line. */
  afterArg: boolean;
  /** Bytes of the line segments so far, terminators excluded (limited by maxLineBytes). */
  lineBytes: number;
  /** Literal payload bytes announced so far (limited by maxLiteralBytes). */
  literalBytes: number;
  /** An error was reported: the rest of the command is only framed, so it can be skipped. */
  failed: boolean;
}

function newCommand(): PartialCommand {
  return {
    started: false,
    tag: null,
    verb: null,
    stack: [[]],
    afterArg: false,
    lineBytes: 0,
    literalBytes: 0,
    failed: false,
  };
}

type SegmentResult =
  | { kind: 'end'; tag: string; verb: string; args: ImapArg[] }
  | { kind: 'literal'; bytes: number; sync: boolean }
  | { kind: 'error'; message: string };

function fail(message: string): SegmentResult {
  return { kind: 'error', message };
}

function ascii(line: Buffer, from: number, to: number): string {
  return line.toString('latin1', from, to);
}

/**
 * Tokenises one line segment into `cmd`. The segment ends at a line terminator or right after a
 * literal announcement; `cmd` carries the open lists across segments.
 */
function tokenise(line: Buffer, cmd: PartialCommand): SegmentResult {
  let i = 0;
  if (cmd.tag === null) {
    if (line.length === 0) return fail('Empty command line');
    while (i < line.length && isTagChar(line[i]!)) i++;
    if (i === 0 || (i < line.length && line[i] !== SP)) return fail('Invalid tag');
    cmd.tag = ascii(line, 0, i);
    if (i === line.length) return fail('Missing command name');
    i++;
    const verbStart = i;
    while (i < line.length && isAtomChar(line[i]!)) i++;
    if (i === verbStart) return fail('Missing command name');
    cmd.verb = ascii(line, verbStart, i).toUpperCase();
    cmd.afterArg = true;
  }
  const { tag, verb, stack } = cmd;
  if (tag === null || verb === null) throw new Error('tokenise: command head missing');
  for (;;) {
    const top = stack[stack.length - 1]!;
    if (cmd.afterArg) {
      if (i === line.length) {
        if (stack.length > 1) return fail('Unclosed list');
        return { kind: 'end', tag, verb, args: top };
      }
      const c = line[i]!;
      if (c === SP) {
        cmd.afterArg = false;
        i++;
      } else if (c === RPAREN && stack.length > 1) {
        closeList(stack);
        i++;
      } else {
        return fail(c === NUL || c === CR ? describeByte(c) : 'Expected space between arguments');
      }
      continue;
    }
    if (i === line.length) return fail('Missing argument');
    const c = line[i]!;
    if (c === LPAREN) {
      stack.push([]);
      i++;
    } else if (c === RPAREN && stack.length > 1 && top.length === 0) {
      // `()`: expecting an argument with an empty innermost list can only follow its `(`.
      closeList(stack);
      cmd.afterArg = true;
      i++;
    } else if (c === DQUOTE) {
      const q = readQuoted(line, i);
      if ('error' in q) return fail(q.error);
      top.push({ type: 'string', value: q.value });
      cmd.afterArg = true;
      i = q.next;
    } else if (c === LBRACE) {
      return readLiteralHeader(line, i);
    } else if (c === TILDE && line[i + 1] === LBRACE) {
      // RFC 9051 literal8 (`~{n}`) belongs to BINARY/APPEND, never to pre-auth commands.
      return fail('literal8 is not accepted here');
    } else if (isArgAtomChar(c)) {
      const from = i;
      while (i < line.length && isArgAtomChar(line[i]!)) i++;
      const value = ascii(line, from, i);
      top.push(value.toUpperCase() === 'NIL' ? { type: 'nil' } : { type: 'atom', value });
      cmd.afterArg = true;
    } else {
      return fail(describeByte(c));
    }
  }
}

function closeList(stack: ImapArg[][]): void {
  const items = stack.pop()!;
  stack[stack.length - 1]!.push({ type: 'list', items });
}

/**
 * RFC 9051 §4.3: quoted = DQUOTE *QUOTED-CHAR DQUOTE; the only escapes are `\"` and `\\`.
 * 8-bit bytes are kept as they are (UTF-8 under IMAP4rev2); CR, LF and NUL are never allowed.
 */
function readQuoted(line: Buffer, at: number): { next: number; value: Buffer } | { error: string } {
  const out = Buffer.alloc(line.length - at);
  let n = 0;
  let i = at + 1;
  while (i < line.length) {
    const c = line[i]!;
    if (c === DQUOTE) return { next: i + 1, value: Buffer.from(out.subarray(0, n)) };
    if (c === BACKSLASH) {
      const escaped = line[i + 1];
      if (escaped !== DQUOTE && escaped !== BACKSLASH) return { error: 'Invalid escape in quoted string' };
      out[n++] = escaped;
      i += 2;
    } else if (c === NUL || c === CR) {
      return { error: `${describeByte(c)} (in quoted string)` };
    } else {
      out[n++] = c;
      i++;
    }
  }
  return { error: 'Unterminated quoted string' };
}

/** RFC 9051 §9 literal = "{" number64 ["+"] "}" CRLF; the announcement must end the line. */
function readLiteralHeader(line: Buffer, at: number): SegmentResult {
  let i = at + 1;
  while (i < line.length && line[i]! >= DIGIT_0 && line[i]! <= DIGIT_9) i++;
  const digits = i - at - 1;
  const sync = line[i] !== PLUS;
  if (!sync) i++;
  if (digits === 0 || line[i] !== RBRACE) return fail('Invalid literal announcement');
  if (i + 1 !== line.length) return fail('Literal announcement must end the line');
  return { kind: 'literal', bytes: literalSize(line, at + 1, digits), sync };
}

function literalSize(line: Buffer, from: number, digits: number): number {
  return digits > MAX_LITERAL_SIZE_DIGITS
    ? Number.POSITIVE_INFINITY
    : Number(ascii(line, from, from + digits));
}

/**
 * After a syntax error the tokens cannot be trusted, but the client still frames by them: a
 * segment ending in `{n+}` is followed by n bytes that must be skipped, never read as commands
 * (or a literal could smuggle in commands); after `{n}` the client waits for a `+` that never
 * comes. So the end of a failed segment is matched byte-wise.
 */
function trailingLiteral(line: Buffer): { bytes: number; sync: boolean } | null {
  let i = line.length - 1;
  if (line[i] !== RBRACE) return null;
  i--;
  const sync = line[i] !== PLUS;
  if (!sync) i--;
  const lastDigit = i;
  while (i >= 0 && line[i]! >= DIGIT_0 && line[i]! <= DIGIT_9) i--;
  const digits = lastDigit - i;
  if (digits === 0 || line[i] !== LBRACE) return null;
  return { bytes: literalSize(line, i + 1, digits), sync };
}

type Phase = { kind: 'line' } | { kind: 'literal'; bytes: number; keep: boolean };
const LINE_PHASE: Phase = { kind: 'line' };
const EMPTY = Buffer.alloc(0);
const TOO_LONG = Symbol('too-long');

export class ImapCommandReader {
  private readonly maxLineBytes: number;
  private readonly maxLiteralBytes: number;
  private readonly maxBufferedBytes: number;

  // buf[start, end) is input not yet delivered in an event: the command being read, then
  // anything after it. pos is the next byte to interpret; buf[pos, scan) holds no LF.
  private buf: Buffer = EMPTY;
  private start = 0;
  private pos = 0;
  private scan = 0;
  private end = 0;

  private phase: Phase = LINE_PHASE;
  private cmd: PartialCommand = newCommand();
  private lineMode = false;
  private held = false;
  private dead = false;

  constructor(opts: ImapCommandReaderOptions = {}) {
    this.maxLineBytes = positive('maxLineBytes', opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    this.maxLiteralBytes = positive('maxLiteralBytes', opts.maxLiteralBytes ?? DEFAULT_MAX_LITERAL_BYTES);
    this.maxBufferedBytes = positive('maxBufferedBytes', opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES);
  }

  /** True after a `command` or `line` event until `resume()`: input is only buffered. */
  get paused(): boolean {
    return this.held;
  }

  /** Bytes received and not yet delivered in an event. */
  get bufferedBytes(): number {
    return this.end - this.start;
  }

  /**
   * Feeds bytes. Returns the events they complete, in order, up to and including the first
   * `command` or `line` event, after which the reader is held (see `resume`). While held, or
   * after a fatal error, it returns no events (except a fatal `buffer-full`).
   */
  push(chunk: Buffer): ReaderEvent[] {
    if (this.dead) return [];
    this.append(chunk);
    const events = this.held ? [] : this.drain();
    if (this.held && this.end - this.start > this.maxBufferedBytes) {
      this.fatal(events, 'buffer-full', 'Too much input before the previous command was answered');
    }
    return events;
  }

  /**
   * Releases the hold and interprets buffered input, returning its events just as `push` does
   * (so it may hold again). Returns [] if nothing buffered completes an event.
   */
  resume(): ReaderEvent[] {
    if (this.dead) return [];
    this.held = false;
    return this.drain();
  }

  /**
   * In line mode each line is delivered raw as a `line` event (RFC 9051 §6.2.2 SASL
   * responses, `*` to cancel), without tokenising. Switch it while the reader is held, i.e.
   * right after the AUTHENTICATE command or SASL line that calls for it.
   */
  setLineMode(on: boolean): void {
    if (this.cmd.started || this.phase.kind !== 'line') {
      throw new Error('ImapCommandReader.setLineMode called in the middle of a command');
    }
    this.lineMode = on;
  }

  /**
   * Removes and returns every byte not yet delivered in an event, and starts afresh with an
   * empty buffer (the hold is unchanged). After a successful login the driver sends them
   * upstream; after STARTTLS it discards them (RFC 9051 §6.2.1).
   */
  takeBuffered(): Buffer {
    const rest = Buffer.from(this.buf.subarray(this.start, this.end));
    this.buf = EMPTY;
    this.start = this.pos = this.scan = this.end = 0;
    this.cmd = newCommand();
    this.phase = LINE_PHASE;
    return rest;
  }

  private append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.end + chunk.length > this.buf.length) {
      const live = this.end - this.start;
      const needed = live + chunk.length;
      const target = needed * 2 <= this.buf.length ? this.buf : Buffer.alloc(Math.max(needed * 2, 4096));
      this.buf.copy(target, 0, this.start, this.end);
      this.buf = target;
      this.pos -= this.start;
      this.scan -= this.start;
      this.start = 0;
      this.end = live;
    }
    chunk.copy(this.buf, this.end);
    this.end += chunk.length;
  }

  private drain(): ReaderEvent[] {
    const events: ReaderEvent[] = [];
    while (!this.held && !this.dead) {
      if (this.phase.kind === 'literal') {
        const { bytes, keep } = this.phase;
        if (this.end - this.pos < bytes) break;
        const data = this.buf.subarray(this.pos, this.pos + bytes);
        this.pos += bytes;
        this.scan = this.pos;
        this.phase = LINE_PHASE;
        if (keep) this.onLiteral(data, events);
        continue;
      }
      const segment = this.nextSegment();
      if (segment === null) break;
      if (segment === TOO_LONG) {
        this.fatal(events, 'line-too-long', 'Command line too long');
        break;
      }
      if (this.lineMode) {
        events.push({ type: 'line', text: segment.toString('latin1') });
        this.endCommand();
        this.held = true;
      } else {
        this.onSegment(segment, events);
      }
    }
    if (this.start === this.end && !this.dead) {
      this.start = this.pos = this.scan = this.end = 0;
      if (this.buf.length > RETAINED_BUFFER_BYTES) this.buf = EMPTY;
    }
    return events;
  }

  /**
   * The next line segment without its terminator (CRLF, or a bare LF as Dovecot accepts), null
   * if it is incomplete, or TOO_LONG as soon as it cannot fit the line budget: the search never
   * looks further than the budget, so an endless line costs no memory beyond it.
   */
  private nextSegment(): Buffer | null | typeof TOO_LONG {
    const allowed = this.maxLineBytes - (this.lineMode ? 0 : this.cmd.lineBytes);
    // Content of `allowed` bytes plus CRLF: a LF any further away is too far.
    const windowEnd = Math.min(this.end, this.pos + allowed + 2);
    const found = this.buf.subarray(this.scan, windowEnd).indexOf(LF);
    if (found === -1) {
      this.scan = windowEnd;
      let content = windowEnd - this.pos;
      if (content > 0 && this.buf[windowEnd - 1] === CR) content--; // may yet be a CRLF
      return content > allowed ? TOO_LONG : null;
    }
    const lf = this.scan + found;
    const contentEnd = lf > this.pos && this.buf[lf - 1] === CR ? lf - 1 : lf;
    if (contentEnd - this.pos > allowed) return TOO_LONG;
    const segment = this.buf.subarray(this.pos, contentEnd);
    this.pos = lf + 1;
    this.scan = this.pos;
    return segment;
  }

  private onSegment(segment: Buffer, events: ReaderEvent[]): void {
    const cmd = this.cmd;
    cmd.started = true;
    cmd.lineBytes += segment.length;
    if (!cmd.failed) {
      const result = tokenise(segment, cmd);
      switch (result.kind) {
        case 'end':
          events.push({ type: 'command', tag: result.tag, verb: result.verb, args: result.args });
          this.endCommand();
          this.held = true;
          return;
        case 'literal':
          this.announceLiteral(result.bytes, result.sync, true, events);
          return;
        case 'error':
          this.syntaxError(result.message, events);
          break;
        default:
          assertNever(result, 'segment result');
      }
    }
    const literal = trailingLiteral(segment);
    // Without a literal the command ends here; after `{n}` the client waits for a `+` we never send.
    if (literal === null || literal.sync) this.endCommand();
    else this.announceLiteral(literal.bytes, false, false, events);
  }

  private announceLiteral(bytes: number, sync: boolean, keep: boolean, events: ReaderEvent[]): void {
    const cmd = this.cmd;
    if (cmd.literalBytes + bytes > this.maxLiteralBytes) {
      if (sync) {
        // RFC 9051 §7.5: the server may refuse a synchronising literal with a tagged BAD instead
        // of "+"; the client then sends nothing more of this command.
        events.push({
          type: 'error',
          tag: cmd.tag,
          kind: 'literal-too-large',
          message: 'Literal too large',
          fatal: false,
        });
        this.endCommand();
      } else {
        // The client sends a non-synchronising literal without waiting (RFC 7888). Skipping it
        // would mean reading an unbounded, attacker-chosen number of bytes before login; no
        // pre-auth command needs that much, so the connection is closed instead.
        this.fatal(events, 'literal-too-large', 'Literal too large');
      }
      return;
    }
    cmd.literalBytes += bytes;
    if (sync && keep) events.push({ type: 'continuation-needed', bytes });
    this.phase = { kind: 'literal', bytes, keep };
  }

  private onLiteral(data: Buffer, events: ReaderEvent[]): void {
    const cmd = this.cmd;
    if (cmd.failed) return;
    // RFC 9051 §9: a literal is CHAR8 (no NUL). A NUL in a login name or password could also
    // forge fields of the SASL PLAIN message built from them upstream.
    if (data.includes(NUL)) {
      this.syntaxError('NUL byte in literal', events);
      return;
    }
    cmd.stack[cmd.stack.length - 1]!.push({ type: 'string', value: Buffer.from(data) });
    cmd.afterArg = true;
  }

  private syntaxError(message: string, events: ReaderEvent[]): void {
    events.push({ type: 'error', tag: this.cmd.tag, kind: 'syntax', message, fatal: false });
    this.cmd.failed = true;
  }

  private fatal(events: ReaderEvent[], kind: ReaderErrorKind, message: string): void {
    events.push({ type: 'error', tag: this.cmd.tag, kind, message, fatal: true });
    this.dead = true;
    this.held = false;
    this.buf = EMPTY;
    this.start = this.pos = this.scan = this.end = 0;
  }

  private endCommand(): void {
    this.start = this.pos;
    this.cmd = newCommand();
    this.phase = LINE_PHASE;
  }
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive integer`);
  return value;
}
