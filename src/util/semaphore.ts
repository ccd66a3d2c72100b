import { MailgateError } from './errors.js';

/** Too much work is already waiting; the caller should answer with a temporary failure. */
export class OverloadedError extends MailgateError {
  constructor(what: string) {
    super('MG_OVERLOADED', `${what}: too many waiting`);
  }
}

/**
 * Bounds concurrent work (argon2 verifications) and the queue in front of it, so that a
 * flood of logins turns into quick temporary failures instead of an ever-growing queue that
 * starves the libuv pool shared with fs and dns.
 */
export class Semaphore {
  #active = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(
    readonly name: string,
    readonly maxActive: number,
    readonly maxQueued: number,
  ) {}

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#active >= this.maxActive) {
      if (this.#waiting.length >= this.maxQueued) throw new OverloadedError(this.name);
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#active++;
    }
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      // Hand the slot straight to the next waiter; #active stays the same.
      if (next) next();
      else this.#active--;
    }
  }
}
