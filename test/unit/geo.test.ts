import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Geo, type GeoAnswer, type GeoOptions } from '../../src/geo/geo.js';
import { ConfigError } from '../../src/util/errors.js';

const BUNDLED_DIR = join(
  createRequire(import.meta.url).resolve('@ip-location-db/geo-whois-asn-country-mmdb/package.json'),
  '..',
);
const BUNDLED_DB = join(BUNDLED_DIR, 'geo-whois-asn-country.mmdb');

const base: GeoOptions = {
  countryDb: 'bundled',
  domesticCountries: ['JP'],
  unknownCountry: 'overseas',
  overrides: [],
};

const db = (country: string): GeoAnswer => ({
  country,
  location: country === 'JP' ? 'domestic' : 'overseas',
  source: 'database',
});
const special: GeoAnswer = { country: null, location: 'overseas', source: 'special' };
const none: GeoAnswer = { country: null, location: 'overseas', source: 'none' };

describe('Geo with the bundled database', () => {
  let geo: Geo;
  beforeAll(async () => {
    geo = await Geo.open(base);
  });

  // Reference answers from FIELD-NOTES and from the database itself (build 2026-06-17).
  it.each([
    ['1.66.0.1', db('JP')],
    ['49.96.0.1', db('JP')],
    ['110.163.0.1', db('JP')],
    ['8.8.8.8', db('US')],
    ['2001:240::1', db('JP')], // NTT
    ['2400:4050::1', db('JP')],
    ['2001:4860:4860::8888', db('US')], // Google DNS
  ])('%s', (ip, expected) => {
    expect(geo.lookup(ip)).toEqual(expected);
  });

  // The database says AU for 203.0.113/24, 192.168/16 and 198.51.100/24, JP for 2001:db8::/32.
  it.each([
    '127.0.0.1',
    '203.0.113.5',
    '192.168.1.1',
    '198.51.100.1',
    '172.16.0.1',
    '10.0.0.1',
    '100.64.0.1',
    '169.254.1.1',
    '192.0.2.1',
    '198.18.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '240.0.0.1',
    '255.255.255.255',
    '2001:db8::1',
    '::1',
    '::',
    'fe80::1',
    'fe80::1%eth0',
    'fd00::1',
    'ff02::1',
    '64:ff9b::808:808',
    '2002:808:808::1',
    '3fff::1',
    '::ffff:127.0.0.1',
  ])('%s is special', (ip) => {
    expect(geo.lookup(ip)).toEqual(special);
  });

  it('answers IPv4-mapped IPv6 like the IPv4 address', () => {
    expect(geo.lookup('::ffff:8.8.8.8')).toEqual(db('US'));
    expect(geo.lookup('::ffff:49.96.0.1')).toEqual(db('JP'));
    expect(geo.lookup('::FFFF:808:808')).toEqual(db('US'));
  });

  it.each(['', 'localhost', '1.2.3', '1.2.3.256', '01.2.3.4', '8.8.8.8/32', 'gg::1', ' 8.8.8.8'])(
    'answers none for the invalid address %j',
    (ip) => {
      expect(geo.lookup(ip)).toEqual(none);
    },
  );

  it('returns shared frozen answers', () => {
    const a = geo.lookup('1.66.0.1');
    expect(geo.lookup('49.96.0.1')).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
  });

  it('describes the database', () => {
    expect(geo.database).toMatchObject({ path: BUNDLED_DB, ipVersion: 6, databaseType: 'country ipvAll' });
  });
});

