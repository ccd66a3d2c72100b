/**
 * PROXY protocol v1 (text) and v2 (binary), as specified by HAProxy in
 * "The PROXY protocol, Versions 1 & 2" (doc/proxy-protocol.txt, "the spec" below).
 *
 * A load balancer in front of mailgate prepends one header to the TCP stream that names the
 * real client endpoints; the client IP feeds geo and rollout decisions, so the parser is strict
 * and bounded: it rejects as soon as the bytes seen so far cannot become a valid header, and
 * never buffers more than the named limits. Headers must be trusted only from configured peers
 * (STYLE.md rule 7); `looksLikeProxyHeader` helps listeners refuse them from everyone else.
 *
 * The parser is sans-I/O (`ProxyHeaderParser.push`); `readProxyHeader` is the one socket driver.
 */
import { isIPv4, isIPv6, type Socket, SocketAddress } from 'node:net';
import { MailgateError } from '../util/errors.js';

export type ProxyHeader =
  /** v2 LOCAL, or v1 "PROXY UNKNOWN": the caller uses the socket's own addresses. */
  | { command: 'local' }
  | {
      command: 'proxy';
      family: 'tcp4' | 'tcp6';
      sourceAddress: string;
      sourcePort: number;
      destinationAddress: string;
      destinationPort: number;
    };

/** Why a header was refused; one log event / counter label per reason. */
export type ProxyProtocolErrorReason = 'malformed' | 'oversize' | 'unsupported' | 'timeout' | 'closed';

/** A PROXY header that is malformed, too large, unsupported, late, or cut short by the peer. */
export class ProxyProtocolError extends MailgateError {
  readonly reason: ProxyProtocolErrorReason;

  constructor(reason: ProxyProtocolErrorReason, message: string, options?: { cause?: unknown }) {
    super('MG_PROXY_PROTOCOL', `PROXY protocol: ${message}`, options);
    this.reason = reason;
  }
}

/** Spec §2.1: the longest v1 line ("PROXY UNKNOWN" worst case), CRLF included. */
export const MAX_PROXY_V1_BYTES = 107;

const V2_FIXED_HEADER_BYTES = 16;
/**
 * The v2 length field allows 65535 bytes after the fixed header, but the largest address block
 * is 216 bytes (AF_UNIX, spec §2.2) and we skip TLVs. 1024 bytes leaves room for the addresses
 * plus the TLVs load balancers commonly send (ALPN, authority, SSL/CN, a 128-byte unique ID,
 * cloud endpoint IDs) while keeping pre-auth buffering per connection small; a peer that
 * declares more is refused as soon as the length field arrives.
 */
const MAX_PROXY_V2_PAYLOAD_BYTES = 1024;
export const MAX_PROXY_V2_BYTES: number = V2_FIXED_HEADER_BYTES + MAX_PROXY_V2_PAYLOAD_BYTES;

/** Spec §2.1: "PROXY" followed by exactly one space. */
const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1');
/** Spec §2.2: the 12-byte v2 signature, chosen to be invalid in any text protocol. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;

/** Spec §2.2, 13th byte: high nibble is the version (2), low nibble the command. */
const V2_VERSION = 0x2;
const V2_CMD_LOCAL = 0x0;
const V2_CMD_PROXY = 0x1;
/** Spec §2.2, 14th byte: address family (high nibble) and transport (low nibble). */
const V2_FAM_UNSPEC = 0x00;
const V2_FAM_TCP4 = 0x11;
const V2_FAM_TCP6 = 0x21;
/** Address block sizes (spec §2.2): two addresses then two 16-bit ports. */
const V2_ADDR_BYTES_TCP4 = 4 + 4 + 2 + 2;
const V2_ADDR_BYTES_TCP6 = 16 + 16 + 2 + 2;
/** Spec §2.2.1: a TLV is a 1-byte type and a 16-bit big-endian length, then the value. */
const V2_TLV_HEADER_BYTES = 3;
const MAX_V2_LENGTH_FIELD = 0xffff;
const MAX_TLV_TYPE = 0xff;

