import { randomFillSync } from 'node:crypto';

/** Ids drawn per refill of the pool: one call into the CSPRNG per this many connections. */
const IDS_PER_REFILL = 512;

/**
 * Random base64url ids (session ids) cut from a pool of CSPRNG bytes refilled when used up, so
 * that accepting a connection does not cost a call into the random generator of its own.
 * Each byte is used once; the ids are as random as randomBytes(bytes) would make them.
 */
export class RandomIds {
  readonly #bytes: number;
  readonly #pool: Buffer;
  #offset: number;

  constructor(bytes: number, idsPerRefill = IDS_PER_REFILL) {
    if (!Number.isInteger(bytes) || bytes < 1) throw new RangeError('bytes must be a positive integer');
    this.#bytes = bytes;
    this.#pool = Buffer.allocUnsafe(bytes * Math.max(1, idsPerRefill));
    this.#offset = this.#pool.length; // filled on first use
  }

  next(): string {
    if (this.#offset + this.#bytes > this.#pool.length) {
      randomFillSync(this.#pool);
      this.#offset = 0;
    }
    const start = this.#offset;
    this.#offset += this.#bytes;
    return this.#pool.toString('base64url', start, this.#offset);
  }
}