describe('overrides', () => {
  let geo: Geo;
  beforeAll(async () => {
    geo = await Geo.open({
      ...base,
      overrides: [
        { cidr: '203.0.113.0/24', country: 'jp' },
        // A known VPN exit inside Japanese address space.
        { cidr: '1.66.0.0/24', country: 'NL', asn: 64500, org: 'Example VPN' },
        // Nested: a whole range pinned, a block inside it carved out, a host inside that back.
        { cidr: '49.96.0.0/12', country: 'JP', asn: 9605, org: 'NTT DOCOMO' },
        { cidr: '49.100.0.0/16', country: 'US' },
        { cidr: '49.100.7.7', country: 'JP' },
        // The bundled database says AU for all of KDDI's 2001:268::/32.
        { cidr: '2001:268::/32', country: 'JP', asn: 2516, org: 'KDDI' },
      ],
    });
  });

  it('can make a special-purpose range domestic', () => {
    expect(geo.lookup('203.0.113.5')).toEqual({ country: 'JP', location: 'domestic', source: 'override' });
    expect(geo.lookup('::ffff:203.0.113.5')).toMatchObject({ country: 'JP', source: 'override' });
    expect(geo.lookup('203.0.114.5').source).toBe('database'); // just outside the block
  });

  it('can make a Japanese address overseas', () => {
    expect(geo.lookup('1.66.0.1')).toEqual({
      country: 'NL',
      location: 'overseas',
      source: 'override',
      asn: 64500,
      org: 'Example VPN',
    });
    expect(geo.lookup('1.66.1.1')).toEqual(db('JP'));
  });

  it('lets the most specific block win', () => {
    expect(geo.lookup('49.96.0.1')).toEqual({
      country: 'JP',
      location: 'domestic',
      source: 'override',
      asn: 9605,
      org: 'NTT DOCOMO',
    });
    expect(geo.lookup('49.100.0.1')).toEqual({ country: 'US', location: 'overseas', source: 'override' });
    expect(geo.lookup('49.100.7.7')).toEqual({ country: 'JP', location: 'domestic', source: 'override' });
  });

  it('pins an IPv6 carrier range', () => {
    expect(geo.lookup('2001:268:1::1')).toEqual({
      country: 'JP',
      location: 'domestic',
      source: 'override',
      asn: 2516,
      org: 'KDDI',
    });
    expect(geo.lookup('2001:269::1').source).toBe('database');
  });

  it.each([
    [{ cidr: '203.0.113.5/24', country: 'JP' }, 'geo.overrides[0].cidr: not a CIDR: "203.0.113.5/24"'],
    [{ cidr: '10.0.0.0/8', country: 'Japan' }, 'geo.overrides[0].country: not an ISO 3166-1 alpha-2'],
    [{ cidr: '10.0.0.0/8', country: 'JP', asn: -1 }, 'geo.overrides[0].asn: not an AS number: -1'],
  ])('refuses %j', async (override, message) => {
    await expect(Geo.open({ ...base, overrides: [override] })).rejects.toThrow(message);
  });

  it('refuses the same block twice', async () => {
    const overrides = [
      { cidr: '10.0.0.0/8', country: 'JP' },
      { cidr: '::ffff:10.0.0.0/104', country: 'US' },
    ];
    await expect(Geo.open({ ...base, overrides })).rejects.toThrow(
      new ConfigError('geo.overrides: duplicate CIDR: "::ffff:10.0.0.0/104"'),
    );
  });
});

describe('domesticCountries and unknownCountry', () => {
  it('sends unknown addresses to the configured side', async () => {
    const home = await Geo.open({ ...base, unknownCountry: 'domestic' });
    expect(home.lookup('127.0.0.1')).toEqual({ country: null, location: 'domestic', source: 'special' });
    expect(home.lookup('not an ip')).toEqual({ country: null, location: 'domestic', source: 'none' });
    expect(home.lookup('8.8.8.8').location).toBe('overseas');

    const away = await Geo.open({ ...base, unknownCountry: 'overseas' });
    expect(away.lookup('127.0.0.1')).toEqual(special);
    expect(away.lookup('not an ip')).toEqual(none);
  });

  it('accepts several domestic countries in any case', async () => {
    const geo = await Geo.open({ ...base, domesticCountries: ['us', 'JP'] });
    expect(geo.lookup('8.8.8.8')).toEqual({ country: 'US', location: 'domestic', source: 'database' });
    expect(geo.lookup('1.66.0.1').location).toBe('domestic');
  });

  it('refuses a bad country code', async () => {
    await expect(Geo.open({ ...base, domesticCountries: ['JPN'] })).rejects.toThrow(
      'geo.domesticCountries[0]: not an ISO 3166-1 alpha-2 country code: "JPN"',
    );
  });
});

