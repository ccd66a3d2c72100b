import type { Redis } from 'ioredis';
import type { Phase } from '../auth/policy.js';
import { StoreUnavailableError } from '../util/errors.js';
import { type Cohort, parseRolloutDoc, prune, type RolloutDoc, type Rule, type Wave } from './engine.js';

/**
 * The rollout rules and the refusal statistics in Redis (keys under the prefix):
 *   rollout:doc   string: RolloutDoc as JSON; read by every login through the lookup script
 *   rollout:seq   counter: sequence numbers of rules (global, so explicit and wave rules compare)
 *   stats:m:<minute>, stats:h:<hour>   hashes: "<outcome>|<restriction>|<cohort>" -> count
 *
 * Gateways read the document on every login (inside the one lookup round trip), so a change
 * applies to the next login on every instance, without restart or cache to expire.
 */

/** Refused or would-have-been refused (warn), per restriction and cohort. */
export type RestrictionOutcome = 'refused' | 'would-refuse';

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
/** Optimistic-lock retries for a concurrent change of the document. */
const MAX_WRITE_ATTEMPTS = 10;

export interface RestrictionStats {
  /** key "<outcome>|<restriction>|<cohort>" */
  lastHour: Record<string, number>;
  lastDay: Record<string, number>;
}

export class RolloutStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  async getDoc(): Promise<RolloutDoc> {
    return parseRolloutDoc(await this.#call(() => this.redis.get(`${this.prefix}rollout:doc`)));
  }

  async nextSeq(): Promise<number> {
    return this.#call(() => this.redis.incr(`${this.prefix}rollout:seq`));
  }

  async addOverseasRule(phase: Phase, at: number, now: number): Promise<Rule> {
    const rule: Rule = { phase, at, seq: await this.nextSeq() };
    await this.#update((doc) => ({ ...doc, overseas: [...doc.overseas, rule] }), now);
    return rule;
  }

  async addDomesticWave(percent: number, phase: Phase, at: number, now: number): Promise<Wave> {
    const wave: Wave = { percent, phase, at, seq: await this.nextSeq() };
    await this.#update((doc) => ({ ...doc, domestic: [...doc.domestic, wave] }), now);
    return wave;
  }

  /** Read-modify-write under WATCH, so two operators' changes never lose one another. */
  async #update(change: (doc: RolloutDoc) => RolloutDoc, now: number): Promise<void> {
    const key = `${this.prefix}rollout:doc`;
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      await this.#call(() => this.redis.watch(key));
      const doc = parseRolloutDoc(await this.#call(() => this.redis.get(key)));
      const next = prune(change(doc), now);
      const ok = await this.#call(() => this.redis.multi().set(key, JSON.stringify(next)).exec());
      if (ok !== null) return;
    }
    throw new StoreUnavailableError('rollout rules changed concurrently too often; try again');
  }

  /** Counts one refused or would-refuse login; called off the login's critical path. */
  record(outcome: RestrictionOutcome, restriction: string, cohort: Cohort, now: number): Promise<unknown> {
    const field = `${outcome}|${restriction}|${cohort}`;
    const m = `${this.prefix}stats:m:${Math.floor(now / MINUTE_MS)}`;
    const h = `${this.prefix}stats:h:${Math.floor(now / HOUR_MS)}`;
    return this.redis
      .multi()
      .hincrby(m, field, 1)
      .pexpire(m, 2 * HOUR_MS)
      .hincrby(h, field, 1)
      .pexpire(h, 26 * HOUR_MS)
      .exec();
  }

  async stats(now: number): Promise<RestrictionStats> {
    const minute = Math.floor(now / MINUTE_MS);
    const hour = Math.floor(now / HOUR_MS);
    const p = this.redis.pipeline();
    for (let i = 0; i < 60; i++) p.hgetall(`${this.prefix}stats:m:${minute - i}`);
    for (let i = 0; i < 24; i++) p.hgetall(`${this.prefix}stats:h:${hour - i}`);
    const rows = (await this.#call(() => p.exec())) ?? [];
    const sum = (from: number, to: number) => {
      const out: Record<string, number> = {};
      for (const [, value] of rows.slice(from, to)) {
        for (const [k, v] of Object.entries((value ?? {}) as Record<string, string>))
          out[k] = (out[k] ?? 0) + Number(v);
      }
      return out;
    };
    return { lastHour: sum(0, 60), lastDay: sum(60, 84) };
  }

  async #call<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      throw new StoreUnavailableError(`redis: ${(err as Error).message}`, { cause: err });
    }
  }
}
