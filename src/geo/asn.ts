/**
 * Provider facts (rules.md R11): the AS number and organisation of a client address.
 *
 * Two sources:
 * - an operator's GeoLite2-ASN or GeoIP2-ISP .mmdb (`geo.asnDb: /path/file.mmdb`), read with
 *   `maxmind` like the country database;
 * - by default (`geo.asnDb: bundled`) a compact table built from the CSV files of
 *   `@ip-location-db/asn` (CC BY 4.0: RouteViews, DB-IP, NRO). No ASN .mmdb is on npm, so the
 *   ~32 MB of CSV is parsed at start into sorted typed arrays. The parse runs in a worker
 *   thread that hands the arrays over (transferred, not copied), so logins are never blocked;
 *   until the table is there, the provider is unknown.
 *
 * A lookup is a binary search over a Uint32Array: no allocation once an answer for that AS has
 * been made (one frozen object per AS, built on first use).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import maxmind, { type Reader, type Response } from 'maxmind';
import type { ParsedIp } from '../net/cidr.js';
import { ConfigError } from '../util/errors.js';

export interface Provider {
  readonly asn: number;
  /** The AS's organisation name; null when the source has none. */
  readonly org: string | null;
}

export interface ProviderSource {
  /** Never throws; null when the address is in no known range. */
  lookup(addr: ParsedIp): Provider | null;
  readonly description: string;
}

/** The typed arrays a table is made of; all of them are transferable between threads. */
export interface AsnTableParts {
  /** IPv4 ranges, sorted by start, not overlapping, inclusive. */
  v4Start: Uint32Array;
  v4End: Uint32Array;
  /** Index into `asn` / `orgOffsets` per range. */
  v4Provider: Uint32Array;
  /** IPv6 ranges: 4 big-endian 32-bit words per address. */
  v6Start: Uint32Array;
  v6End: Uint32Array;
  v6Provider: Uint32Array;
  /** AS number per provider index. */
  asn: Uint32Array;
  /** Organisation of provider i: UTF-8 bytes orgBytes[orgOffsets[i] .. orgOffsets[i+1]). */
  orgOffsets: Uint32Array;
  orgBytes: Uint8Array;
}

const decoder = new TextDecoder();

export class AsnTable implements ProviderSource {
  readonly #t: AsnTableParts;
  readonly #answers: Array<Provider | undefined>;
  /** Scratch words for an IPv6 key: one lookup at a time on this thread. */
  readonly #key = new Uint32Array(4);
  readonly description: string;

  constructor(parts: AsnTableParts, description = 'table') {
    this.#t = parts;
    this.#answers = new Array<Provider | undefined>(parts.asn.length);
    this.description = description;
  }

  get ranges(): { v4: number; v6: number; providers: number } {
    return { v4: this.#t.v4Start.length, v6: this.#t.v6Provider.length, providers: this.#t.asn.length };
  }

  /** Bytes held by the table's arrays (outside the JS heap: ArrayBuffers). */
  get bytes(): number {
    const t = this.#t;
    return [t.v4Start, t.v4End, t.v4Provider, t.v6Start, t.v6End, t.v6Provider, t.asn, t.orgOffsets].reduce(
      (n, a) => n + a.byteLength,
      t.orgBytes.byteLength,
    );
  }

  lookup(addr: ParsedIp): Provider | null {
    const t = this.#t;
    if (addr.family === 4) {
      const x = addr.value;
      // Last range whose start <= x.
      let lo = 0;
      let hi = t.v4Start.length - 1;
      let found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        if (t.v4Start[mid]! <= x) {
          found = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      if (found < 0 || x > t.v4End[found]!) return null;
      return this.#answer(t.v4Provider[found]!);
    }
    const k = this.#key;
    const h = addr.hextets;
    for (let i = 0; i < 4; i++) k[i] = ((h[2 * i]! << 16) | h[2 * i + 1]!) >>> 0;
    let lo = 0;
    let hi = t.v6Provider.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (compare4(t.v6Start, mid, k) <= 0) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0 || compare4(t.v6End, found, k) < 0) return null;
    return this.#answer(t.v6Provider[found]!);
  }

  #answer(i: number): Provider {
    const cached = this.#answers[i];
    if (cached !== undefined) return cached;
    const t = this.#t;
    const from = t.orgOffsets[i]!;
    const to = t.orgOffsets[i + 1]!;
    const answer = Object.freeze({
      asn: t.asn[i]!,
      org: to > from ? decoder.decode(t.orgBytes.subarray(from, to)) : null,
    });
    this.#answers[i] = answer;
    return answer;
  }
}

