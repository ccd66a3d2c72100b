/**
 * Country of a client address: operator overrides, then special-purpose ranges, then an .mmdb
 * country database. Answers are precomputed, frozen objects shared between calls, so a lookup
 * allocates nothing beyond what the mmdb reader does.
 */
import { createRequire } from 'node:module';
import { resolve as resolvePath } from 'node:path';
import maxmind, { type Reader, type Response } from 'maxmind';
import { CidrError, CidrMap, parseCidr, parseIp } from '../net/cidr.js';
import { ConfigError } from '../util/errors.js';
import { AsnMmdb, loadBundledAsnTable, type Provider, type ProviderSource } from './asn.js';

export type { Provider } from './asn.js';

export type Location = 'domestic' | 'overseas';

export interface GeoAnswer {
  /** ISO 3166-1 alpha-2, upper case; null when unknown or special-purpose. */
  readonly country: string | null;
  readonly location: Location;
  readonly source: 'override' | 'database' | 'special' | 'none';
  /** Only from overrides: the country databases carry no AS data. */
  readonly asn?: number;
  readonly org?: string;
}

export interface GeoOptions {
  /**
   * `'bundled'` for the ip-location-db file shipped in node_modules (demos and tests), or the
   * path of a GeoIP2/GeoLite2-Country (or -City) .mmdb or an ip-location-db country .mmdb.
   * A relative path is taken from the process's working directory.
   */
  countryDb: string;
  /** ISO 3166-1 alpha-2 codes, any case, e.g. `['JP']`. */
  domesticCountries: readonly string[];
  /** Location for addresses without a country: special-purpose, not in the database, invalid. */
  unknownCountry: Location;
  /**
   * Provider (AS) facts for `provider()`: `'bundled'` (the @ip-location-db/asn table, built in
   * a worker thread after open; no provider until it is loaded), `'none'`, or the path of a
   * GeoLite2-ASN / GeoIP2-ISP .mmdb (opened before open() returns). Default `'none'`.
   */
  asnDb?: string | undefined;
  /** `| undefined` so that a schema's parsed output (optional keys present as undefined) fits. */
  overrides: ReadonlyArray<{
    cidr: string;
    country: string;
    asn?: number | undefined;
    org?: string | undefined;
  }>;
}

export interface ProvidersReady {
  source: string;
  /** From open() to the source answering. */
  ms: number;
  /** Memory of the bundled table's arrays; null for an .mmdb (maxmind reads the file). */
  bytes: number | null;
}

export interface GeoDatabaseInfo {
  readonly path: string;
  readonly databaseType: string;
  readonly buildEpoch: Date;
  readonly ipVersion: number;
}

/** `countryDb: 'bundled'` resolves to this file of the package (CC BY 4.0, data by the NRO/RIRs). */
const BUNDLED_DB = '@ip-location-db/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb';

/**
 * Addresses that are never looked up in the database: they are not globally routable or do not
 * identify a place, and the bundled database answers some of them wrongly (AU for 192.168/16,
 * 203.0.113/24; JP for 2001:db8::/32). Sources: the IANA IPv4 and IPv6 Special-Purpose Address
 * Registries (RFC 6890) and RFC 4291 §2.4.
 */
export const SPECIAL_PURPOSE_CIDRS: readonly string[] = Object.freeze([
  '0.0.0.0/8', // "this network", RFC 791
  '10.0.0.0/8', // private, RFC 1918
  '100.64.0.0/10', // shared address space (CGNAT), RFC 6598
  '127.0.0.0/8', // loopback, RFC 1122
  '169.254.0.0/16', // link-local, RFC 3927
  '172.16.0.0/12', // private, RFC 1918
  '192.0.0.0/24', // IETF protocol assignments, RFC 6890
  '192.0.2.0/24', // TEST-NET-1, RFC 5737
  '192.88.99.0/24', // deprecated 6to4 relay anycast, RFC 7526
  '192.168.0.0/16', // private, RFC 1918
  '198.18.0.0/15', // benchmarking, RFC 2544
  '198.51.100.0/24', // TEST-NET-2, RFC 5737
  '203.0.113.0/24', // TEST-NET-3, RFC 5737
  '224.0.0.0/4', // multicast, RFC 5771
  '240.0.0.0/4', // reserved, RFC 1112 (includes 255.255.255.255)
  // IPv6 outside 2000::/3, the only space allocated for global unicast (RFC 4291 §2.4): ::,
  // ::1, IPv4-compatible, NAT64 64:ff9b::/96 (RFC 6052), discard 100::/64 (RFC 6666), SRv6
  // 5f00::/16 (RFC 9602), ULA fc00::/7 (RFC 4193), link-local fe80::/10, multicast ff00::/8.
  '::/3',
  '4000::/2',
  '8000::/1',
  '2001::/23', // IETF protocol assignments: Teredo, benchmarking, ORCHID (RFC 2928)
  '2001:db8::/32', // documentation, RFC 3849
  '2002::/16', // 6to4, RFC 3056
  '3fff::/20', // documentation, RFC 9637
]);