describe('database files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mailgate-geo-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names the option and the path when the file is missing', async () => {
    const path = join(dir, 'missing.mmdb');
    const open = Geo.open({ ...base, countryDb: path });
    await expect(open).rejects.toBeInstanceOf(ConfigError);
    await expect(open).rejects.toThrow(`geo.countryDb: cannot open ${path}: ENOENT`);
  });

  it('refuses a file that is not an mmdb', async () => {
    const path = join(dir, 'junk.mmdb');
    await writeFile(path, 'not a database');
    await expect(Geo.open({ ...base, countryDb: path })).rejects.toThrow(
      `geo.countryDb: cannot open ${path}`,
    );
  });

  it('reads a path relative to the working directory', async () => {
    const geo = await Geo.open({
      ...base,
      countryDb: join('node_modules', BUNDLED_DB.split('node_modules/')[1]!),
    });
    expect(geo.database.path).toBe(BUNDLED_DB);
  });

  it('keeps the old database when a reload fails, and takes the new one when it works', async () => {
    const path = join(dir, 'reload.mmdb');
    await copyFile(BUNDLED_DB, path);
    const geo = await Geo.open({ ...base, countryDb: path });
    expect(geo.lookup('8.8.8.8').country).toBe('US');

    await writeFile(path, 'truncated');
    await expect(geo.reload()).rejects.toThrow(`geo.countryDb: cannot open ${path}`);
    expect(geo.lookup('8.8.8.8').country).toBe('US');
    await rm(path);
    await expect(geo.reload()).rejects.toThrow(/ENOENT/);
    expect(geo.lookup('49.96.0.1').country).toBe('JP');

    await writeFile(path, countryMmdb('geoip2', { '0.0.0.0/5': 'DE', '8.0.0.0/5': 'FR' }));
    await geo.reload();
    expect(geo.lookup('8.8.8.8')).toEqual(db('FR'));
    expect(geo.lookup('1.66.0.1')).toEqual(db('DE'));
    expect(geo.database.databaseType).toBe('Test-Country');
  });

  it('reads GeoIP2/GeoLite2 records (country.iso_code)', async () => {
    const path = join(dir, 'geoip2.mmdb');
    await writeFile(
      path,
      countryMmdb('geoip2', { '0.0.0.0/5': 'JP', '8.0.0.0/5': 'US', '16.0.0.0/4': 'registered-only:JP' }),
    );
    const geo = await Geo.open({ ...base, countryDb: path });
    expect(geo.lookup('1.66.0.1')).toEqual(db('JP'));
    expect(geo.lookup('8.8.8.8')).toEqual(db('US'));
    // Where the owner is registered is not where the client is.
    expect(geo.lookup('16.0.0.1')).toEqual(none);
    expect(geo.lookup('128.0.0.1')).toEqual(none);
    // An IPv4-only file answers IPv6 queries with garbage; they get no answer instead.
    expect(geo.lookup('2001:240::1')).toEqual(none);
  });

  it('reads ip-location-db records (country_code)', async () => {
    const path = join(dir, 'flat.mmdb');
    await writeFile(path, countryMmdb('flat', { '0.0.0.0/5': 'JP', '8.0.0.0/5': 'US' }));
    const geo = await Geo.open({ ...base, countryDb: path });
    expect(geo.lookup('1.66.0.1')).toEqual(db('JP'));
    expect(geo.lookup('8.8.8.8')).toEqual(db('US'));
  });

  it('refuses a database without country records (e.g. an ASN file)', async () => {
    const path = join(dir, 'asn.mmdb');
    await writeFile(path, countryMmdb('asn', { '0.0.0.0/5': 'JP', '8.0.0.0/5': 'US' }));
    await expect(Geo.open({ ...base, countryDb: path })).rejects.toThrow(/not a country database/);
  });

  it('guards IPv6 lookups in the bundled IPv4-only file', async () => {
    const geo = await Geo.open({ ...base, countryDb: join(BUNDLED_DIR, 'geo-whois-asn-country-ipv4.mmdb') });
    expect(geo.lookup('49.96.0.1')).toEqual(db('JP'));
    expect(geo.lookup('2001:240::1')).toEqual(none);
  });
});