/** Sign of (row `i` of a 4-word array) − key. */
function compare4(words: Uint32Array, i: number, key: Uint32Array): number {
  const o = i * 4;
  for (let j = 0; j < 4; j++) {
    const a = words[o + j]!;
    const b = key[j]!;
    if (a !== b) return a < b ? -1 : 1;
  }
  return 0;
}

/**
 * Parses the ip-location-db ASN CSV files (`asn-ipv4-num.csv`, `asn-ipv6-num.csv`: start,end as
 * decimal numbers, AS number, organisation, RFC 4180 quoting) into an AsnTableParts.
 *
 * This function is also the body of the loader thread (its source text is sent to a Worker), so
 * it must stay self-contained: no reference to anything outside it, plain JavaScript semantics.
 * Ranges must come sorted by start (the files are); a range that starts inside the previous
 * one (one such pair in the IPv4 file) cuts the previous one short.
 */
export function buildAsnTable(v4csv: Uint8Array, v6csv: Uint8Array): AsnTableParts {
  const COMMA = 44;
  const QUOTE = 34;
  const LF = 10;
  const CR = 13;
  const providers = new Map<number, number>();
  let asns = new Uint32Array(1 << 16);
  let orgOffsets = new Uint32Array(1 << 16);
  let orgBytes = new Uint8Array(1 << 21);
  let nProviders = 0;
  let orgLen = 0;

  const grow = <A extends Uint32Array | Uint8Array>(a: A, need: number): A => {
    if (need <= a.length) return a;
    let size = a.length * 2;
    while (size < need) size *= 2;
    const b = new (a.constructor as new (n: number) => A)(size);
    b.set(a);
    return b;
  };

  /** Returns the provider index of `asn`, adding it with the org bytes buf[from..to) (unquoted). */
  const providerOf = (asn: number, buf: Uint8Array, from: number, to: number): number => {
    const known = providers.get(asn);
    if (known !== undefined) return known;
    const i = nProviders++;
    asns = grow(asns, nProviders);
    orgOffsets = grow(orgOffsets, nProviders + 1);
    orgBytes = grow(orgBytes, orgLen + (to - from));
    if (buf[from] === QUOTE) {
      // "..." with "" for a quote inside
      for (let p = from + 1; p < to; p++) {
        const c = buf[p]!;
        if (c === QUOTE) {
          if (buf[p + 1] === QUOTE) {
            orgBytes[orgLen++] = QUOTE;
            p++;
          }
          continue;
        }
        orgBytes[orgLen++] = c;
      }
    } else {
      orgBytes.set(buf.subarray(from, to), orgLen);
      orgLen += to - from;
    }
    asns[i] = asn;
    orgOffsets[i + 1] = orgLen;
    providers.set(asn, i);
    return i;
  };

  /** Parses one file; words = 1 (IPv4) or 4 (IPv6) per address. */
  const parse = (buf: Uint8Array, words: 1 | 4) => {
    let cap = 1 << 16;
    let starts = new Uint32Array(cap * words);
    let ends = new Uint32Array(cap * words);
    let provs = new Uint32Array(cap);
    let n = 0;
    const num = new Uint32Array(4);
    /** 16-bit limbs, most significant first: limb * 1e9 + carry stays an exact double. */
    const limbs = new Float64Array(8);
    let p = 0;
    const len = buf.length;
    /**
     * Reads a decimal number at p into num (as big-endian 32-bit words; only num[3] for IPv4)
     * and steps over the comma after it. IPv6 numbers take up to 39 digits: they are read nine
     * digits at a time into 16-bit limbs.
     */
    const readNumber = () => {
      if (words === 1) {
        let x = 0;
        while (p < len && buf[p] !== COMMA) x = x * 10 + (buf[p++]! - 48);
        num[3] = x;
        p++;
        return;
      }
      limbs.fill(0);
      while (p < len && buf[p] !== COMMA) {
        let chunk = 0;
        let mult = 1;
        for (let k = 0; k < 9 && p < len && buf[p] !== COMMA; k++) {
          chunk = chunk * 10 + (buf[p++]! - 48);
          mult *= 10;
        }
        let carry = chunk;
        for (let l = 7; l >= 0; l--) {
          const v = limbs[l]! * mult + carry;
          carry = Math.floor(v / 65536);
          limbs[l] = v - carry * 65536;
        }
      }
      for (let w = 0; w < 4; w++) num[w] = limbs[2 * w]! * 65536 + limbs[2 * w + 1]!;
      p++; // the comma
    };
    while (p < len) {
      if (buf[p] === LF || buf[p] === CR) {
        p++;
        continue;
      }
      if (n === cap) {
        cap *= 2;
        starts = grow(starts, cap * words);
        ends = grow(ends, cap * words);
        provs = grow(provs, cap);
      }
      readNumber();
      for (let w = 0; w < words; w++) starts[n * words + w] = num[4 - words + w]!;
      readNumber();
      for (let w = 0; w < words; w++) ends[n * words + w] = num[4 - words + w]!;
      let asn = 0;
      while (p < len && buf[p] !== COMMA) asn = asn * 10 + (buf[p++]! - 48);
      p++;
      const orgFrom = p;
      let quoted = false;
      while (p < len) {
        const c = buf[p]!;
        if (c === QUOTE) quoted = !quoted;
        else if (!quoted && (c === LF || c === CR)) break;
        p++;
      }
      provs[n] = providerOf(asn, buf, orgFrom, p);
      // Cut the previous range short where this one starts inside it.
      if (n > 0) {
        let cmp = 0;
        for (let w = 0; w < words && cmp === 0; w++) {
          const a = starts[n * words + w]!;
          const b = ends[(n - 1) * words + w]!;
          cmp = a === b ? 0 : a < b ? -1 : 1;
        }
        if (cmp <= 0) {
          // previous end = this start - 1
          let borrow = 1;
          for (let w = words - 1; w >= 0; w--) {
            const v = starts[n * words + w]! - borrow;
            ends[(n - 1) * words + w] = v < 0 ? v + 4294967296 : v;
            borrow = v < 0 ? 1 : 0;
          }
        }
      }
      n++;
    }
    return { starts: starts.slice(0, n * words), ends: ends.slice(0, n * words), provs: provs.slice(0, n) };
  };

  const v4 = parse(v4csv, 1);
  const v6 = parse(v6csv, 4);
  return {
    v4Start: v4.starts,
    v4End: v4.ends,
    v4Provider: v4.provs,
    v6Start: v6.starts,
    v6End: v6.ends,
    v6Provider: v6.provs,
    asn: asns.slice(0, nProviders),
    orgOffsets: orgOffsets.slice(0, nProviders + 1),
    orgBytes: orgBytes.slice(0, orgLen),
  };
}

