import { describe, expect, it } from 'vitest';
import { CidrError, CidrMap, CidrSet, normalizeIp, parseCidr } from '../../src/net/cidr.js';

describe('parseCidr', () => {
  it.each([
    ['10.0.0.0/8', { address: '10.0.0.0', prefix: 8, family: 'ipv4' }],
    ['0.0.0.0/0', { address: '0.0.0.0', prefix: 0, family: 'ipv4' }],
    ['192.0.2.7', { address: '192.0.2.7', prefix: 32, family: 'ipv4' }],
    ['  203.0.113.0/24 ', { address: '203.0.113.0', prefix: 24, family: 'ipv4' }],
    ['2001:DB8:0:0::/32', { address: '2001:db8::', prefix: 32, family: 'ipv6' }],
    ['::/0', { address: '::', prefix: 0, family: 'ipv6' }],
    ['2001:240::1', { address: '2001:240::1', prefix: 128, family: 'ipv6' }],
    ['fe80::/10', { address: 'fe80::', prefix: 10, family: 'ipv6' }],
    // An IPv4-mapped block is the IPv4 block it denotes.
    ['::ffff:192.0.2.0/120', { address: '192.0.2.0', prefix: 24, family: 'ipv4' }],
    ['::ffff:192.0.2.1', { address: '192.0.2.1', prefix: 32, family: 'ipv4' }],
  ] as const)('parses %s', (text, expected) => {
    expect(parseCidr(text)).toEqual(expected);
  });

  it.each([
    ['', 'bad address'],
    ['banana', 'bad address'],
    ['10.0.0/8', 'bad address'],
    ['256.0.0.0/8', 'bad address'],
    ['010.0.0.0/8', 'bad address'],
    ['10.0.0.0/33', 'prefix length above 32'],
    ['2001:db8::/129', 'prefix length above 128'],
    ['10.0.0.0/', 'bad prefix length'],
    ['10.0.0.0/-1', 'bad prefix length'],
    ['10.0.0.0/08', 'bad prefix length'],
    ['10.0.0.0/8/8', 'bad prefix length'],
    ['10.0.0.0/ 8', 'bad prefix length'],
    ['fe80::/10%eth0', 'bad prefix length'],
    ['fe80::1%eth0', 'zone index not allowed'],
    ['203.0.113.5/24', 'host bits set; the network is 203.0.113.0/24'],
    ['2001:db8::1/32', 'host bits set; the network is 2001:db8::/32'],
    ['::ffff:192.0.2.1/120', 'host bits set; the network is 192.0.2.0/24'],
  ])('refuses %j (%s)', (text, why) => {
    expect(() => parseCidr(text)).toThrow(new CidrError(`not a CIDR: ${JSON.stringify(text)} (${why})`));
  });

  it('throws a CidrError with a stable code', () => {
    try {
      parseCidr('nope');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(CidrError);
      expect(err).toBeInstanceOf(Error);
      expect((err as CidrError).code).toBe('MG_CIDR');
      expect((err as Error).message).toMatch(/^not a CIDR: "nope"/);
    }
  });
});

