import { once } from 'node:events';
import { type AddressInfo, createConnection, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  encodeProxyV1,
  encodeProxyV2,
  looksLikeProxyHeader,
  MAX_PROXY_V1_BYTES,
  MAX_PROXY_V2_BYTES,
  type ProxyHeader,
  ProxyHeaderParser,
  ProxyProtocolError,
  readProxyHeader,
} from '../../src/net/proxy-protocol.js';

const V2_SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

/** A v2 header built by hand (not by our encoder), so parser and encoder are checked separately. */
function v2(verCmd: number, family: number, payload: Buffer, declaredLength = payload.length): Buffer {
  const fixed = Buffer.alloc(4);
  fixed.writeUInt8(verCmd, 0);
  fixed.writeUInt8(family, 1);
  fixed.writeUInt16BE(declaredLength, 2);
  return Buffer.concat([V2_SIG, fixed, payload]);
}

const tcp4: ProxyHeader = {
  command: 'proxy',
  family: 'tcp4',
  sourceAddress: '192.0.2.10',
  sourcePort: 56324,
  destinationAddress: '198.51.100.1',
  destinationPort: 993,
};
const tcp6: ProxyHeader = {
  command: 'proxy',
  family: 'tcp6',
  sourceAddress: '2001:db8::1',
  sourcePort: 40000,
  destinationAddress: '2001:db8:0:1::25',
  destinationPort: 143,
};

const tcp4Payload = hex('c000020a c6336401 dc04 03e1');
const tcp6Payload = Buffer.concat([
  hex('20010db8000000000000000000000001'),
  hex('20010db8000000010000000000000025'),
  hex('9c40 008f'),
]);
const tlvs = hex('01 0003 696d61 05 0004 deadbeef');

/** Valid headers with the header each must parse to. */
const samples: Array<{ name: string; bytes: Buffer; header: ProxyHeader }> = [
  {
    name: 'v1 TCP4',
    bytes: Buffer.from('PROXY TCP4 192.0.2.10 198.51.100.1 56324 993\r\n'),
    header: tcp4,
  },
  {
    name: 'v1 TCP6 (normalised)',
    bytes: Buffer.from('PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:db8:0:1:0:0:0:25 40000 143\r\n'),
    header: tcp6,
  },
  {
    name: 'v1 UNKNOWN with addresses',
    bytes: Buffer.from('PROXY UNKNOWN ::1 ::1 1 2\r\n'),
    header: { command: 'local' },
  },
  { name: 'v1 UNKNOWN bare', bytes: Buffer.from('PROXY UNKNOWN\r\n'), header: { command: 'local' } },
  { name: 'v2 PROXY tcp4', bytes: v2(0x21, 0x11, tcp4Payload), header: tcp4 },
  { name: 'v2 PROXY tcp6', bytes: v2(0x21, 0x21, tcp6Payload), header: tcp6 },
  {
    name: 'v2 PROXY tcp4 with TLVs',
    bytes: v2(0x21, 0x11, Buffer.concat([tcp4Payload, tlvs])),
    header: tcp4,
  },
  {
    name: 'v2 PROXY tcp6 with TLVs',
    bytes: v2(0x21, 0x21, Buffer.concat([tcp6Payload, tlvs])),
    header: tcp6,
  },
  { name: 'v2 LOCAL unspec', bytes: v2(0x20, 0x00, Buffer.alloc(0)), header: { command: 'local' } },
  { name: 'v2 LOCAL with tcp4 block', bytes: v2(0x20, 0x11, tcp4Payload), header: { command: 'local' } },
  {
    name: 'v2 LOCAL with AF_UNIX block',
    bytes: v2(0x20, 0x31, Buffer.alloc(216, 7)),
    header: { command: 'local' },
  },
  {
    name: 'v2 PROXY tcp6 IPv4-mapped',
    bytes: v2(
      0x21,
      0x21,
      Buffer.concat([
        hex('00000000000000000000ffff01020304'),
        hex('00000000000000000000ffff05060708'),
        hex('0001 0002'),
      ]),
    ),
    header: {
      command: 'proxy',
      family: 'tcp6',
      sourceAddress: '::ffff:1.2.3.4',
      sourcePort: 1,
      destinationAddress: '::ffff:5.6.7.8',
      destinationPort: 2,
    },
  },
];