/** The CSV files of the bundled package. */
export function bundledAsnFiles(): { v4: string; v6: string } {
  let dir: string;
  try {
    dir = dirname(createRequire(import.meta.url).resolve('@ip-location-db/asn/package.json'));
  } catch (err) {
    throw new ConfigError(
      `geo.asnDb: cannot find the bundled @ip-location-db/asn: ${(err as Error).message}`,
    );
  }
  return { v4: join(dir, 'asn-ipv4-num.csv'), v6: join(dir, 'asn-ipv6-num.csv') };
}

export interface AsnLoad {
  table: AsnTable;
  /** Wall time from start to the table being usable on this thread. */
  ms: number;
}

/**
 * Builds the table from the two CSV files in a worker thread. The worker is unref'd: a process
 * that is done does not wait for it.
 */
export function loadAsnTableInWorker(files: { v4: string; v6: string }): Promise<AsnLoad> {
  const started = performance.now();
  const source = `
const { parentPort, workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const build = ${buildAsnTable.toString()};
try {
  const parts = build(readFileSync(workerData.v4), readFileSync(workerData.v6));
  parentPort.postMessage({ parts }, Object.values(parts).map((a) => a.buffer));
} catch (err) {
  parentPort.postMessage({ error: String(err && err.stack || err) });
}`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(source, { eval: true, workerData: files });
    worker.unref();
    worker.once('message', (m: { parts?: AsnTableParts; error?: string }) => {
      void worker.terminate();
      if (m.parts) {
        resolve({
          table: new AsnTable(m.parts, 'bundled @ip-location-db/asn'),
          ms: performance.now() - started,
        });
      } else reject(new ConfigError(`geo.asnDb: cannot build the bundled ASN table: ${m.error}`));
    });
    worker.once('error', (err) =>
      reject(new ConfigError(`geo.asnDb: ASN table worker failed: ${err.message}`)),
    );
  });
}