describe('normalizeIp', () => {
  it.each([
    ['192.0.2.1', '192.0.2.1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['::FFFF:192.0.2.1', '192.0.2.1'],
    ['0:0:0:0:0:ffff:c000:0201', '192.0.2.1'],
    ['::ffff:c000:201', '192.0.2.1'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs (RFC 5952 §4.2.3)
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['2001:db8::', '2001:db8::'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['fe80::1%eth0', 'fe80::1'],
    ['::192.0.2.1', '::c000:201'], // IPv4-compatible (deprecated) is not IPv4-mapped
    ['not an ip', 'not an ip'],
    ['', ''],
  ])('%s -> %s', (input, expected) => {
    expect(normalizeIp(input)).toBe(expected);
  });
});

describe('CidrSet', () => {
  const set = new CidrSet([
    '10.0.0.0/8',
    '192.0.2.1',
    '2001:db8::/32',
    '10.0.0.0/8',
    '::ffff:198.51.100.0/120',
  ]);

  it('counts distinct blocks', () => {
    expect(set.size).toBe(4);
    expect(new CidrSet([]).size).toBe(0);
  });

  it.each([
    ['10.255.255.255', true],
    ['11.0.0.0', false],
    ['192.0.2.1', true],
    ['192.0.2.2', false],
    ['2001:db8:ffff::1', true],
    ['2001:db9::1', false],
    ['198.51.100.200', true],
    // Dual-stack sockets report IPv4 clients like this.
    ['::ffff:10.1.2.3', true],
    ['::FFFF:192.0.2.1', true],
    ['::ffff:c000:201', true],
    ['::ffff:11.0.0.1', false],
    ['fe80::1%eth0', false],
    ['not an ip', false],
    ['10.0.0', false],
  ])('has(%s) is %s', (ip, expected) => {
    expect(set.has(ip)).toBe(expected);
  });

  it('throws on a bad entry', () => {
    expect(() => new CidrSet(['10.0.0.0/8', 'x'])).toThrow(CidrError);
  });

  // Regression: one BlockList for both families made '::/3' (and '::/0') match every IPv4
  // address, because BlockList checks IPv4 against IPv6 rules as ::ffff:a.b.c.d.
  it('keeps IPv6 blocks away from IPv4 addresses', () => {
    const v6only = new CidrSet(['::/0', '::/3']);
    expect(v6only.has('2001:db8::1')).toBe(true);
    expect(v6only.has('8.8.8.8')).toBe(false);
    expect(v6only.has('::ffff:8.8.8.8')).toBe(false);
  });

  it('an empty set, or one with blocks of the other family only, holds nothing', () => {
    const empty = new CidrSet([]);
    for (const ip of ['127.0.0.1', '::1', '::ffff:10.0.0.1', '0.0.0.0', '::'])
      expect(empty.has(ip)).toBe(false);
    expect(new CidrSet(['10.0.0.0/8']).has('::1')).toBe(false);
    expect(new CidrSet(['::1']).has('10.0.0.1')).toBe(false);
    expect(new CidrSet(['0.0.0.0/0']).has('::ffff:10.0.0.1')).toBe(true);
  });
});

describe('CidrMap', () => {
  const map = new CidrMap([
    { cidr: '0.0.0.0/0', value: 'v4-default' },
    { cidr: '10.0.0.0/8', value: 'ten' },
    { cidr: '10.1.0.0/16', value: 'ten-one' },
    { cidr: '10.1.2.0/24', value: 'ten-one-two' },
    { cidr: '10.1.2.3', value: 'host' },
    { cidr: '172.16.0.0/12', value: 'private' },
    { cidr: '2001:db8::/32', value: 'doc' },
    { cidr: '2001:db8:1::/48', value: 'doc-1' },
    { cidr: '2001:db8:1:2::/64', value: 'doc-1-2' },
    { cidr: '2001:db8:1:2::1/128', value: 'doc-host' },
  ]);

  it.each([
    ['10.1.2.3', 'host'],
    ['10.1.2.4', 'ten-one-two'],
    ['10.1.3.1', 'ten-one'],
    ['10.2.0.1', 'ten'],
    ['172.31.255.255', 'private'],
    ['172.32.0.0', 'v4-default'],
    ['255.255.255.255', 'v4-default'],
    ['::ffff:10.1.2.3', 'host'],
    ['::ffff:10.2.0.1', 'ten'],
    ['2001:db8:1:2::1', 'doc-host'],
    ['2001:DB8:1:2::2', 'doc-1-2'],
    ['2001:db8:1:3::1', 'doc-1'],
    ['2001:db8:2::1', 'doc'],
    ['2001:db8:1:2::1%eth0', 'doc-host'],
  ])('get(%s) is %s', (ip, expected) => {
    expect(map.get(ip)).toBe(expected);
  });

  it('answers undefined outside every block and for non-addresses', () => {
    expect(map.get('2001:db9::1')).toBeUndefined(); // no IPv6 default route in the map
    expect(map.get('not an ip')).toBeUndefined();
    expect(map.get('10.1.2')).toBeUndefined();
    expect(new CidrMap<string>([]).get('10.0.0.1')).toBeUndefined();
  });

  it('does not depend on the order of entries', () => {
    const reversed = new CidrMap([
      { cidr: '10.1.2.0/24', value: 3 },
      { cidr: '10.1.0.0/16', value: 2 },
      { cidr: '10.0.0.0/8', value: 1 },
    ]);
    expect(reversed.get('10.1.2.9')).toBe(3);
    expect(reversed.get('10.1.9.9')).toBe(2);
    expect(reversed.get('10.9.9.9')).toBe(1);
  });

  it('treats a mapped block and its IPv4 block as the same block', () => {
    expect(
      () =>
        new CidrMap([
          { cidr: '192.0.2.0/24', value: 1 },
          { cidr: '::ffff:192.0.2.0/120', value: 2 },
        ]),
    ).toThrow(new CidrError('duplicate CIDR: "::ffff:192.0.2.0/120"'));
  });

  it('refuses duplicates and bad entries', () => {
    expect(
      () =>
        new CidrMap([
          { cidr: '2001:db8::/32', value: 1 },
          { cidr: '2001:DB8:0::/32', value: 2 },
        ]),
    ).toThrow(CidrError);
    expect(() => new CidrMap([{ cidr: '10.0.0.1/8', value: 1 }])).toThrow(/host bits set/);
  });

  it('keeps falsy values', () => {
    const falsy = new CidrMap<number | string>([
      { cidr: '10.0.0.0/8', value: 0 },
      { cidr: '10.1.0.0/16', value: '' },
    ]);
    expect(falsy.get('10.0.0.1')).toBe(0);
    expect(falsy.get('10.1.0.1')).toBe('');
  });
});

describe('properties (seeded random)', () => {
  // Small deterministic PRNG (mulberry32) so failures reproduce.
  function rng(seed: number): () => number {
    let a = seed;
    return () => {
      a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  const random = rng(20260617);
  const int = (n: number): number => Math.floor(random() * n);
  /** Eight groups with plenty of zero runs, written uncompressed in mixed case. */
  function randomIpv6(): { text: string; groups: number[] } {
    const groups = Array.from({ length: 8 }, () => (random() < 0.5 ? 0 : int(0x10000)));
    if (groups.slice(0, 6).join() === '0,0,0,0,0,65535') groups[5] = 1; // not IPv4-mapped
    const text = groups
      .map((g) => (random() < 0.5 ? g.toString(16).toUpperCase() : g.toString(16)))
      .join(':');
    return { text, groups };
  }

  it('normalizeIp agrees with the WHATWG URL serialiser (RFC 5952 compression)', () => {
    for (let i = 0; i < 2000; i++) {
      const { text } = randomIpv6();
      expect(normalizeIp(text), text).toBe(new URL(`http://[${text}]/`).hostname.slice(1, -1));
    }
  });

  it('CidrMap agrees with a linear longest-prefix scan', () => {
    const toBig = (groups: number[]): bigint => groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
    const toText = (addr: bigint): string =>
      Array.from({ length: 8 }, (_, k) => ((addr >> BigInt(16 * (7 - k))) & 0xffffn).toString(16)).join(':');
    /** A random address inside 2001:db8::/32, so that blocks nest and overlap. */
    const randomDoc = (): bigint => {
      const { groups } = randomIpv6();
      groups[0] = 0x2001;
      groups[1] = 0xdb8;
      return toBig(groups);
    };
    const blocks = new Map<string, { net: bigint; prefix: number }>();
    for (let i = 0; i < 300; i++) {
      const prefix = 32 + int(97);
      const shift = BigInt(128 - prefix);
      const net = (randomDoc() >> shift) << shift;
      blocks.set(`${toText(net)}/${prefix}`, { net, prefix });
    }
    const list = [...blocks];
    const map = new CidrMap(list.map(([cidr], i) => ({ cidr, value: i })));
    for (let i = 0; i < 3000; i++) {
      // Half the probes land next to a block's network address.
      const near = list[int(list.length)]![1].net | BigInt(int(0x10000));
      const addr = random() < 0.5 ? near : randomDoc();
      let best: number | undefined;
      let bestPrefix = -1;
      list.forEach(([, b], j) => {
        const shift = BigInt(128 - b.prefix);
        if (addr >> shift === b.net >> shift && b.prefix > bestPrefix) {
          best = j;
          bestPrefix = b.prefix;
        }
      });
      expect(map.get(toText(addr)), toText(addr)).toBe(best);
    }
  });
});