const COUNTRY_CODE_RE = /^[A-Za-z]{2}$/;
const MAX_ASN = 0xffffffff;
/** A well-known address used at open to check that a database has country records at all. */
const PROBE_IP = '8.8.8.8';

export class Geo {
  readonly #path: string;
  #reader: Reader<Response>;
  readonly #domestic: ReadonlySet<string>;
  readonly #overrides: CidrMap<GeoAnswer>;
  /**
   * Not a net.BlockList: its check(string) builds a native SocketAddress per call and ran at
   * ~0.7 M/s here, half the speed of the mmdb lookup itself; a CidrMap on the address parsed
   * once for all steps is a few Map.get calls.
   */
  readonly #special = new CidrMap(SPECIAL_PURPOSE_CIDRS.map((cidr) => ({ cidr, value: true })));
  readonly #specialAnswer: GeoAnswer;
  readonly #noneAnswer: GeoAnswer;
  /** One frozen answer per country code seen in the database. */
  readonly #byCountry = new Map<string, GeoAnswer>();
  /** Null until the bundled ASN table has loaded, or when asnDb is 'none'. */
  #providers: ProviderSource | null = null;
  #asnPath: string | null = null;
  /** Provider answers of overrides that give an AS number, one per override. */
  readonly #overrideProviders = new Map<GeoAnswer, Provider>();
  /** Resolves when the provider source answers (null: none configured); rejects if it cannot load. */
  providersReady: Promise<ProvidersReady | null> = Promise.resolve(null);

  private constructor(path: string, reader: Reader<Response>, opts: GeoOptions) {
    this.#path = path;
    this.#reader = reader;
    this.#domestic = new Set(
      opts.domesticCountries.map((code, i) => countryCode(code, `geo.domesticCountries[${i}]`)),
    );
    const unknown = opts.unknownCountry;
    this.#specialAnswer = Object.freeze({ country: null, location: unknown, source: 'special' });
    this.#noneAnswer = Object.freeze({ country: null, location: unknown, source: 'none' });
    this.#overrides = this.#buildOverrides(opts.overrides);
  }

  /** @throws ConfigError naming the option that cannot be used (missing file, bad CIDR, ...). */
  static async open(opts: GeoOptions): Promise<Geo> {
    const path = resolveDbPath(opts.countryDb);
    const geo = new Geo(path, await openReader(path), opts);
    const asnDb = opts.asnDb ?? 'none';
    if (asnDb === 'bundled') {
      // Not awaited: logins go on (provider unknown) while the worker builds the table.
      geo.providersReady = loadBundledAsnTable().then((load) => {
        geo.#providers = load.table;
        return { source: load.table.description, ms: load.ms, bytes: load.table.bytes };
      });
      // Callers that await it see a failure; the provider then stays unknown.
      geo.providersReady.catch(() => {});
    } else if (asnDb !== 'none') {
      const started = performance.now();
      geo.#asnPath = asnDb;
      geo.#providers = await AsnMmdb.open(asnDb);
      geo.providersReady = Promise.resolve({ source: asnDb, ms: performance.now() - started, bytes: null });
    }
    return geo;
  }

  /**
   * The provider (AS number and organisation) of a client address: an override's `asn`, else
   * the ASN source. Null for special-purpose addresses, addresses in no known range, and while
   * the bundled table is still loading. Allocates nothing once an AS has been seen.
   */
  provider(ip: string): Provider | null {
    const addr = parseIp(ip);
    if (addr === null) return null;
    const override = this.#overrides.getParsed(addr);
    if (override?.asn !== undefined) {
      let p = this.#overrideProviders.get(override);
      if (p === undefined) {
        p = Object.freeze({ asn: override.asn, org: override.org ?? null });
        this.#overrideProviders.set(override, p);
      }
      return p;
    }
    if (this.#special.getParsed(addr) === true) return null;
    return this.#providers?.lookup(addr) ?? null;
  }

  /** Never throws: an invalid address gets `source: 'none'`. */
  lookup(ip: string): GeoAnswer {
    // Parsed once for all steps; IPv4-mapped IPv6 comes out as IPv4 (as normalizeIp does).
    const addr = parseIp(ip);
    if (addr === null) return this.#noneAnswer;
    const override = this.#overrides.getParsed(addr);
    if (override !== undefined) return override;
    if (this.#special.getParsed(addr) === true) return this.#specialAnswer;
    const reader = this.#reader;
    // An IPv4-only database answers IPv6 queries with garbage rather than an error.
    if (addr.family === 6 && reader.metadata.ipVersion === 4) return this.#noneAnswer;
    const code = countryOf(reader.get(addr.text));
    if (code === null) return this.#noneAnswer;
    return this.#byCountry.get(code) ?? this.#countryAnswer(code);
  }

  /**
   * Re-reads the database file (for SIGHUP). If the new file cannot be used, the current one
   * stays in service and the returned promise rejects with a ConfigError.
   */
  async reload(): Promise<void> {
    this.#reader = await openReader(this.#path);
    if (this.#asnPath !== null) this.#providers = await AsnMmdb.open(this.#asnPath);
  }

  get database(): GeoDatabaseInfo {
    const { databaseType, buildEpoch, ipVersion } = this.#reader.metadata;
    return { path: this.#path, databaseType, buildEpoch, ipVersion };
  }

  #locationOf(country: string): Location {
    return this.#domestic.has(country) ? 'domestic' : 'overseas';
  }

  #countryAnswer(raw: string): GeoAnswer {
    const country = raw.toUpperCase();
    const answer: GeoAnswer = Object.freeze({
      country,
      location: this.#locationOf(country),
      source: 'database',
    });
    this.#byCountry.set(raw, answer);
    return answer;
  }

  #buildOverrides(overrides: GeoOptions['overrides']): CidrMap<GeoAnswer> {
    const entries = overrides.map((o, i) => {
      const key = `geo.overrides[${i}]`;
      try {
        parseCidr(o.cidr);
      } catch (err) {
        throw new ConfigError(`${key}.cidr: ${(err as Error).message}`);
      }
      const country = countryCode(o.country, `${key}.country`);
      const answer: { -readonly [K in keyof GeoAnswer]: GeoAnswer[K] } = {
        country,
        location: this.#locationOf(country),
        source: 'override',
      };
      if (o.asn !== undefined) {
        if (!Number.isInteger(o.asn) || o.asn < 0 || o.asn > MAX_ASN) {
          throw new ConfigError(`${key}.asn: not an AS number: ${o.asn}`);
        }
        answer.asn = o.asn;
      }
      if (o.org !== undefined) answer.org = o.org;
      return { cidr: o.cidr, value: Object.freeze(answer) as GeoAnswer };
    });
    try {
      return new CidrMap(entries);
    } catch (err) {
      if (err instanceof CidrError) throw new ConfigError(`geo.overrides: ${err.message}`);
      throw err;
    }
  }
}

