import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { AsnMmdb, AsnTable, buildAsnTable, bundledAsnFiles, loadBundledAsnTable } from '../../src/geo/asn.js';
import { Geo } from '../../src/geo/geo.js';
import { parseIp } from '../../src/net/cidr.js';
import { ConfigError } from '../../src/util/errors.js';

const enc = (s: string) => new TextEncoder().encode(s);
const ip = (text: string) => parseIp(text)!;

/** The decimal form the -num.csv files use. */
function num(addr: string): string {
  const a = ip(addr);
  if (a.family === 4) return String(a.value);
  return a.hextets.reduce((n, h) => (n << 16n) | BigInt(h), 0n).toString();
}
const row = (from: string, to: string, rest: string) => `${num(from)},${num(to)},${rest}`;

describe('buildAsnTable on small files', () => {
  const v4 = [
    row('1.0.0.0', '1.0.0.255', '13335,"Cloudflare, Inc."'),
    row('2.26.196.0', '2.26.211.255', '201907,"LLC ""SPUTNIK"""'),
    // The next range starts inside this one: this one is cut short (as in the real file).
    row('214.95.0.0', '215.0.255.255', '749,United States Department of Defense (DoD)'),
    row('215.0.0.0', '215.1.3.255', '721,DoD Network Information Center'),
    row('255.255.255.0', '255.255.255.255', '64512,'),
  ].join('\r\n');
  const v6 = [
    row('2001::', '2001:0:ffff:ffff:ffff:ffff:ffff:ffff', '6939,Hurricane Electric LLC'),
    row('2001:4860::', '2001:4860:ffff:ffff:ffff:ffff:ffff:ffff', '15169,Google LLC'),
    row('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', '1,top'),
  ].join('\n');
  const table = new AsnTable(buildAsnTable(enc(v4), enc(v6)));

  it('reads numbers, quoted organisations and doubled quotes', () => {
    expect(table.lookup(ip('1.0.0.0'))).toEqual({ asn: 13335, org: 'Cloudflare, Inc.' });
    expect(table.lookup(ip('1.0.0.255'))).toEqual({ asn: 13335, org: 'Cloudflare, Inc.' });
    expect(table.lookup(ip('2.26.196.1'))).toEqual({ asn: 201907, org: 'LLC "SPUTNIK"' });
    expect(table.lookup(ip('255.255.255.255'))).toEqual({ asn: 64512, org: null });
    expect(table.ranges).toEqual({ v4: 5, v6: 3, providers: 8 });
  });

  it('answers null between and outside ranges', () => {
    expect(table.lookup(ip('0.255.255.255'))).toBeNull();
    expect(table.lookup(ip('1.0.1.0'))).toBeNull();
    expect(table.lookup(ip('2001:1::1'))).toBeNull();
  });

  it('cuts a range short where the next one starts inside it', () => {
    expect(table.lookup(ip('214.95.0.1'))?.asn).toBe(749);
    expect(table.lookup(ip('214.255.255.255'))?.asn).toBe(749);
    expect(table.lookup(ip('215.0.0.1'))?.asn).toBe(721);
  });

  it('compares IPv6 addresses on all 128 bits', () => {
    expect(table.lookup(ip('2001::1'))?.asn).toBe(6939);
    expect(table.lookup(ip('2001:0:ffff:ffff:ffff:ffff:ffff:ffff'))?.asn).toBe(6939);
    expect(table.lookup(ip('2001:4860:4860::8888'))).toEqual({ asn: 15169, org: 'Google LLC' });
    expect(table.lookup(ip('2001:4860:ffff:ffff:ffff:ffff:ffff:ffff'))?.asn).toBe(15169);
    expect(table.lookup(ip('2001:4861::'))).toBeNull();
    expect(table.lookup(ip('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'))?.asn).toBe(1);
    expect(table.lookup(ip('ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe'))).toBeNull();
  });

  it('returns the same frozen answer every time (no allocation per lookup)', () => {
    const a = table.lookup(ip('1.0.0.1'));
    expect(table.lookup(ip('1.0.0.200'))).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
  });
});

