/**
 * IP addresses and CIDR blocks: parsing, membership sets and longest-prefix maps.
 *
 * Node reports clients on a dual-stack (`::`) listener as IPv4-mapped IPv6 addresses
 * (`::ffff:192.0.2.1`, RFC 4291 §2.5.5.2); everything here treats those as the IPv4 address they
 * carry, so an operator's `192.0.2.0/24` matches whatever kind of socket the client came in on.
 */
import { BlockList, isIP, isIPv4 } from 'node:net';
import { MailgateError } from '../util/errors.js';

/** A CIDR block (or bare address) that cannot be parsed; the message quotes the input. */
export class CidrError extends MailgateError {
  constructor(message: string) {
    super('MG_CIDR', message);
  }
}

export type IpFamily = 'ipv4' | 'ipv6';

export interface Cidr {
  /** The network address in canonical form (RFC 5952 for IPv6). */
  address: string;
  prefix: number;
  family: IpFamily;
}

const IPV4_BITS = 32;
const IPV6_BITS = 128;
const IPV6_HEXTETS = 8;
/** `::ffff:0:0/96` (RFC 4291 §2.5.5.2): the first 96 bits of every IPv4-mapped address. */
const MAPPED_PREFIX_BITS = 96;
const PREFIX_RE = /^(?:0|[1-9]\d{0,2})$/;

/**
 * Parses `address/prefix`, or a bare address as a /32 or /128. Host bits must be zero, so a typo
 * such as `203.0.113.5/24` is refused instead of silently widened. An IPv4-mapped block
 * (`::ffff:192.0.2.0/120`) is returned as the IPv4 block it denotes.
 */
export function parseCidr(text: string): Cidr {
  const fail = (why: string): never => {
    throw new CidrError(`not a CIDR: ${JSON.stringify(text)} (${why})`);
  };
  const trimmed = text.trim();
  const slash = trimmed.indexOf('/');
  const addressText = slash === -1 ? trimmed : trimmed.slice(0, slash);
  const prefixText = slash === -1 ? undefined : trimmed.slice(slash + 1);
  if (addressText.includes('%')) fail('zone index not allowed');
  const family = isIP(addressText);
  if (family === 0) fail('bad address');
  const maxBits = family === 4 ? IPV4_BITS : IPV6_BITS;
  let prefix = maxBits;
  if (prefixText !== undefined) {
    if (!PREFIX_RE.test(prefixText)) fail('bad prefix length');
    prefix = Number(prefixText);
    if (prefix > maxBits) fail(`prefix length above ${maxBits}`);
  }

  if (family === 4) {
    const addr = parseIpv4(addressText);
    const network = (addr & ipv4Mask(prefix)) >>> 0;
    if (network !== addr) fail(`host bits set; the network is ${formatIpv4(network)}/${prefix}`);
    return { address: formatIpv4(network), prefix, family: 'ipv4' };
  }

  const hextets = parseIpv6(addressText);
  if (isMapped(hextets) && prefix >= MAPPED_PREFIX_BITS) {
    const v4 = mappedIpv4(hextets);
    const v4Prefix = prefix - MAPPED_PREFIX_BITS;
    const network = (v4 & ipv4Mask(v4Prefix)) >>> 0;
    if (network !== v4) fail(`host bits set; the network is ${formatIpv4(network)}/${v4Prefix}`);
    return { address: formatIpv4(network), prefix: v4Prefix, family: 'ipv4' };
  }
  const network = maskIpv6(hextets, prefix);
  if (network.some((h, i) => h !== hextets[i])) {
    fail(`host bits set; the network is ${formatIpv6(network)}/${prefix}`);
  }
  return { address: formatIpv6(network), prefix, family: 'ipv6' };
}

/**
 * An address parsed once, for callers that run several lookups on it (Geo). IPv4-mapped IPv6
 * comes out as IPv4; `text` is the IPv4 text, or the IPv6 text as given minus any zone index.
 */
export type ParsedIp =
  | { readonly family: 4; readonly value: number; readonly text: string }
  | { readonly family: 6; readonly hextets: readonly number[]; readonly text: string };

/** Null for anything that is not an IP address (as `net.isIP` decides). */
export function parseIp(ip: string): ParsedIp | null {
  const family = isIP(ip);
  if (family === 4) return { family, value: parseIpv4(ip), text: ip };
  if (family === 0) return null;
  // Fast path for the exact form Node gives for dual-stack sockets.
  if (ip.startsWith('::ffff:') || ip.startsWith('::FFFF:')) {
    const tail = ip.slice(7);
    if (isIPv4(tail)) return { family: 4, value: parseIpv4(tail), text: tail };
  }
  const text = stripZone(ip);
  const hextets = parseIpv6(text);
  if (!isMapped(hextets)) return { family: 6, hextets, text };
  const value = mappedIpv4(hextets);
  return { family: 4, value, text: formatIpv4(value) };
}

