import type { Redis } from 'ioredis';
import {
  type ImportFormat,
  type ImportProgress,
  type ImportSummary,
  importAccounts as runImport,
} from '../accounts/import.js';
import { LockoutStore } from '../accounts/lockout-store.js';
import { type Account, AccountStore, checkLoginName } from '../accounts/store.js';
import { checkPasswordHash, checkPhc, generateImapPassword, PasswordHasher } from '../auth/passwords.js';
import type { Phase } from '../auth/policy.js';
import type { Config } from '../config/schema.js';
import { parseHostPort } from '../net/upstream-connect.js';
import { RedisOutbox } from '../notify/outbox.js';
import { isTimeZone } from '../notify/schedule.js';
import { addResults, emptyCounts, type WaveNoticeCounts, waveNotice } from '../notify/waves.js';
import type { Logger } from '../observability/logger.js';
import {
  bucketOf,
  type Cohort,
  domesticPhase,
  overseasPhase,
  type Rule,
  type Wave,
} from '../rollout/engine.js';
import { type RestrictionStats, RolloutStore } from '../rollout/store.js';
import { RefusedError, UsageError } from '../util/errors.js';
import { type AuditSink, RedisAuditLog } from './audit.js';

/**
 * The operator operations, one function each. The CLI (and the admin API) only translate
 * arguments to calls and results to output; every rule lives here.
 */

/** An account as shown to operators: hashes are never shown, only whether they are set. */
export interface AccountView {
  login: string;
  aliases: string[];
  msisdn: string | null;
  upstreamUser: string | null;
  upstream: string | null;
  primaryPassword: boolean;
  imapPassword: { issuedAt: string } | null;
  /** The explicit domestic rule set for this account (waves are shown by rollout status). */
  domestic: { phase: Phase; from: string } | null;
  exemptUntil: string | null;
  createdAt: string;
  /** SMS language and time zone, when the account sets its own. */
  lang?: 'ja' | 'en';
  tz?: string;
}

export function viewAccount(a: Account): AccountView {
  return {
    login: a.login,
    aliases: a.aliases,
    msisdn: a.msisdn,
    upstreamUser: a.upstreamUser,
    upstream: a.upstream,
    primaryPassword: a.primaryHash !== null,
    imapPassword: a.imapHash ? { issuedAt: new Date(a.imapIssuedAt ?? 0).toISOString() } : null,
    domestic: a.domestic ? { phase: a.domestic.phase, from: new Date(a.domestic.at).toISOString() } : null,
    exemptUntil: a.exemptUntil ? new Date(a.exemptUntil).toISOString() : null,
    createdAt: new Date(a.createdAt).toISOString(),
    ...(a.lang ? { lang: a.lang } : {}),
    ...(a.tz ? { tz: a.tz } : {}),
  };
}

export interface OperatorDeps {
  accounts: AccountStore;
  rollout: RolloutStore;
  lockout: Pick<LockoutStore, 'unlock'>;
  hasher: Pick<PasswordHasher, 'hash'>;
  log: Logger;
  clock: () => number;
  /** Who is acting, for the audit line: a CLI user or an API token name. */
  actor: string;
  /** The durable audit trail (the Redis stream, audit.ts), besides the `admin` log line. */
  audit: AuditSink;
  /** The SMS outbox, for the notices of a domestic wave (rules.md R8); absent: no notices. */
  notices?: Pick<RedisOutbox, 'enqueueMany'>;
}

const MSISDN = /^\+[1-9]\d{6,14}$/; // E.164
/** Accounts read and notices queued per step of a domestic wave's rules.md R8 notices. */
const WAVE_BATCH = 500;