/**
 * A tiny IPv4 MaxMind DB (format 2.0, 24-bit records) with one record per block. Blocks must
 * be disjoint and their prefixes at most 8 bits long; everything else has no data. Record
 * shapes: 'geoip2' `{country:{iso_code}}` (or `{registered_country:{iso_code}}` for values
 * written `registered-only:CC`), 'flat' `{country_code}`, 'asn' `{autonomous_system_number}`.
 * Spec: https://maxmind.github.io/MaxMind-DB/
 */
function countryMmdb(shape: 'geoip2' | 'flat' | 'asn', blocks: Record<string, string>): Buffer {
  const str = (s: string): Buffer => Buffer.concat([Buffer.from([0x40 | s.length]), Buffer.from(s)]);
  const map = (entries: [string, Buffer][]): Buffer =>
    Buffer.concat([Buffer.from([0xe0 | entries.length]), ...entries.flatMap(([k, v]) => [str(k), v])]);
  const uint = (type: 'u16' | 'u32', n: number): Buffer => {
    const size = type === 'u16' ? 2 : 4;
    const bytes = Buffer.alloc(size);
    bytes.writeUIntBE(n, 0, size);
    return Buffer.concat([Buffer.from([(type === 'u16' ? 0xa0 : 0xc0) | size]), bytes]);
  };
  const record = (value: string): Buffer => {
    if (shape === 'flat') return map([['country_code', str(value)]]);
    if (shape === 'asn') return map([['autonomous_system_number', uint('u32', 64500)]]);
    const registered = value.startsWith('registered-only:');
    const iso = map([['iso_code', str(registered ? value.slice(16) : value)]]);
    return map([[registered ? 'registered_country' : 'country', iso]]);
  };

  // A full binary tree over the first 8 bits (255 nodes), leaves pointing at data or nothing.
  const DEPTH = 8;
  const nodeCount = 2 ** DEPTH - 1;
  const leaves: (number | null)[] = new Array(2 ** DEPTH).fill(null);
  const data: Buffer[] = [];
  let dataSize = 0;
  for (const [cidr, value] of Object.entries(blocks)) {
    const [address, prefix] = cidr.split('/') as [string, string];
    const first = Number(address.split('.')[0]);
    const span = 2 ** (DEPTH - Number(prefix));
    for (let i = first; i < first + span; i++) leaves[i] = dataSize;
    const encoded = record(value);
    data.push(encoded);
    dataSize += encoded.length;
  }
  const tree = Buffer.alloc(nodeCount * 6);
  for (let node = 0; node < nodeCount; node++) {
    for (const side of [0, 1]) {
      const child = 2 * node + 1 + side; // heap layout: children of n are 2n+1 and 2n+2
      let value: number;
      if (child < nodeCount) value = child;
      else {
        const leaf = leaves[child - nodeCount];
        value = leaf === null || leaf === undefined ? nodeCount : nodeCount + 16 + leaf;
      }
      tree.writeUIntBE(value, node * 6 + side * 3, 3);
    }
  }
  const metadata = map([
    ['node_count', uint('u32', nodeCount)],
    ['record_size', uint('u16', 24)],
    ['ip_version', uint('u16', 4)],
    ['database_type', str('Test-Country')],
    ['binary_format_major_version', uint('u16', 2)],
    ['binary_format_minor_version', uint('u16', 0)],
    ['build_epoch', uint('u32', 1_781_740_800)],
    ['languages', Buffer.from([0x00, 0x04])], // empty array (extended type 11)
    ['description', map([])],
  ]);
  return Buffer.concat([
    tree,
    Buffer.alloc(16),
    ...data,
    Buffer.from('abcdef4d61784d696e642e636f6d', 'hex'),
    metadata,
  ]);
}