/**
 * Canonical text for an address: IPv4-mapped IPv6 becomes plain IPv4, other IPv6 is lowercased
 * and compressed (RFC 5952 §4) and loses any zone index (`%eth0`). Input that is not an IP
 * address is returned unchanged; check with `net.isIP` when that matters.
 */
export function normalizeIp(ip: string): string {
  const parsed = parseIp(ip);
  if (parsed === null) return ip;
  return parsed.family === 4 ? parsed.text : formatIpv6(parsed.hextets);
}

/**
 * A set of CIDR blocks answering "is this address in any of them" (via `net.BlockList`).
 *
 * IPv6 blocks match IPv6 addresses only: `::/0` does not cover IPv4 clients. A single BlockList
 * would do that, because it also checks an IPv4 address against IPv6 rules as `::ffff:a.b.c.d`;
 * hence one list per family. IPv4-mapped addresses and blocks count as IPv4.
 */
export class CidrSet {
  readonly #v4 = new BlockList();
  readonly #v6 = new BlockList();
  readonly #size: number;
  /** Blocks per family: an empty list is not asked (BlockList.check builds a SocketAddress each time). */
  #v4Blocks = 0;
  #v6Blocks = 0;

  /** @throws CidrError for the first entry that does not parse. */
  constructor(cidrs: readonly string[]) {
    const seen = new Set<string>();
    for (const text of cidrs) {
      const { address, prefix, family } = parseCidr(text);
      const key = `${address}/${prefix}`;
      if (seen.has(key)) continue;
      seen.add(key);
      if (family === 'ipv4') {
        this.#v4.addSubnet(address, prefix, family);
        this.#v4Blocks++;
      } else {
        this.#v6.addSubnet(address, prefix, family);
        this.#v6Blocks++;
      }
    }
    this.#size = seen.size;
  }

  /** False for anything that is not an IP address. */
  has(ip: string): boolean {
    if (this.#size === 0) return false; // no PROXY peers configured: every plain connection asks
    const addr = normalizeIp(ip);
    const family = isIP(addr);
    if (family === 4) return this.#v4Blocks > 0 && this.#v4.check(addr, 'ipv4');
    return family === 6 && this.#v6Blocks > 0 && this.#v6.check(addr, 'ipv6');
  }

  /** Number of distinct blocks. */
  get size(): number {
    return this.#size;
  }
}

interface Level<K, T> {
  map: Map<K, T>;
  /** uint32 mask for keys that are numbers, shift for keys that are bigints. */
  mask: number;
  shift: bigint;
}

/**
 * Maps CIDR blocks to values; `get` returns the value of the most specific (longest-prefix)
 * block containing the address. Blocks are grouped by prefix length, so a lookup costs one
 * `Map.get` per distinct prefix length, longest first. IPv4-mapped addresses and blocks count as
 * IPv4; IPv6 blocks never match IPv4 addresses.
 */
export class CidrMap<T> {
  /** All levels are sorted by prefix length, longest first. Keys: the masked address, uint32. */
  readonly #v4: Level<number, T>[];
  /** IPv6 blocks up to /32, keyed by the masked first 32 bits (no BigInt per lookup). */
  readonly #v6Short: Level<number, T>[];
  /** Longer IPv6 blocks, keyed by `address >> (128 - prefix)`. */
  readonly #v6Long: Level<bigint, T>[];
  readonly #size: number;

  /** @throws CidrError for an entry that does not parse, or a block listed twice. */
  constructor(entries: ReadonlyArray<{ cidr: string; value: T }>) {
    const v4 = new Map<number, Map<number, T>>();
    const v6Short = new Map<number, Map<number, T>>();
    const v6Long = new Map<number, Map<bigint, T>>();
    for (const { cidr, value } of entries) {
      const { address, prefix, family } = parseCidr(cidr);
      let added: boolean;
      if (family === 'ipv4') {
        added = addOnce(v4, prefix, parseIpv4(address), value);
      } else {
        const hextets = parseIpv6(address);
        added =
          prefix <= IPV4_BITS
            ? addOnce(v6Short, prefix, high32(hextets), value)
            : addOnce(v6Long, prefix, ipv6ToBigInt(hextets) >> shift6(prefix), value);
      }
      if (!added) throw new CidrError(`duplicate CIDR: ${JSON.stringify(cidr)}`);
    }
    this.#v4 = levels(v4);
    this.#v6Short = levels(v6Short);
    this.#v6Long = levels(v6Long);
    this.#size = entries.length;
  }

  get size(): number {
    return this.#size;
  }