export function createOperatorService(deps: OperatorDeps) {
  const { accounts, rollout, lockout, hasher, log, clock, actor } = deps;
  // Never rejects; callers need not await it (the CLI and the API flush the sink before they answer).
  const audit = (action: string, fields: Record<string, unknown>): Promise<void> => {
    log.info({ event: 'admin', actor, action, ...fields }, action);
    return deps.audit.record({ at: clock(), actor, action, details: fields });
  };

  return {
    async addAccount(input: {
      login: string;
      primaryPassword?: string;
      primaryHash?: string;
      msisdn?: string;
      aliases?: string[];
      upstreamUser?: string;
      upstream?: string;
      lang?: string;
      tz?: string;
    }): Promise<AccountView> {
      if (input.primaryPassword !== undefined && input.primaryHash !== undefined) {
        throw new UsageError('give either a primary password or a primary hash, not both');
      }
      if (input.msisdn !== undefined && !MSISDN.test(input.msisdn)) {
        throw new UsageError(`msisdn "${input.msisdn}" is not an E.164 number like +819012345678`);
      }
      if (input.upstream !== undefined) {
        if (!parseHostPort(input.upstream))
          throw new UsageError(`upstream "${input.upstream}" is not HOST:PORT`);
      }
      if (input.primaryPassword !== undefined && input.primaryPassword.length === 0) {
        throw new UsageError('the primary password is empty');
      }
      if (input.lang !== undefined && input.lang !== 'ja' && input.lang !== 'en') {
        throw new UsageError(`lang "${input.lang}" is not ja or en`);
      }
      if (input.tz !== undefined && !isTimeZone(input.tz)) {
        throw new UsageError(`tz "${input.tz}" is not an IANA time zone like Asia/Tokyo`);
      }
      let primaryHash: string | null = null;
      if (input.primaryHash !== undefined) {
        try {
          primaryHash = checkPhc(input.primaryHash);
        } catch (err) {
          throw new UsageError(`primary hash: ${(err as Error).message}`);
        }
      } else if (input.primaryPassword !== undefined) {
        primaryHash = await hasher.hash(input.primaryPassword);
      }
      const account = await accounts.create({
        login: input.login,
        aliases: input.aliases ?? [],
        primaryHash,
        msisdn: input.msisdn ?? null,
        upstreamUser: input.upstreamUser ?? null,
        upstream: input.upstream ?? null,
        lang: (input.lang as 'ja' | 'en' | undefined) ?? null,
        tz: input.tz ?? null,
        now: clock(),
      });
      audit('account.add', { login: account.login, aliases: account.aliases });
      return viewAccount(account);
    },

    async showAccount(login: string): Promise<AccountView> {
      return viewAccount(await accounts.require(login));
    },

    /**
     * Issues a new IMAP-only password (rules.md R3 method 2, R4), or with ifAbsent only when none exists
     * (rules.md R3 method 1, R5). The password is returned once and stored only as a hash.
     */
    async issueImapPassword(
      login: string,
      opts: { ifAbsent: boolean },
    ): Promise<{ login: string; password: string | null; issued: boolean }> {
      const account = await accounts.require(login);
      if (opts.ifAbsent && account.imapHash) {
        audit('imap-password.issue', { login: account.login, issued: false, ifAbsent: true });
        return { login: account.login, password: null, issued: false };
      }
      const password = generateImapPassword();
      const hash = await hasher.hash(password);
      const issued = await accounts.setImapHash(account.login, hash, clock(), opts.ifAbsent);
      audit('imap-password.issue', { login: account.login, issued, ifAbsent: opts.ifAbsent });
      return { login: account.login, password: issued ? password : null, issued };
    },

    async revokeImapPassword(login: string): Promise<{ login: string; revoked: boolean }> {
      const account = await accounts.require(login);
      const revoked = await accounts.revokeImapHash(account.login);
      audit('imap-password.revoke', { login: account.login, revoked });
      return { login: account.login, revoked };
    },

    /**
     * `account import`: JSON lines or CSV, idempotent (see accounts/import.ts for what a line
     * means). One audit line for the whole file, with the counts.
     */
    async importAccounts(
      source: AsyncIterable<Buffer | string>,
      opts: { name: string | null; format?: ImportFormat; onProgress?: (p: ImportProgress) => void },
    ): Promise<ImportSummary> {
      const s = await runImport(accounts, source, { ...opts, clock });
      const { format, lines, created, updated, unchanged, rejected } = s;
      audit('account.import', {
        file: opts.name ?? '-',
        format,
        lines,
        created,
        updated,
        unchanged,
        rejected,
      });
      return s;
    },

    /** Removes an account, frees its aliases, and ends its sessions. Takes the login, not an alias. */
    async removeAccount(login: string): Promise<{ login: string; aliases: string[] }> {
      const r = await accounts.remove(checkLoginName(login));
      audit('account.remove', { login: r.login, before: { aliases: r.aliases } });
      return r;
    },

    /**
     * rules.md R14: the account site changed the primary password. The gateway accepts the new one
     * from the next login; primaryVersion is bumped so that sessions opened with the old one
     * end. Giving the stored hash again changes nothing.
     */
    async setPrimary(
      login: string,
      input: { password: string } | { hash: string },
    ): Promise<{ login: string; changed: boolean; primaryVersion: number | null }> {
      let hash: string | null = null;
      if ('hash' in input) {
        try {
          hash = checkPasswordHash(input.hash);
        } catch (err) {
          throw new UsageError(`primary hash: ${(err as Error).message}`);
        }
      } else if (input.password.length === 0) {
        throw new UsageError('the primary password is empty');
      }
      const account = await accounts.require(login);
      hash ??= await hasher.hash((input as { password: string }).password);
      const version = await accounts.setPrimaryHash(account.login, hash);
      audit('account.set-primary', {
        login: account.login,
        changed: version !== null,
        before: { primaryVersion: account.primaryVersion },
        after: { primaryVersion: version ?? account.primaryVersion },
      });
      return {
        login: account.login,
        changed: version !== null,
        primaryVersion: version ?? account.primaryVersion,
      };
    },

    /** rules.md R7. `at`: when the phase starts (epoch ms); now when omitted. */
    async setOverseasPhase(phase: Phase, at?: number): Promise<{ rule: Rule; phaseNow: Phase }> {
      const now = clock();
      const before = overseasPhase(await rollout.getDoc(), now);
      const rule = await rollout.addOverseasRule(phase, at ?? now, now);
      const phaseNow = overseasPhase(await rollout.getDoc(), now);
      audit('rollout.overseas', {
        phase,
        at: new Date(rule.at).toISOString(),
        seq: rule.seq,
        before,
        after: phaseNow,
      });
      return { rule, phaseNow };
    },

    /**
     * rules.md R8, customer by customer: explicit logins (--login, --users FILE), a stable percentage
     * of all accounts (--percent), or every account (--all). The most recent command wins.
     */
    async setDomesticPhase(
      target: { logins: string[] } | { percent: number } | { all: true },
      phase: Phase,
      at?: number,
    ): Promise<{
      phase: Phase;
      at: string;
      seq: number;
      logins?: string[];
      percent?: number;
      notices?: WaveNoticeCounts;
    }> {
      const now = clock();
      const start = at ?? now;
      const outbox = deps.notices;
      if ('logins' in target) {
        if (target.logins.length === 0) throw new UsageError('name at least one login');
        const rule: Rule = { phase, at: start, seq: await rollout.nextSeq() };
        // The accounts as they were, for whom this rule changes anything (rules.md R8 notices).
        const before: Account[] = [];
        if (outbox) {
          for (let i = 0; i < target.logins.length; i += WAVE_BATCH) {
            for (const a of await accounts.getMany(target.logins.slice(i, i + WAVE_BATCH))) {
              if (a && !a.imapHash) before.push(a);
            }
          }
        }
        const { changed, missing } = await accounts.setDomesticRule(target.logins, rule);
        if (missing.length) {
          const shown = missing
            .slice(0, 5)
            .map((m) => `"${m}"`)
            .join(', ');
          throw new RefusedError(
            `no account ${shown}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}; nothing changed`,
          );
        }
        audit('rollout.domestic', {
          phase,
          at: new Date(start).toISOString(),
          seq: rule.seq,
          logins: changed.length <= 20 ? changed : changed.length,
        });
        const result = { phase, at: new Date(start).toISOString(), seq: rule.seq, logins: changed };
        if (!outbox) return result;
        const doc = await rollout.getDoc();
        const counts = emptyCounts();
        for (let i = 0; i < before.length; i += WAVE_BATCH) {
          const specs = before.slice(i, i + WAVE_BATCH).flatMap((a) => {
            const n = waveNotice({
              account: a,
              before: doc,
              after: doc,
              explicitBefore: a.domestic,
              explicitAfter: rule,
              rule,
              now,
            });
            return n ? [n] : [];
          });
          addResults(counts, await outbox.enqueueMany(specs));
        }
        audit('rollout.domestic.notices', { seq: rule.seq, ...counts });
        return { ...result, notices: counts };
      }
      const percent = 'all' in target ? 100 : target.percent;
      if (
        !Number.isFinite(percent) ||
        percent <= 0 ||
        percent > 100 ||
        Math.round(percent * 100) !== percent * 100
      ) {
        throw new UsageError(
          `percent must be a number above 0 and at most 100, in steps of 0.01, not "${percent}"`,
        );
      }
      const docBefore = outbox ? await rollout.getDoc() : null;
      const wave: Wave = await rollout.addDomesticWave(percent, phase, start, now);
      audit('rollout.domestic', { phase, at: new Date(start).toISOString(), seq: wave.seq, percent });
      const result = { phase, at: new Date(start).toISOString(), seq: wave.seq, percent };
      if (!outbox || !docBefore) return result;
      // Walks every account a batch at a time (as rollout status does), queueing as it goes.
      const docAfter = await rollout.getDoc();
      const counts = emptyCounts();
      await accounts.forEachAccountBatch(async (batch) => {
        const specs = batch.flatMap((a) => {
          const n = waveNotice({
            account: a,
            before: docBefore,
            after: docAfter,
            explicitBefore: a.domestic,
            explicitAfter: a.domestic,
            rule: wave,
            now,
          });
          return n ? [n] : [];
        });
        if (specs.length) addResults(counts, await outbox.enqueueMany(specs));
      }, WAVE_BATCH);
      audit('rollout.domestic.notices', { seq: wave.seq, ...counts });
      return { ...result, notices: counts };
    },

    /** Lifts both restrictions for one account until a time (a travelling subscriber). */
    async exempt(login: string, until: number): Promise<{ login: string; until: string | null }> {
      const account = await accounts.require(login);
      if (until !== 0 && until <= clock()) throw new UsageError('--until must be in the future');
      await accounts.setExemptUntil(account.login, until);
      const shown = until ? new Date(until).toISOString() : null;
      audit('rollout.exempt', {
        login: account.login,
        before: account.exemptUntil ? new Date(account.exemptUntil).toISOString() : null,
        after: shown,
      });
      return { login: account.login, until: shown };
    },

    async unlock(login: string): Promise<{ login: string; cleared: number }> {
      const r = await lockout.unlock(login);
      audit('unlock', r);
      return r;
    },

    /**
     * Rules in force and scheduled, accounts per domestic phase and cohort (with how many
     * lack an IMAP-only password, i.e. would be refused), and refusals in the last hour/day.
     * Counting walks every account: seconds for a million.
     */
    async rolloutStatus(): Promise<RolloutStatus> {
      const now = clock();
      const doc = await rollout.getDoc();
      const cohorts = new Map<string, CohortCount>();
      let total = 0;
      let withoutImap = 0;
      await accounts.forEachAccount((a) => {
        total++;
        if (!a.imapHash) withoutImap++;
        const d =
          a.exemptUntil && a.exemptUntil > now
            ? { phase: 'off' as const, cohort: 'exempt' as const }
            : domesticPhase(doc, { bucket: bucketOf(a.login), explicit: a.domestic }, now);
        if (d.phase === 'off' && d.cohort !== 'exempt') return;
        const key = `${d.phase}|${d.cohort}`;
        const c = cohorts.get(key) ?? {
          phase: d.phase,
          cohort: d.cohort,
          accounts: 0,
          withoutImapPassword: 0,
        };
        c.accounts++;
        if (!a.imapHash) c.withoutImapPassword++;
        cohorts.set(key, c);
      });
      return {
        now: new Date(now).toISOString(),
        overseas: {
          phase: overseasPhase(doc, now),
          scheduled: doc.overseas
            .filter((r) => r.at > now)
            .map((r) => ({ phase: r.phase, at: new Date(r.at).toISOString() })),
        },
        domesticWaves: doc.domestic.map((w) => ({
          percent: w.percent,
          phase: w.phase,
          at: new Date(w.at).toISOString(),
          active: w.at <= now,
        })),
        accounts: total,
        accountsWithoutImapPassword: withoutImap,
        domesticCohorts: [...cohorts.values()].sort((a, b) => a.cohort.localeCompare(b.cohort)),
        refusals: await rollout.stats(now),
      };
    },
  };
}