const REST = Buffer.from('a001 CAPABILITY\r\n\x00\xff');

type Fed = { done: false } | { done: true; header: ProxyHeader; rest: Buffer };

/** Feeds chunks in order; chunks after completion are appended to `rest`, as a driver would. */
function feed(chunks: Buffer[]): Fed {
  const parser = new ProxyHeaderParser();
  let result = { done: false } as Fed;
  const after: Buffer[] = [];
  for (const chunk of chunks) {
    if (result.done) after.push(chunk);
    else result = parser.push(chunk);
  }
  return result.done ? { ...result, rest: Buffer.concat([result.rest, ...after]) } : result;
}

function bytewise(buf: Buffer): Buffer[] {
  return Array.from({ length: buf.length }, (_, i) => buf.subarray(i, i + 1));
}

function expectProxyError(fn: () => unknown, reason: string, message?: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ProxyProtocolError);
    expect((err as ProxyProtocolError).code).toBe('MG_PROXY_PROTOCOL');
    expect((err as ProxyProtocolError).reason).toBe(reason);
    if (message) expect((err as Error).message).toMatch(message);
    return;
  }
  expect.unreachable('expected a ProxyProtocolError');
}

describe('ProxyHeaderParser: valid headers', () => {
  for (const { name, bytes, header } of samples) {
    it(`parses ${name} in one chunk and returns the rest intact`, () => {
      const r = feed([Buffer.concat([bytes, REST])]);
      expect(r).toEqual({ done: true, header, rest: REST });
    });

    it(`parses ${name} with an empty rest`, () => {
      const r = feed([bytes]);
      expect(r.done).toBe(true);
      if (r.done) expect(r.rest.length).toBe(0);
    });

    it(`parses ${name} split in two at every byte boundary`, () => {
      const all = Buffer.concat([bytes, REST]);
      for (let i = 0; i <= all.length; i++) {
        expect(feed([all.subarray(0, i), all.subarray(i)]), `split at ${i}`).toEqual({
          done: true,
          header,
          rest: REST,
        });
      }
    });

    it(`parses ${name} fed one byte at a time`, () => {
      expect(feed(bytewise(Buffer.concat([bytes, REST])))).toEqual({ done: true, header, rest: REST });
    });

    it(`stays incomplete on every truncation of ${name}`, () => {
      for (let i = 0; i < bytes.length; i++) {
        expect(feed([bytes.subarray(0, i)]), `truncated to ${i}`).toEqual({ done: false });
        expect(feed(bytewise(bytes.subarray(0, i))), `truncated to ${i}, bytewise`).toEqual({ done: false });
      }
    });
  }

  it('parses every sample split at seeded random points', () => {
    let seed = 0x5eed;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      const { bytes, header } = samples[rand(samples.length)]!;
      const all = Buffer.concat([bytes, REST]);
      const chunks: Buffer[] = [];
      for (let off = 0; off < all.length; ) {
        const n = 1 + rand(8);
        chunks.push(all.subarray(off, off + n));
        off += n;
      }
      expect(feed(chunks)).toEqual({ done: true, header, rest: REST });
    }
  });

  it('accepts the longest v1 TCP6 line and ports 0 and 65535', () => {
    const a = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const line = Buffer.from(`PROXY TCP6 ${a} ${a} 65535 65535\r\n`);
    expect(line.length).toBe(104); // spec §2.1: the longest TCP6 line
    expect(feed([line])).toMatchObject({ done: true, header: { sourcePort: 65535, destinationPort: 65535 } });
    const zero = Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r\n');
    expect(feed([zero])).toMatchObject({ done: true, header: { sourcePort: 0, destinationPort: 0 } });
  });

  it('accepts a 107-byte v1 UNKNOWN line, CRLF included', () => {
    const line = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(MAX_PROXY_V1_BYTES - 16)}\r\n`);
    expect(line.length).toBe(MAX_PROXY_V1_BYTES);
    expect(feed([line])).toEqual({ done: true, header: { command: 'local' }, rest: Buffer.alloc(0) });
  });

  it('accepts a v2 header of exactly MAX_PROXY_V2_BYTES', () => {
    const tlvLen = MAX_PROXY_V2_BYTES - 16 - tcp4Payload.length - 3;
    const tlv = Buffer.concat([hex('e0'), Buffer.from([tlvLen >> 8, tlvLen & 0xff]), Buffer.alloc(tlvLen)]);
    const bytes = v2(0x21, 0x11, Buffer.concat([tcp4Payload, tlv]));
    expect(bytes.length).toBe(MAX_PROXY_V2_BYTES);
    expect(feed([bytes])).toEqual({ done: true, header: tcp4, rest: Buffer.alloc(0) });
  });

  it('throws if pushed again after completion (a caller bug, not a protocol error)', () => {
    const parser = new ProxyHeaderParser();
    parser.push(Buffer.from('PROXY UNKNOWN\r\n'));
    expect(() => parser.push(Buffer.from('x'))).toThrow(/after the header was complete/);
  });
});

describe('ProxyHeaderParser: rejects', () => {
  it.each([
    ['an IMAP command', 'a001 LOGIN'],
    ['a lower-case proxy line', 'proxy TCP4'],
    ['an HTTP request', 'GET / HTTP/1.1'],
    ['a NUL byte', '\x00'],
  ])('garbage first bytes (%s) on the first byte', (_name, text) => {
    expectProxyError(
      () => new ProxyHeaderParser().push(Buffer.from(text, 'latin1').subarray(0, 1)),
      'malformed',
    );
  });

  it('a v1 signature mismatch as soon as it diverges', () => {
    const parser = new ProxyHeaderParser();
    expect(parser.push(Buffer.from('PROX'))).toEqual({ done: false });
    expectProxyError(() => parser.push(Buffer.from('I')), 'malformed', /v1 signature/);
  });

  it('"PROXY" without its space', () => {
    expectProxyError(() => new ProxyHeaderParser().push(Buffer.from('PROXYTCP4')), 'malformed');
  });

  it('a v2 signature mismatch as soon as it diverges', () => {
    expectProxyError(() => new ProxyHeaderParser().push(hex('0d0a0d0a01')), 'malformed', /v2 signature/);
  });

  it('a failed parser keeps failing with the same error', () => {
    const parser = new ProxyHeaderParser();
    let first: unknown;
    try {
      parser.push(Buffer.from('X'));
    } catch (err) {
      first = err;
    }
    expect(() => parser.push(Buffer.from('PROXY UNKNOWN\r\n'))).toThrow(first as Error);
  });

  describe('v1', () => {
    it('a line with no CRLF within 107 bytes, at byte 107', () => {
      const parser = new ProxyHeaderParser();
      const long = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(200)}`);
      expect(parser.push(long.subarray(0, MAX_PROXY_V1_BYTES - 1))).toEqual({ done: false });
      expectProxyError(() => parser.push(long.subarray(MAX_PROXY_V1_BYTES - 1)), 'oversize', /107/);
    });

    it('a 108-byte UNKNOWN line even though its CRLF arrives', () => {
      const line = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(MAX_PROXY_V1_BYTES - 15)}\r\n`);
      expect(line.length).toBe(MAX_PROXY_V1_BYTES + 1);
      expectProxyError(() => feed([line]), 'oversize');
    });

    it('an unknown protocol word as soon as it cannot match', () => {
      const parser = new ProxyHeaderParser();
      expect(parser.push(Buffer.from('PROXY TC'))).toEqual({ done: false });
      expectProxyError(() => parser.push(Buffer.from('X')), 'malformed', /unknown protocol/);
      expectProxyError(() => feed([Buffer.from('PROXY TCP ')]), 'malformed', /unknown protocol/);
      expectProxyError(() => feed([Buffer.from('PROXY UNKNOWNX\r\n')]), 'malformed');
      expectProxyError(() => feed([Buffer.from('PROXY \r\n')]), 'malformed');
    });

    it('binary junk in a TCP4 line before the CRLF arrives', () => {
      expectProxyError(() => feed([Buffer.from('PROXY TCP4 1.2.3.4 x')]), 'malformed');
      expectProxyError(() => feed([Buffer.from('PROXY TCP4 1.2.3.\x01')]), 'malformed', /non-printable/);
    });

    it('a bare CR or a bare LF', () => {
      expectProxyError(() => feed([Buffer.from('PROXY UNKNOWN\rX')]), 'malformed', /bare CR/);
      expectProxyError(() => feed([Buffer.from('PROXY UNKNOWN\n')]), 'malformed', /without CR/);
    });

    it.each([
      ['too few fields', 'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'],
      ['too many fields', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n'],
      ['double space', 'PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n'],
      ['trailing space', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n'],
      ['IPv6 in TCP4', 'PROXY TCP4 ::1 ::1 1 2\r\n'],
      ['IPv4 in TCP6', 'PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n'],
      ['IPv4 octet leading zero', 'PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n'],
      ['IPv4 octet over 255', 'PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n'],
      ['IPv4 with three octets', 'PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n'],
      ['bad IPv6', 'PROXY TCP6 2001:db8:::1 ::1 1 2\r\n'],
      ['IPv6 zone id', 'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n'],
    ])('bad addresses or layout: %s', (_name, line) => {
      expectProxyError(() => feed([Buffer.from(line)]), 'malformed');
    });

    it.each([
      ['above 65535', '65536'],
      ['far above 65535', '99999'],
      ['six digits', '100000'],
      ['leading zero', '0993'],
      ['sign', '+993'],
      ['negative', '-1'],
      ['empty', ''],
      ['hex', '0x3e1'],
    ])('bad port: %s', (_name, port) => {
      expectProxyError(() => feed([Buffer.from(`PROXY TCP4 1.2.3.4 5.6.7.8 ${port} 993\r\n`)]), 'malformed');
      expectProxyError(() => feed([Buffer.from(`PROXY TCP4 1.2.3.4 5.6.7.8 993 ${port}\r\n`)]), 'malformed');
    });
  });

  describe('v2', () => {
    it('a bad version on the 13th byte', () => {
      expectProxyError(() => feed([V2_SIG, hex('11')]), 'malformed', /version 1/);
      expectProxyError(() => feed([V2_SIG, hex('31')]), 'malformed', /version 3/);
    });

    it('an unknown command on the 13th byte', () => {
      expectProxyError(() => feed([V2_SIG, hex('22')]), 'malformed', /command/);
      expectProxyError(() => feed([V2_SIG, hex('2f')]), 'malformed', /command/);
    });

    it.each([
      ['UNSPEC', 0x00],
      ['TCP over UNIX', 0x31],
      ['UDP over IPv4', 0x12],
      ['UDP over IPv6', 0x22],
      ['unknown family', 0x41],
      ['unknown transport', 0x13],
    ])('PROXY with family %s on the 14th byte', (_name, family) => {
      expectProxyError(() => feed([V2_SIG, Buffer.from([0x21, family])]), 'unsupported');
    });

    it('a declared length over the cap as soon as the length field arrives', () => {
      const parser = new ProxyHeaderParser();
      expect(parser.push(Buffer.concat([V2_SIG, hex('2111 04')]))).toEqual({ done: false });
      expectProxyError(() => parser.push(hex('01')), 'oversize', new RegExp(String(MAX_PROXY_V2_BYTES)));
      expectProxyError(() => feed([Buffer.concat([V2_SIG, hex('2000 ffff')])]), 'oversize');
    });

    it('a length shorter than the address block', () => {
      expectProxyError(
        () => feed([v2(0x21, 0x11, tcp4Payload.subarray(0, 11))]),
        'malformed',
        /address block/,
      );
      expectProxyError(
        () => feed([v2(0x21, 0x21, tcp6Payload.subarray(0, 35))]),
        'malformed',
        /address block/,
      );
    });

    it('TLVs that do not tile the header', () => {
      const withTlv = (tlv: string): Buffer => v2(0x21, 0x11, Buffer.concat([tcp4Payload, hex(tlv)]));
      expectProxyError(() => feed([withTlv('01 00')]), 'malformed', /truncated TLV/);
      expectProxyError(() => feed([withTlv('01 0005 6162')]), 'malformed', /overruns/);
    });
  });
});

describe('looksLikeProxyHeader', () => {
  it.each([
    ['', true],
    ['P', true],
    ['PROX', true],
    ['PROXY ', true],
    ['PROXY TCP4 1.2.3.4', true],
    ['PROXY\r\n', false],
    ['a001 LOGIN', false],
    ['EHLO example.org', false],
    ['PRO', true],
    ['PX', false],
  ])('%j -> %s', (text, expected) => {
    expect(looksLikeProxyHeader(Buffer.from(text))).toBe(expected);
  });

  it('recognises v2 prefixes and full headers', () => {
    expect(looksLikeProxyHeader(V2_SIG.subarray(0, 1))).toBe(true);
    expect(looksLikeProxyHeader(V2_SIG.subarray(0, 7))).toBe(true);
    expect(looksLikeProxyHeader(v2(0x21, 0x11, tcp4Payload))).toBe(true);
    expect(looksLikeProxyHeader(hex('0d0a0d0a01'))).toBe(false);
    expect(looksLikeProxyHeader(Buffer.from('\r\n'))).toBe(true);
    expect(looksLikeProxyHeader(Buffer.from('\r\nQUIT'))).toBe(false);
  });
});

describe('encodeProxyV1 / encodeProxyV2', () => {
  const headers: ProxyHeader[] = [
    tcp4,
    tcp6,
    { command: 'local' },
    { ...tcp6, sourceAddress: '::ffff:10.0.0.1', destinationAddress: '::' },
    { ...tcp4, sourcePort: 0, destinationPort: 65535 },
  ];

  it('encodes v1 as the spec shows', () => {
    expect(encodeProxyV1(tcp4).toString()).toBe('PROXY TCP4 192.0.2.10 198.51.100.1 56324 993\r\n');
    expect(encodeProxyV1({ command: 'local' }).toString()).toBe('PROXY UNKNOWN\r\n');
    expect(encodeProxyV1({ ...tcp6, sourceAddress: '2001:DB8:0:0::1' }).toString()).toBe(
      'PROXY TCP6 2001:db8::1 2001:db8:0:1::25 40000 143\r\n',
    );
  });

  it('encodes v2 byte for byte', () => {
    expect(encodeProxyV2(tcp4)).toEqual(v2(0x21, 0x11, tcp4Payload));
    expect(encodeProxyV2(tcp6)).toEqual(v2(0x21, 0x21, tcp6Payload));
    expect(encodeProxyV2({ command: 'local' })).toEqual(v2(0x20, 0x00, Buffer.alloc(0)));
    expect(
      encodeProxyV2(tcp4, [
        { type: 0x01, value: Buffer.from('ima') },
        { type: 0x05, value: hex('deadbeef') },
      ]),
    ).toEqual(v2(0x21, 0x11, Buffer.concat([tcp4Payload, tlvs])));
  });

  for (const header of headers) {
    it(`round-trips ${JSON.stringify(header)}`, () => {
      const normalised =
        header.command === 'proxy' && header.family === 'tcp6'
          ? {
              ...header,
              sourceAddress: header.sourceAddress.toLowerCase(),
              destinationAddress: header.destinationAddress.toLowerCase(),
            }
          : header;
      expect(feed([encodeProxyV1(header), REST])).toEqual({ done: true, header: normalised, rest: REST });
      expect(feed([encodeProxyV2(header), REST])).toEqual({ done: true, header: normalised, rest: REST });
      expect(feed([encodeProxyV2(header, [{ type: 0xee, value: Buffer.alloc(300, 1) }]), REST])).toEqual({
        done: true,
        header: normalised,
        rest: REST,
      });
    });
  }

  it('round-trips IPv6 addresses given in expanded form as their canonical form', () => {
    const expanded: ProxyHeader = {
      ...tcp6,
      sourceAddress: '2001:0DB8:0000:0000:0000:0000:0000:0001',
      destinationAddress: '0:0:0:0:0:ffff:102:304',
    };
    const expected = { ...tcp6, sourceAddress: '2001:db8::1', destinationAddress: '::ffff:1.2.3.4' };
    expect(feed([encodeProxyV1(expanded)])).toMatchObject({ done: true, header: expected });
    expect(feed([encodeProxyV2(expanded)])).toMatchObject({ done: true, header: expected });
  });

  it.each([
    ['an IPv6 address as tcp4', { ...tcp4, sourceAddress: '::1' }],
    ['an IPv4 address as tcp6', { ...tcp6, destinationAddress: '1.2.3.4' }],
    ['a port above 65535', { ...tcp4, sourcePort: 65536 }],
    ['a negative port', { ...tcp4, destinationPort: -1 }],
    ['a fractional port', { ...tcp4, destinationPort: 1.5 }],
  ] as Array<[string, ProxyHeader]>)('refuses to encode %s', (_name, header) => {
    expectProxyError(() => encodeProxyV1(header), 'malformed');
    expectProxyError(() => encodeProxyV2(header), 'malformed');
  });

  it('refuses bad TLVs', () => {
    expectProxyError(() => encodeProxyV2(tcp4, [{ type: 256, value: Buffer.alloc(0) }]), 'malformed');
    expectProxyError(() => encodeProxyV2(tcp4, [{ type: 1, value: Buffer.alloc(0x10000) }]), 'oversize');
    expectProxyError(
      () =>
        encodeProxyV2(tcp4, [
          { type: 1, value: Buffer.alloc(0x8000) },
          { type: 2, value: Buffer.alloc(0x8000) },
        ]),
      'oversize',
    );
  });
});

describe('readProxyHeader over loopback', () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const fn of cleanups.splice(0)) fn();
  });

  /** A server whose next accepted socket is handed to the test, and a connected client. */
  async function pair(): Promise<{ server: Socket; client: Socket }> {
    const srv: Server = createServer();
    const accepted = new Promise<Socket>((resolve) => srv.once('connection', resolve));
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const client = createConnection((srv.address() as AddressInfo).port, '127.0.0.1');
    client.on('error', () => {});
    const server = await accepted;
    // As a listener would: its own error handler, attached at accept time, outlives ours.
    server.on('error', () => {});
    cleanups.push(() => {
      client.destroy();
      server.destroy();
      srv.close();
    });
    return { server, client };
  }

  const EVENTS = ['data', 'end', 'close', 'error', 'readable'] as const;
  const listenerCounts = (socket: Socket): Record<string, number> =>
    Object.fromEntries(EVENTS.map((e) => [e, socket.listenerCount(e)]));

  /** Node's own internal listeners (e.g. net's 'end' handler) are in `before` and must remain. */
  function expectNoListenersOfOurs(socket: Socket, before: Record<string, number>): void {
    expect(socket.listenerCount('data')).toBe(0);
    expect(listenerCounts(socket)).toEqual(before);
  }

  /**
   * Collects bytes after the header: `rest` plus what the socket delivers once resumed. The
   * explicit resume() is needed: a socket paused with pause() stays paused when a 'data'
   * listener is added, so no byte can slip past the caller.
   */
  function readAfterHeader(socket: Socket, rest: Buffer, total: number): Promise<Buffer> {
    return new Promise((resolve) => {
      let got = rest;
      if (got.length >= total) return resolve(got);
      socket.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        if (got.length >= total) resolve(got);
      });
      socket.resume();
    });
  }

  it('resolves with the header and rest, leaving the socket paused and without our listeners', async () => {
    const { server, client } = await pair();
    const before = listenerCounts(server);
    const reading = readProxyHeader(server, { timeoutMs: 2000 });
    client.write(Buffer.concat([encodeProxyV2(tcp6), REST]));
    const { header, rest } = await reading;
    expect(header).toEqual(tcp6);
    expectNoListenersOfOurs(server, before);
    expect(server.isPaused()).toBe(true);
    client.write('a002 LOGOUT\r\n');
    const after = await readAfterHeader(server, rest, REST.length + 13);
    expect(after.toString('latin1')).toBe(`${REST.toString('latin1')}a002 LOGOUT\r\n`);
  });

  it('reassembles a header written one byte at a time', async () => {
    const { server, client } = await pair();
    const before = listenerCounts(server);
    client.setNoDelay(true);
    const reading = readProxyHeader(server, { timeoutMs: 2000 });
    const bytes = encodeProxyV1(tcp4);
    for (const b of bytewise(bytes)) {
      client.write(b);
      await new Promise((r) => setImmediate(r));
    }
    client.write(REST);
    const { header, rest } = await reading;
    expect(header).toEqual(tcp4);
    expectNoListenersOfOurs(server, before);
    expect(await readAfterHeader(server, rest, REST.length)).toEqual(REST);
  });

  it('rejects on timeout and clears its listeners', async () => {
    const { server, client } = await pair();
    const before = listenerCounts(server);
    client.write('PROXY TCP4 ');
    const err = await readProxyHeader(server, { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProxyProtocolError);
    expect((err as ProxyProtocolError).reason).toBe('timeout');
    expect((err as Error).message).toMatch(/timeout/);
    expectNoListenersOfOurs(server, before);
  });

  it('rejects when the peer closes before the header is complete', async () => {
    const { server, client } = await pair();
    const before = listenerCounts(server);
    const reading = readProxyHeader(server, { timeoutMs: 2000 });
    client.end(encodeProxyV2(tcp4).subarray(0, 20));
    const err = await reading.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProxyProtocolError);
    expect((err as ProxyProtocolError).reason).toBe('closed');
    expectNoListenersOfOurs(server, before);
  });

  it('rejects when the peer resets the connection', async () => {
    const { server, client } = await pair();
    const before = listenerCounts(server);
    const reading = readProxyHeader(server, { timeoutMs: 2000 });
    client.resetAndDestroy();
    const err = await reading.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProxyProtocolError);
    expect((err as ProxyProtocolError).reason).toBe('closed');
    expectNoListenersOfOurs(server, before);
  });

  it('rejects immediately on a socket that is already destroyed', async () => {
    const { server } = await pair();
    server.destroy();
    await expect(readProxyHeader(server, { timeoutMs: 2000 })).rejects.toMatchObject({ reason: 'closed' });
    expect(server.listenerCount('data')).toBe(0);
  });

  it('rejects malformed data without waiting for the timeout', async () => {
    const { server, client } = await pair();
    const before = listenerCounts(server);
    const reading = readProxyHeader(server, { timeoutMs: 60_000 });
    client.write('a001 LOGIN alice secret\r\n');
    const err = await reading.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProxyProtocolError);
    expect((err as ProxyProtocolError).reason).toBe('malformed');
    expectNoListenersOfOurs(server, before);
  });
});