/**
 * Loads of the bundled table, shared by every Geo in this process: it is immutable data from a
 * file that never changes while the process runs (like a module), and a second gateway in one
 * process (tests, the demo) should not parse 32 MB again.
 */
let bundledLoad: Promise<AsnLoad> | null = null;

export function loadBundledAsnTable(): Promise<AsnLoad> {
  bundledLoad ??= loadAsnTableInWorker(bundledAsnFiles());
  bundledLoad.catch(() => {
    bundledLoad = null; // a later gateway may try again
  });
  return bundledLoad;
}

/** GeoLite2-ASN / GeoIP2-ISP records. */
interface AsnRecord {
  autonomous_system_number?: number;
  autonomous_system_organization?: string;
}

export class AsnMmdb implements ProviderSource {
  readonly #reader: Reader<Response>;
  /** One frozen answer per AS number seen. */
  readonly #answers = new Map<number, Provider>();
  readonly description: string;

  private constructor(reader: Reader<Response>, path: string) {
    this.#reader = reader;
    this.description = path;
  }

  static async open(path: string): Promise<AsnMmdb> {
    let reader: Reader<Response>;
    try {
      reader = await maxmind.open<Response>(path);
    } catch (err) {
      throw new ConfigError(`geo.asnDb: cannot open ${path}: ${(err as Error).message}`);
    }
    const probe = reader.get('8.8.8.8') as AsnRecord | null;
    if (probe !== null && typeof probe.autonomous_system_number !== 'number') {
      throw new ConfigError(
        `geo.asnDb: ${path} is not an ASN database (type ${JSON.stringify(reader.metadata.databaseType)}: ` +
          'no autonomous_system_number for 8.8.8.8)',
      );
    }
    return new AsnMmdb(reader, path);
  }

  lookup(addr: ParsedIp): Provider | null {
    if (addr.family === 6 && this.#reader.metadata.ipVersion === 4) return null;
    const r = this.#reader.get(addr.text) as AsnRecord | null;
    const asn = r?.autonomous_system_number;
    if (typeof asn !== 'number') return null;
    let answer = this.#answers.get(asn);
    if (answer === undefined) {
      answer = Object.freeze({ asn, org: r?.autonomous_system_organization ?? null });
      this.#answers.set(asn, answer);
    }
    return answer;
  }
}