  /** Undefined when no block matches or `ip` is not an IP address. */
  get(ip: string): T | undefined {
    if (this.#size === 0) return undefined;
    const parsed = parseIp(ip);
    return parsed === null ? undefined : this.getParsed(parsed);
  }

  /** `get` for an address already parsed with `parseIp`. */
  getParsed(ip: ParsedIp): T | undefined {
    if (ip.family === 4) return firstHit(this.#v4, ip.value);
    const long = this.#v6Long;
    if (long.length > 0) {
      const addr = ipv6ToBigInt(ip.hextets);
      for (const level of long) {
        const hit = level.map.get(addr >> level.shift);
        if (hit !== undefined) return hit;
      }
    }
    return firstHit(this.#v6Short, high32(ip.hextets));
  }
}

function firstHit<T>(levels: readonly Level<number, T>[], addr: number): T | undefined {
  for (const level of levels) {
    const hit = level.map.get((addr & level.mask) >>> 0);
    if (hit !== undefined) return hit;
  }
  return undefined;
}

function levels<K, T>(byPrefix: Map<number, Map<K, T>>): Level<K, T>[] {
  return [...byPrefix]
    .sort((a, b) => b[0] - a[0])
    .map(([prefix, map]) => ({
      map,
      mask: prefix <= IPV4_BITS ? ipv4Mask(prefix) : 0,
      shift: shift6(prefix),
    }));
}

function addOnce<K, T>(levels: Map<number, Map<K, T>>, prefix: number, key: K, value: T): boolean {
  let level = levels.get(prefix);
  if (level === undefined) {
    level = new Map();
    levels.set(prefix, level);
  }
  if (level.has(key)) return false;
  level.set(key, value);
  return true;
}

// --- address arithmetic; callers have validated the text with net.isIP ---

function ipv4Mask(prefix: number): number {
  // `<< 32` is `<< 0` in JavaScript, hence the special case.
  return prefix === 0 ? 0 : (0xffffffff << (IPV4_BITS - prefix)) >>> 0;
}

function parseIpv4(text: string): number {
  let value = 0;
  let octet = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      value = value * 256 + octet;
      octet = 0;
    } else {
      octet = octet * 10 + (c - 0x30);
    }
  }
  return (value * 256 + octet) >>> 0;
}

function formatIpv4(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 0xff}.${(addr >>> 8) & 0xff}.${addr & 0xff}`;
}

function stripZone(text: string): string {
  const pct = text.indexOf('%');
  return pct === -1 ? text : text.slice(0, pct);
}

/** Eight 16-bit groups of a valid IPv6 address without zone index. */
function parseIpv6(text: string): number[] {
  const gap = text.indexOf('::');
  const head = groups(gap === -1 ? text : text.slice(0, gap));
  if (gap === -1) return head;
  const tail = groups(text.slice(gap + 2));
  const out = head;
  for (let i = head.length + tail.length; i < IPV6_HEXTETS; i++) out.push(0);
  for (const h of tail) out.push(h);
  return out;
}

function groups(text: string): number[] {
  if (text === '') return [];
  const out: number[] = [];
  for (const part of text.split(':')) {
    if (part.includes('.')) {
      const v4 = parseIpv4(part);
      out.push(v4 >>> 16, v4 & 0xffff);
    } else {
      out.push(Number.parseInt(part, 16));
    }
  }
  return out;
}

function high32(h: readonly number[]): number {
  return h[0]! * 0x10000 + h[1]!;
}

function isMapped(h: readonly number[]): boolean {
  return h[0] === 0 && h[1] === 0 && h[2] === 0 && h[3] === 0 && h[4] === 0 && h[5] === 0xffff;
}

function mappedIpv4(h: readonly number[]): number {
  return ((h[6]! << 16) | h[7]!) >>> 0;
}

function ipv6ToBigInt(h: readonly number[]): bigint {
  // Built from 32-bit words: a 64-bit half would not fit a double exactly.
  return (
    (BigInt(h[0]! * 0x10000 + h[1]!) << 96n) |
    (BigInt(h[2]! * 0x10000 + h[3]!) << 64n) |
    (BigInt(h[4]! * 0x10000 + h[5]!) << 32n) |
    BigInt(h[6]! * 0x10000 + h[7]!)
  );
}

function shift6(prefix: number): bigint {
  return BigInt(IPV6_BITS - prefix);
}

function maskIpv6(h: readonly number[], prefix: number): number[] {
  return h.map((group, i) => {
    const bits = Math.min(16, Math.max(0, prefix - i * 16));
    return bits === 0 ? 0 : group & ((0xffff << (16 - bits)) & 0xffff);
  });
}

/** RFC 5952 §4: lowercase, no leading zeros, the longest run (2+) of zero groups as `::`. */
function formatIpv6(h: readonly number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < IPV6_HEXTETS; ) {
    if (h[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < IPV6_HEXTETS && h[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string =>
    h
      .slice(from, to)
      .map((g) => g.toString(16))
      .join(':');
  if (bestStart === -1) return hex(0, IPV6_HEXTETS);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, IPV6_HEXTETS)}`;
}