function countryCode(code: string, key: string): string {
  if (!COUNTRY_CODE_RE.test(code)) {
    throw new ConfigError(`${key}: not an ISO 3166-1 alpha-2 country code: ${JSON.stringify(code)}`);
  }
  return code.toUpperCase();
}

function resolveDbPath(countryDb: string): string {
  if (countryDb !== 'bundled') return resolvePath(countryDb);
  try {
    return createRequire(import.meta.url).resolve(BUNDLED_DB);
  } catch (err) {
    throw withCause(new ConfigError(`geo.countryDb: cannot open bundled database: ${errorText(err)}`), err);
  }
}

async function openReader(path: string): Promise<Reader<Response>> {
  let reader: Reader<Response>;
  try {
    reader = await maxmind.open<Response>(path);
  } catch (err) {
    throw withCause(new ConfigError(`geo.countryDb: cannot open ${path}: ${errorText(err)}`), err);
  }
  const probe: unknown = reader.get(PROBE_IP);
  if (probe !== null && countryOf(probe) === null && !hasKey(probe, 'registered_country')) {
    throw new ConfigError(
      `geo.countryDb: cannot open ${path}: not a country database ` +
        `(type ${JSON.stringify(reader.metadata.databaseType)}: no country in its record for ${PROBE_IP})`,
    );
  }
  return reader;
}

/**
 * The country of a record in either shape: GeoIP2/GeoLite2 (`country.iso_code`) or
 * ip-location-db (`country_code`). `registered_country` is deliberately not used as a fallback:
 * it is where the network's owner is registered, not where the client is.
 */
function countryOf(record: unknown): string | null {
  if (typeof record !== 'object' || record === null) return null;
  const { country_code: flat, country } = record as { country_code?: unknown; country?: unknown };
  if (typeof flat === 'string' && flat !== '') return flat;
  if (typeof country === 'object' && country !== null) {
    const iso = (country as { iso_code?: unknown }).iso_code;
    if (typeof iso === 'string' && iso !== '') return iso;
  }
  return null;
}

function hasKey(value: unknown, key: string): boolean {
  return typeof value === 'object' && value !== null && key in value;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withCause<E extends Error>(error: E, cause: unknown): E {
  error.cause = cause;
  return error;
}
