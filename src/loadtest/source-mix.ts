import { isIPv6 } from 'node:net';
import { CidrError, parseCidr } from '../net/cidr.js';
import { UsageError } from '../util/errors.js';

/**
 * Where load-test clients appear to come from. With PROXY protocol (`--proxy v2`) every
 * connection carries a source address drawn from a weighted mix, so a rollout can be tested
 * against the traffic it will see: e.g. `JP:95,US:5` is 95% Japanese carrier addresses and 5%
 * from abroad. A mix entry is a region name below or an explicit CIDR block (IPv4 or IPv6),
 * each with a weight: `49.96.0.0/16:95,8.8.8.0/24:5`, `2001:db8::/32:10`.
 */

/** Named regions: address blocks whose GeoIP answer is that country in the bundled database. */
export const REGIONS: Record<string, { description: string; cidrs: string[] }> = {
  JP: {
    description: 'Japanese mobile carrier ranges (49.96/16 is NTT DOCOMO, AS9605)',
    cidrs: ['49.96.0.0/16', '1.66.0.0/16', '110.163.0.0/16'],
  },
  US: { description: 'United States (8.8/16, Google, AS15169)', cidrs: ['8.8.0.0/16'] },
};

/** One source address drawn from the mix; `label` is the entry it came from (for the report). */
export interface Source {
  address: string;
  family: 'tcp4' | 'tcp6';
  label: string;
}

interface Block {
  family: 'tcp4' | 'tcp6';
  /** The network address as a number (IPv4: 32 bits, IPv6: 128 bits). */
  network: bigint;
  /** Host bits. */
  hostBits: number;
}

interface Entry {
  label: string;
  weight: number;
  blocks: Block[];
}

/** A deterministic PRNG (mulberry32), so that a run with --seed draws the same addresses. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class SourceMix {
  readonly entries: ReadonlyArray<{ label: string; share: number }>;
  readonly #entries: Entry[];
  readonly #total: number;

  private constructor(entries: Entry[]) {
    this.#entries = entries;
    this.#total = entries.reduce((s, e) => s + e.weight, 0);
    this.entries = entries.map((e) => ({ label: e.label, share: e.weight / this.#total }));
  }

  /**
   * Parses `LABEL:WEIGHT,...`, where LABEL is a region (REGIONS) or a CIDR block. Weights are
   * positive numbers, relative to their sum (95 and 5, or 0.95 and 0.05, are the same mix).
   */
  static parse(text: string): SourceMix {
    const items = text
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    if (items.length === 0) throw new UsageError('--source-mix is empty; e.g. "JP:95,US:5"');
    const entries = items.map((item): Entry => {
      // The weight follows the last colon: an IPv6 block has colons of its own.
      const colon = item.lastIndexOf(':');
      if (colon <= 0) throw new UsageError(`--source-mix "${item}": expected NAME:WEIGHT or CIDR:WEIGHT`);
      const label = item.slice(0, colon).trim();
      const weightText = item.slice(colon + 1).trim();
      const weight = Number(weightText);
      if (!/^\d+(\.\d+)?$/.test(weightText) || !(weight > 0)) {
        throw new UsageError(`--source-mix "${item}": the weight must be a positive number`);
      }
      const region = REGIONS[label.toUpperCase()];
      const cidrs = region ? region.cidrs : [label];
      if (!region && !label.includes('/') && !/[.:]/.test(label)) {
        throw new UsageError(
          `--source-mix "${item}": "${label}" is neither a region (${Object.keys(REGIONS).join(', ')}) nor a CIDR block`,
        );
      }
      return { label: region ? label.toUpperCase() : label, weight, blocks: cidrs.map(toBlock) };
    });
    return new SourceMix(entries);
  }

  /** One address: an entry by weight, a block of it at random, a host in the block at random. */
  pick(random: () => number): Source {
    let r = random() * this.#total;
    let entry = this.#entries[this.#entries.length - 1]!;
    for (const e of this.#entries) {
      if (r < e.weight) {
        entry = e;
        break;
      }
      r -= e.weight;
    }
    const block = entry.blocks[Math.floor(random() * entry.blocks.length)] ?? entry.blocks[0]!;
    return { address: hostIn(block, random), family: block.family, label: entry.label };
  }
}

function toBlock(text: string): Block {
  let cidr: ReturnType<typeof parseCidr>;
  try {
    cidr = parseCidr(text);
  } catch (err) {
    if (err instanceof CidrError) throw new UsageError(`--source-mix: ${err.message}`);
    throw err;
  }
  if (cidr.family === 'ipv4') {
    const n = cidr.address.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
    return { family: 'tcp4', network: n, hostBits: 32 - cidr.prefix };
  }
  return { family: 'tcp6', network: ipv6ToBigInt(cidr.address), hostBits: 128 - cidr.prefix };
}

/** A random host address of the block; not the all-zeros or all-ones host when there are others. */
function hostIn(block: Block, random: () => number): string {
  const size = 1n << BigInt(block.hostBits);
  let host = 0n;
  for (let bits = 0; bits < block.hostBits; bits += 32) {
    host = (host << 32n) | BigInt(Math.floor(random() * 4294967296));
  }
  host %= size;
  if (size > 2n) host = 1n + (host % (size - 2n));
  const n = block.network + host;
  return block.family === 'tcp4' ? ipv4FromBigInt(n) : ipv6FromBigInt(n);
}

function ipv4FromBigInt(n: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');
}

function ipv6ToBigInt(addr: string): bigint {
  if (!isIPv6(addr)) throw new UsageError(`--source-mix: "${addr}" is not an IPv6 address`);
  const [head = '', tail] = addr.split('::');
  const parts = (s: string) => (s ? s.split(':') : []);
  const h = parts(head);
  const t = tail === undefined ? [] : parts(tail);
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g, 16)), 0n);
}

function ipv6FromBigInt(n: bigint): string {
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((n >> s) & 0xffffn).toString(16));
  return groups.join(':');
}