const MAX_PORT = 65535;
/** Spec §2.1: decimal, no leading zeroes ("to avoid any possible confusion with octal numbers"). */
const V1_PORT_RE = /^(?:0|[1-9][0-9]{0,4})$/;
const V1_PROTOCOLS = ['TCP4', 'TCP6', 'UNKNOWN'] as const;
/** Characters that can appear after "PROXY TCP4 " / "PROXY TCP6 ", to fail fast on binary junk. */
const V1_TCP4_CHARS = /^[0-9. ]*$/;
const V1_TCP6_CHARS = /^[0-9A-Fa-f:. ]*$/;

type PushResult = { done: false } | { done: true; header: ProxyHeader; rest: Buffer };

/**
 * Incremental parser for one PROXY header (v1 or v2, detected from the first byte). Feed it the
 * bytes as they arrive; it throws `ProxyProtocolError` as soon as the bytes so far cannot start
 * a valid header, and once done returns the bytes that follow the header, which belong to the
 * next protocol (IMAP, SMTP). One parser per connection; pushing after completion is a bug.
 */
export class ProxyHeaderParser {
  private buf: Buffer = Buffer.alloc(0);
  private state: 'reading' | 'done' | 'failed' = 'reading';
  private failure: ProxyProtocolError | undefined;

  push(chunk: Buffer): PushResult {
    if (this.state === 'done') throw new Error('ProxyHeaderParser.push called after the header was complete');
    if (this.state === 'failed') throw this.failure!;
    // `buf` never exceeds MAX_PROXY_V2_BYTES while reading, so this copy is bounded by the chunk.
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    try {
      const parsed = parseBuffered(this.buf);
      if (parsed === undefined) return { done: false };
      this.state = 'done';
      const rest = this.buf.subarray(parsed.length);
      this.buf = Buffer.alloc(0);
      return { done: true, header: parsed.header, rest };
    } catch (err) {
      this.state = 'failed';
      this.buf = Buffer.alloc(0);
      if (err instanceof ProxyProtocolError) this.failure = err;
      else this.failure = new ProxyProtocolError('malformed', 'internal parser failure', { cause: err });
      throw this.failure;
    }
  }
}

/**
 * True when `firstBytes` is a prefix of, or starts with, a v1 or v2 signature, i.e. the peer may
 * be sending a PROXY header. An empty buffer returns true (nothing rules it out yet). Listeners
 * for untrusted peers use it to refuse forged headers instead of passing them to IMAP/SMTP.
 */
export function looksLikeProxyHeader(firstBytes: Buffer): boolean {
  return matchesSignaturePrefix(firstBytes, V1_SIGNATURE) || matchesSignaturePrefix(firstBytes, V2_SIGNATURE);
}

/**
 * Reads one PROXY header from `socket`. On success the socket is paused with no listeners of
 * ours left, and `rest` holds the bytes already read past the header; the caller must handle
 * them first, then call `socket.resume()` (an explicitly paused stream stays paused when a
 * 'data' listener is added, so nothing is delivered behind the caller's back). Rejects with
 * `ProxyProtocolError` on malformed data, on timeout, or when the socket ends, closes or errors
 * first. The caller owns the socket: it needs its own 'error' listener (ours is removed on
 * settling) and should destroy the socket on rejection. The socket must not use setEncoding().
 */