export type OperatorService = ReturnType<typeof createOperatorService>;

export interface CohortCount {
  phase: Phase;
  cohort: Cohort | 'exempt';
  accounts: number;
  withoutImapPassword: number;
}

export interface RolloutStatus {
  now: string;
  overseas: { phase: Phase; scheduled: Array<{ phase: Phase; at: string }> };
  domesticWaves: Array<{ percent: number; phase: Phase; at: string; active: boolean }>;
  accounts: number;
  accountsWithoutImapPassword: number;
  domesticCohorts: CohortCount[];
  refusals: RestrictionStats;
}

/**
 * The operator service over one Redis connection, wired as the CLI, the admin API, the demo
 * and the tests use it.
 */
export function operatorServiceOn(
  redis: Redis,
  config: Pick<Config, 'redis' | 'passwords' | 'lockout'> & Partial<Pick<Config, 'notify'>>,
  opts: { log: Logger; actor: string; clock?: () => number; audit?: AuditSink },
): OperatorService {
  const prefix = config.redis.keyPrefix;
  const clock = opts.clock ?? Date.now;
  return createOperatorService({
    // With an SMS gateway configured, a domestic wave queues its notices (rules.md R8).
    ...(config.notify?.webhook
      ? { notices: new RedisOutbox({ redis, prefix, config: config.notify, log: opts.log, clock }) }
      : {}),
    accounts: new AccountStore(redis, prefix),
    rollout: new RolloutStore(redis, prefix),
    lockout: new LockoutStore(redis, prefix, config.lockout),
    hasher: new PasswordHasher(config.passwords.argon2, { maxConcurrent: 2, maxQueued: 100 }),
    log: opts.log,
    clock: opts.clock ?? Date.now,
    actor: opts.actor,
    audit: opts.audit ?? new RedisAuditLog(redis, prefix, opts.log),
  });
}