describe('the bundled table (@ip-location-db/asn, built in a worker thread)', () => {
  let table: AsnTable;
  let ms: number;
  beforeAll(async () => {
    ({ table, ms } = await loadBundledAsnTable());
  });

  // Reference answers from FIELD-NOTES.
  it.each([
    ['49.96.0.1', 9605, 'NTT DOCOMO, INC.'],
    ['8.8.8.8', 15169, 'Google LLC'],
    ['1.1.1.1', 13335, 'Cloudflare, Inc.'],
    // IPv6 of the same providers: the same AS, so one provider for login notifications (rules.md R11).
    ['240a:2:c90::1', 9605, 'NTT DOCOMO, INC.'],
    ['2001:4860:4860::8888', 15169, 'Google LLC'],
    ['::ffff:8.8.8.8', 15169, 'Google LLC'],
  ])('%s is AS%i %s', (addr, asn, org) => {
    expect(table.lookup(ip(addr))).toEqual({ asn, org });
  });

  it('loads in seconds, off the main thread, into about 12 MB of arrays', () => {
    expect(ms).toBeLessThan(10_000);
    expect(table.bytes).toBeLessThan(20_000_000);
    expect(table.ranges.v4).toBeGreaterThan(300_000);
    expect(table.ranges.v6).toBeGreaterThan(50_000);
  });

  it('agrees with the textual CSV on a sample of ranges (both ends)', () => {
    const dir = dirname(bundledAsnFiles().v4);
    for (const file of ['asn-ipv4.csv', 'asn-ipv6.csv']) {
      const lines = readFileSync(join(dir, file), 'utf8').split('\n');
      for (let i = 0; i < lines.length; i += 211) {
        const [start, end, asn] = lines[i]!.split(',');
        if (!start || !end) continue;
        expect(table.lookup(ip(start))?.asn, `${file} ${start}`).toBe(Number(asn));
        if (start !== '214.95.0.0') expect(table.lookup(ip(end))?.asn, `${file} ${end}`).toBe(Number(asn));
      }
    }
  });

  it('is shared by every load in the process', async () => {
    expect((await loadBundledAsnTable()).table).toBe(table);
  });
});

describe('Geo.provider', () => {
  it('prefers an override with an AS number, and answers nothing for special-purpose addresses', async () => {
    const geo = await Geo.open({
      countryDb: 'bundled',
      asnDb: 'bundled',
      domesticCountries: ['JP'],
      unknownCountry: 'overseas',
      overrides: [
        { cidr: '203.0.113.0/24', country: 'JP', asn: 64500, org: 'carrier network' },
        { cidr: '198.51.100.0/24', country: 'US' },
      ],
    });
    await geo.providersReady;
    expect(geo.provider('203.0.113.9')).toEqual({ asn: 64500, org: 'carrier network' });
    expect(geo.provider('203.0.113.10')).toBe(geo.provider('203.0.113.9'));
    expect(geo.provider('198.51.100.1')).toBeNull();
    expect(geo.provider('127.0.0.1')).toBeNull();
    expect(geo.provider('10.1.2.3')).toBeNull();
    expect(geo.provider('not an address')).toBeNull();
    expect(geo.provider('49.96.0.1')?.asn).toBe(9605);
    // lookup() itself is unchanged: the country only.
    expect(geo.lookup('49.96.0.1')).toEqual({ country: 'JP', location: 'domestic', source: 'database' });
  });

  it("asnDb 'none': no provider facts", async () => {
    const geo = await Geo.open({
      countryDb: 'bundled',
      asnDb: 'none',
      domesticCountries: ['JP'],
      unknownCountry: 'overseas',
      overrides: [],
    });
    expect(await geo.providersReady).toBeNull();
    expect(geo.provider('8.8.8.8')).toBeNull();
  });

  it('an .mmdb that is not an ASN database is refused, naming the key', async () => {
    const countryDb = join(
      dirname(bundledAsnFiles().v4),
      '..',
      'geo-whois-asn-country-mmdb',
      'geo-whois-asn-country.mmdb',
    );
    await expect(AsnMmdb.open(countryDb)).rejects.toThrow(ConfigError);
    await expect(AsnMmdb.open(countryDb)).rejects.toThrow(/^geo.asnDb: .* not an ASN database/);
    await expect(AsnMmdb.open('/nonexistent.mmdb')).rejects.toThrow(/^geo.asnDb: cannot open/);
  });
});