export function readProxyHeader(
  socket: Socket,
  opts: { timeoutMs: number },
): Promise<{ header: ProxyHeader; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed || socket.readableEnded) {
      reject(new ProxyProtocolError('closed', 'connection closed before the header was complete'));
      return;
    }
    const parser = new ProxyHeaderParser();
    let settled = false;

    const cleanup = (): void => {
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('close', onClose);
      socket.removeListener('error', onError);
      socket.pause();
    };
    const fail = (err: ProxyProtocolError): void => {
      if (settled) return;
      cleanup();
      reject(err);
    };
    const onData = (chunk: Buffer | string): void => {
      if (settled) return;
      if (typeof chunk === 'string') {
        // A decoded string has lost the v2 binary bytes; this is a caller bug, not a peer's.
        cleanup();
        reject(new TypeError('readProxyHeader needs a socket without setEncoding()'));
        return;
      }
      let result: PushResult;
      try {
        result = parser.push(chunk);
      } catch (err) {
        fail(
          err instanceof ProxyProtocolError
            ? err
            : new ProxyProtocolError('malformed', 'internal parser failure', { cause: err }),
        );
        return;
      }
      if (!result.done) return;
      cleanup();
      resolve({ header: result.header, rest: result.rest });
    };
    const onEnd = (): void =>
      fail(new ProxyProtocolError('closed', 'peer ended the connection before the header'));
    const onClose = (): void =>
      fail(new ProxyProtocolError('closed', 'connection closed before the header was complete'));
    const onError = (err: Error): void =>
      fail(
        new ProxyProtocolError('closed', `socket error before the header: ${err.message}`, { cause: err }),
      );

    const timer = setTimeout(
      () =>
        fail(new ProxyProtocolError('timeout', `timeout: no complete header within ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    socket.on('end', onEnd);
    socket.on('close', onClose);
    socket.on('error', onError);
    // Attached last: adding a 'data' listener switches the socket to flowing mode.
    socket.on('data', onData);
  });
}

/** Encodes a v1 line; `local` becomes "PROXY UNKNOWN" (spec §2.1). IPv6 is written canonically. */
export function encodeProxyV1(h: ProxyHeader): Buffer {
  if (h.command === 'local') return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  const { src, dst } = checkedAddresses(h);
  const proto = h.family === 'tcp4' ? 'TCP4' : 'TCP6';
  return Buffer.from(`PROXY ${proto} ${src} ${dst} ${h.sourcePort} ${h.destinationPort}\r\n`, 'latin1');
}

/**
 * Encodes a v2 header (spec §2.2). `local` is sent with family UNSPEC and no addresses. TLVs are
 * appended as given; the total must fit the 16-bit length field (note that our own parser
 * accepts at most MAX_PROXY_V2_BYTES).
 */
export function encodeProxyV2(h: ProxyHeader, tlvs: Array<{ type: number; value: Buffer }> = []): Buffer {
  const parts: Buffer[] = [];
  let command: number;
  let family: number;
  if (h.command === 'local') {
    command = V2_CMD_LOCAL;
    family = V2_FAM_UNSPEC;
  } else {
    const { src, dst } = checkedAddresses(h);
    command = V2_CMD_PROXY;
    family = h.family === 'tcp4' ? V2_FAM_TCP4 : V2_FAM_TCP6;
    const toBytes = h.family === 'tcp4' ? ipv4ToBytes : ipv6ToBytes;
    const ports = Buffer.alloc(4);
    ports.writeUInt16BE(h.sourcePort, 0);
    ports.writeUInt16BE(h.destinationPort, 2);
    parts.push(toBytes(src), toBytes(dst), ports);
  }
  for (const tlv of tlvs) {
    if (!Number.isInteger(tlv.type) || tlv.type < 0 || tlv.type > MAX_TLV_TYPE) {
      throw new ProxyProtocolError('malformed', `cannot encode TLV type ${tlv.type}`);
    }
    if (tlv.value.length > MAX_V2_LENGTH_FIELD) {
      throw new ProxyProtocolError('oversize', `cannot encode TLV of ${tlv.value.length} bytes`);
    }
    const head = Buffer.alloc(V2_TLV_HEADER_BYTES);
    head.writeUInt8(tlv.type, 0);
    head.writeUInt16BE(tlv.value.length, 1);
    parts.push(head, tlv.value);
  }
  const payload = Buffer.concat(parts);
  if (payload.length > MAX_V2_LENGTH_FIELD) {
    throw new ProxyProtocolError('oversize', `cannot encode a ${payload.length}-byte v2 payload`);
  }
  const fixed = Buffer.alloc(V2_FIXED_HEADER_BYTES);
  V2_SIGNATURE.copy(fixed, 0);
  fixed.writeUInt8((V2_VERSION << 4) | command, 12);
  fixed.writeUInt8(family, 13);
  fixed.writeUInt16BE(payload.length, 14);
  return Buffer.concat([fixed, payload]);
}

// ---------------------------------------------------------------------------------------------
// Parsing

/** Returns the header and its length once complete, undefined while more bytes are needed. */
function parseBuffered(buf: Buffer): { header: ProxyHeader; length: number } | undefined {
  if (buf.length === 0) return undefined;
  if (buf[0] === V1_SIGNATURE[0]) return parseV1(buf);
  if (buf[0] === V2_SIGNATURE[0]) return parseV2(buf);
  throw new ProxyProtocolError('malformed', 'first byte matches neither the v1 nor the v2 signature');
}

function parseV1(buf: Buffer): { header: ProxyHeader; length: number } | undefined {
  if (!matchesSignaturePrefix(buf, V1_SIGNATURE)) {
    throw new ProxyProtocolError('malformed', 'bytes do not match the v1 signature "PROXY "');
  }
  const window = buf.subarray(0, MAX_PROXY_V1_BYTES);
  const lf = window.indexOf(LF);
  const seen = lf === -1 ? window : window.subarray(0, lf + 1);
  checkV1Partial(seen);
  if (lf === -1) {
    if (buf.length >= MAX_PROXY_V1_BYTES) {
      throw new ProxyProtocolError('oversize', `v1 line has no CRLF within ${MAX_PROXY_V1_BYTES} bytes`);
    }
    return undefined;
  }
  // checkV1Partial guarantees a CR before the LF.
  const line = buf.toString('latin1', 0, lf - 1);
  return { header: parseV1Line(line), length: lf + 1 };
}

/**
 * Rejects a v1 prefix that can no longer become a valid line: control bytes, a bare CR or LF,
 * an unknown protocol word, or characters that cannot appear in TCP4/TCP6 addresses and ports.
 */
function checkV1Partial(seen: Buffer): void {
  for (let i = 0; i < seen.length; i++) {
    const b = seen[i]!;
    if (b === CR) {
      if (i + 1 < seen.length && seen[i + 1] !== LF) throw new ProxyProtocolError('malformed', 'v1 bare CR');
    } else if (b === LF) {
      if (i === 0 || seen[i - 1] !== CR)
        throw new ProxyProtocolError('malformed', 'v1 line ends in LF without CR');
    } else if (b < SPACE || b > 0x7e) {
      throw new ProxyProtocolError('malformed', 'v1 line contains a non-printable byte');
    }
  }
  if (seen.length <= V1_SIGNATURE.length) return;
  const afterSig = seen.toString('latin1', V1_SIGNATURE.length);
  const wordEnd = afterSig.search(/[ \r]/);
  const word = wordEnd === -1 ? afterSig : afterSig.slice(0, wordEnd);
  if (wordEnd === -1 ? !V1_PROTOCOLS.some((p) => p.startsWith(word)) : !isV1Protocol(word)) {
    throw new ProxyProtocolError('malformed', `v1 unknown protocol "${word.slice(0, 16)}"`);
  }
  if (wordEnd === -1 || afterSig[wordEnd] !== ' ') return;
  const fields = afterSig.slice(wordEnd + 1).replace(/\r\n?$/, '');
  if (word === 'TCP4' && !V1_TCP4_CHARS.test(fields)) {
    throw new ProxyProtocolError('malformed', 'v1 TCP4 line contains characters outside addresses and ports');
  }
  if (word === 'TCP6' && !V1_TCP6_CHARS.test(fields)) {
    throw new ProxyProtocolError('malformed', 'v1 TCP6 line contains characters outside addresses and ports');
  }
}

function isV1Protocol(word: string): word is (typeof V1_PROTOCOLS)[number] {
  return (V1_PROTOCOLS as readonly string[]).includes(word);
}

/** Spec §2.1: "PROXY" SP proto SP src SP dst SP sport SP dport, single spaces, no CRLF here. */
function parseV1Line(line: string): ProxyHeader {
  const fields = line.split(' ');
  const proto = fields[1];
  // Spec §2.1: with UNKNOWN "the receiver must ignore anything presented before the CRLF".
  if (proto === 'UNKNOWN') return { command: 'local' };
  if (fields.length !== 6) {
    throw new ProxyProtocolError('malformed', `v1 ${proto} line must have 6 single-space-separated fields`);
  }
  const [, , src, dst, sport, dport] = fields as [string, string, string, string, string, string];
  const family = proto === 'TCP4' ? 'tcp4' : 'tcp6';
  const isFamily = family === 'tcp4' ? isIPv4 : isV1IPv6;
  if (!isFamily(src) || !isFamily(dst)) {
    throw new ProxyProtocolError(
      'malformed',
      `v1 ${proto} line has an address of another family or bad syntax`,
    );
  }
  return {
    command: 'proxy',
    family,
    sourceAddress: family === 'tcp4' ? src : canonicalIPv6(src),
    sourcePort: parseV1Port(sport),
    destinationAddress: family === 'tcp4' ? dst : canonicalIPv6(dst),
    destinationPort: parseV1Port(dport),
  };
}

/** Zone IDs ("fe80::1%eth0") are meaningless across hosts and not part of the v1 grammar. */
function isV1IPv6(addr: string): boolean {
  return isIPv6(addr) && !addr.includes('%');
}

function parseV1Port(text: string): number {
  if (!V1_PORT_RE.test(text)) {
    throw new ProxyProtocolError(
      'malformed',
      `v1 port "${text.slice(0, 8)}" is not a decimal without leading zeroes`,
    );
  }
  const port = Number(text);
  if (port > MAX_PORT) throw new ProxyProtocolError('malformed', `v1 port ${port} is above ${MAX_PORT}`);
  return port;
}

function parseV2(buf: Buffer): { header: ProxyHeader; length: number } | undefined {
  if (!matchesSignaturePrefix(buf, V2_SIGNATURE)) {
    throw new ProxyProtocolError('malformed', 'bytes do not match the v2 signature');
  }
  const verCmd = buf[12];
  if (verCmd === undefined) return undefined;
  if (verCmd >> 4 !== V2_VERSION) {
    throw new ProxyProtocolError('malformed', `v2 version ${verCmd >> 4} is not 2`);
  }
  const command = verCmd & 0x0f;
  if (command !== V2_CMD_LOCAL && command !== V2_CMD_PROXY) {
    throw new ProxyProtocolError(
      'malformed',
      `v2 command 0x${command.toString(16)} is neither LOCAL nor PROXY`,
    );
  }
  const family = buf[13];
  if (family === undefined) return undefined;
  let addrBytes = 0;
  if (command === V2_CMD_PROXY) {
    if (family === V2_FAM_TCP4) addrBytes = V2_ADDR_BYTES_TCP4;
    else if (family === V2_FAM_TCP6) addrBytes = V2_ADDR_BYTES_TCP6;
    else {
      // UNSPEC, UNIX and DGRAM carry no TCP client address we could use; taking the socket's
      // own address instead would attribute the proxy's IP to the client, so refuse.
      throw new ProxyProtocolError(
        'unsupported',
        `v2 PROXY with family/transport 0x${family.toString(16).padStart(2, '0')} (only TCP over IPv4/IPv6)`,
      );
    }
  }
  if (buf.length < V2_FIXED_HEADER_BYTES) return undefined;
  const payloadBytes = buf.readUInt16BE(14);
  if (payloadBytes > MAX_PROXY_V2_PAYLOAD_BYTES) {
    throw new ProxyProtocolError(
      'oversize',
      `v2 header declares ${V2_FIXED_HEADER_BYTES + payloadBytes} bytes, over ${MAX_PROXY_V2_BYTES}`,
    );
  }
  if (payloadBytes < addrBytes) {
    throw new ProxyProtocolError('malformed', `v2 length ${payloadBytes} is shorter than the address block`);
  }
  const length = V2_FIXED_HEADER_BYTES + payloadBytes;
  if (buf.length < length) return undefined;

  // Spec §2.2: with LOCAL "the receiver must ... discard the protocol block including the family".
  if (command === V2_CMD_LOCAL) return { header: { command: 'local' }, length };

  const a = V2_FIXED_HEADER_BYTES;
  checkTlvs(buf.subarray(a + addrBytes, length));
  if (family === V2_FAM_TCP4) {
    return {
      header: {
        command: 'proxy',
        family: 'tcp4',
        sourceAddress: formatIPv4(buf.subarray(a, a + 4)),
        destinationAddress: formatIPv4(buf.subarray(a + 4, a + 8)),
        sourcePort: buf.readUInt16BE(a + 8),
        destinationPort: buf.readUInt16BE(a + 10),
      },
      length,
    };
  }
  return {
    header: {
      command: 'proxy',
      family: 'tcp6',
      sourceAddress: formatIPv6(buf.subarray(a, a + 16)),
      destinationAddress: formatIPv6(buf.subarray(a + 16, a + 32)),
      sourcePort: buf.readUInt16BE(a + 32),
      destinationPort: buf.readUInt16BE(a + 34),
    },
    length,
  };
}

/** TLVs are skipped, but must tile the rest of the header exactly (spec §2.2.1), as HAProxy checks. */
function checkTlvs(region: Buffer): void {
  let off = 0;
  while (off < region.length) {
    if (off + V2_TLV_HEADER_BYTES > region.length) {
      throw new ProxyProtocolError('malformed', 'v2 truncated TLV header');
    }
    const len = region.readUInt16BE(off + 1);
    off += V2_TLV_HEADER_BYTES + len;
    if (off > region.length) throw new ProxyProtocolError('malformed', 'v2 TLV overruns the header');
  }
}

function matchesSignaturePrefix(buf: Buffer, signature: Buffer): boolean {
  const n = Math.min(buf.length, signature.length);
  return buf.subarray(0, n).equals(signature.subarray(0, n));
}

// ---------------------------------------------------------------------------------------------
// Addresses

function formatIPv4(bytes: Buffer): string {
  return Array.from(bytes).join('.');
}

function formatIPv6(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return canonicalIPv6(groups.join(':'));
}

/** RFC 5952 text (lower case, longest zero run compressed), via libuv's inet_ntop. */
function canonicalIPv6(addr: string): string {
  return new SocketAddress({ address: addr, family: 'ipv6' }).address;
}

function checkedAddresses(h: Extract<ProxyHeader, { command: 'proxy' }>): { src: string; dst: string } {
  const isFamily = h.family === 'tcp4' ? isIPv4 : isV1IPv6;
  for (const addr of [h.sourceAddress, h.destinationAddress]) {
    if (!isFamily(addr)) throw new ProxyProtocolError('malformed', `cannot encode "${addr}" as ${h.family}`);
  }
  for (const port of [h.sourcePort, h.destinationPort]) {
    if (!Number.isInteger(port) || port < 0 || port > MAX_PORT) {
      throw new ProxyProtocolError('malformed', `cannot encode port ${port}`);
    }
  }
  if (h.family === 'tcp4') return { src: h.sourceAddress, dst: h.destinationAddress };
  return { src: canonicalIPv6(h.sourceAddress), dst: canonicalIPv6(h.destinationAddress) };
}

function ipv4ToBytes(addr: string): Buffer {
  return Buffer.from(addr.split('.').map(Number));
}

/** `addr` has passed isIPv6 without a zone; expands "::" and a trailing dotted IPv4 part. */
function ipv6ToBytes(addr: string): Buffer {
  let text = addr;
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = ipv4ToBytes(tail);
    text = `${text.slice(0, lastColon + 1)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const halves = text.split('::');
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => Number.parseInt(g, 16)));
  const head = parse(halves[0] ?? '');
  const rest = halves.length > 1 ? parse(halves[1] ?? '') : [];
  const missing = 8 - head.length - rest.length;
  if (missing < 0 || (halves.length === 1 && missing !== 0)) {
    throw new ProxyProtocolError('malformed', `cannot encode "${addr}" as tcp6`);
  }
  const groups = [...head, ...new Array<number>(missing).fill(0), ...rest];
  const out = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) out.writeUInt16BE(g, i * 2);
  return out;
}
