import type { LockoutStore } from '../accounts/lockout-store.js';
import type { Account, AccountStore } from '../accounts/store.js';
import type { LockoutConfig } from '../config/schema.js';
import type { GeoAnswer, Provider } from '../geo/geo.js';
import type { NoticeSink } from '../notify/notices.js';
import { enforceDate } from '../notify/schedule.js';
import type { Logger } from '../observability/logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { bucketOf, type Cohort, domesticPhase, overseasPhase } from '../rollout/engine.js';
import type { RolloutStore } from '../rollout/store.js';
import { MailgateError } from '../util/errors.js';
import { OverloadedError } from '../util/semaphore.js';
import { type CredentialCache, credentialStateOf } from './credential-cache.js';
import { isLocked, isThrottled, needsSuccessRecord, sourceKey, tarpitDelayMs } from './lockout.js';
import type { PasswordHasher } from './passwords.js';
import {
  type CredentialMatch,
  type DenyReason,
  decide,
  type LoginFacts,
  type Protocol,
  type Restriction,
} from './policy.js';

export interface AuthRequest {
  /** As the client sent it; aliases and case are resolved here. */
  login: string;
  password: Buffer;
  protocol: Protocol;
  clientIp: string;
  sessionId: string;
}

export type TempFailReason = 'store-unavailable' | 'overloaded';

export type AuthResult =
  | {
      kind: 'allow';
      account: Account;
      credential: 'imap-only' | 'primary';
      /** The credential's version at login; a session is stale once the account's moves on. */
      version: number;
      geo: GeoAnswer;
      wouldRefuse: Restriction[];
    }
  /** delayMs: hold the reply this long (tarpit for a source that keeps failing). */
  | { kind: 'deny'; reason: DenyReason; geo: GeoAnswer; delayMs: number }
  | { kind: 'tempfail'; reason: TempFailReason };

export interface Authenticator {
  authenticate(req: AuthRequest): Promise<AuthResult>;
}

export interface AuthenticatorDeps {
  accounts: Pick<AccountStore, 'lookupForLogin' | 'replacePrimaryHash'>;
  lockout: Pick<LockoutStore, 'recordFailure' | 'recordSuccess'>;
  lockoutConfig: LockoutConfig;
  rollout: Pick<RolloutStore, 'record'>;
  /** provider: AS number and organisation (rules.md R11), when the gateway has an ASN source. */
  geo: { lookup(ip: string): GeoAnswer; provider?(ip: string): Provider | null };
  hasher: Pick<PasswordHasher, 'verify' | 'verifyDummy' | 'hash' | 'needsRehash'>;
  notices: NoticeSink;
  log: Logger;
  clock: () => number;
  metrics?: Pick<GatewayMetrics, 'auth'>;
  /** Remembers match() outcomes per credential state (auth/credential-cache.ts); absent: none. */
  credentialCache?: Pick<CredentialCache, 'enabled' | 'get' | 'set'>;
}

/**
 * Gathers the facts for one login (account, rollout rules and lockout state from Redis in one
 * round trip, location from GeoIP, password checks with argon2), runs the pure decision, and
 * applies its effects: failure counting, statistics, the auth log line and the notices.
 * Protocol front ends turn the result into their own replies.
 */
export function createAuthenticator(deps: AuthenticatorDeps): Authenticator {
  const { accounts, lockout, lockoutConfig, rollout, geo, hasher, notices, log, clock } = deps;

  /** Bookkeeping after the decision; its failure must not change the reply. */
  const background = (what: string, session: string, p: Promise<unknown>) => {
    p.catch((err: Error) =>
      log.warn({ event: 'error', session, what, error: err.message }, 'bookkeeping failed'),
    );
  };

  /**
   * Which stored credential the password matches. Every refused credential costs two
   * verifications and every accepted one a single verification, whether or not the account
   * exists or has an IMAP-only password, so the time taken tells an attacker nothing more
   * than the reply does.
   */
  async function match(account: Account | null, password: Buffer): Promise<CredentialMatch> {
    if (account?.imapHash) {
      if (await hasher.verify(account.imapHash, password)) return 'imap-only';
      if (account.primaryHash && (await hasher.verify(account.primaryHash, password))) return 'primary';
      if (!account.primaryHash) await hasher.verifyDummy(password);
      return 'none';
    }
    if (account?.primaryHash && (await hasher.verify(account.primaryHash, password))) return 'primary';
    if (!account?.primaryHash) await hasher.verifyDummy(password);
    await hasher.verifyDummy(password);
    return 'none';
  }

  /**
   * match() through the credential cache: a hit skips the verifications (and the hashing
   * queue). The key covers the credential versions and hashes just read from Redis, so a
   * changed credential misses on every gateway at once. Uncached paths keep match()'s timing.
   */
  async function cachedMatch(account: Account | null, login: string, password: Buffer) {
    const cache = deps.credentialCache;
    if (!cache?.enabled) return match(account, password);
    const state = credentialStateOf(account, login);
    const known = cache.get(state, password);
    if (known !== undefined) return known;
    const matched = await match(account, password);
    cache.set(state, password, matched);
    return matched;
  }

  /**
   * Rehash on login (as Dovecot and Django do): a primary hash imported as bcrypt, or with
   * older argon2 parameters, is replaced by one with the configured parameters the first time
   * its password is seen. Compare-and-set, so a concurrent set-primary wins. `password` is a
   * copy, wiped afterwards.
   */
  async function rehash(login: string, oldHash: string, password: Buffer): Promise<void> {
    try {
      const fresh = await hasher.hash(password);
      if (await accounts.replacePrimaryHash(login, oldHash, fresh)) {
        log.info(
          { event: 'rehash', login },
          'primary password hash upgraded to the configured argon2id parameters',
        );
      }
    } finally {
      password.fill(0);
    }
  }

  async function authenticate(req: AuthRequest): Promise<AuthResult> {
    const started = clock();
    const where = geo.lookup(req.clientIp);
    const provider = geo.provider?.(req.clientIp) ?? null;
    const src = sourceKey(req.clientIp);
    const logLine = {
      event: 'auth',
      session: req.sessionId,
      login: req.login,
      ip: req.clientIp,
      country: where.country,
      asn: where.asn ?? provider?.asn ?? null,
      protocol: req.protocol,
    };
    try {
      const looked = await accounts.lookupForLogin(
        req.login,
        src,
        started - lockoutConfig.windowMs,
        started - lockoutConfig.knownSourceMs,
      );
      const { account } = looked;
      const throttled = isThrottled(looked.lockout, lockoutConfig);
      const locked = account !== null && isLocked(looked.lockout);
      // A refused source or a locked account is answered without spending a verification.
      const matched = throttled || locked ? 'none' : await cachedMatch(account, req.login, req.password);
      const exempt = account?.exemptUntil != null && account.exemptUntil > started;
      const domestic = account
        ? domesticPhase(
            looked.rollout,
            { bucket: bucketOf(account.login), explicit: account.domestic },
            started,
          )
        : { phase: 'off' as const, cohort: 'none' as Cohort };
      const facts: LoginFacts = {
        protocol: req.protocol,
        accountExists: account !== null,
        throttled,
        locked,
        hasImapPassword: Boolean(account?.imapHash),
        matched,
        location: where.location,
        overseasPhase: exempt ? 'off' : overseasPhase(looked.rollout, started),
        domesticPhase: exempt ? 'off' : domestic.phase,
      };
      const decision = decide(facts);
      if (account) {
        for (const notice of decision.notices) {
          notices.queue({
            notice,
            login: account.login,
            msisdn: account.msisdn,
            protocol: req.protocol,
            ip: req.clientIp,
            country: where.country,
            at: started,
            lang: account.lang,
            tz: account.tz,
            ...(notice === 'restriction-warning' && decision.kind === 'allow'
              ? {
                  warnings: decision.wouldRefuse.map((restriction) => ({
                    restriction,
                    enforceAt: enforceDate(looked.rollout, restriction, account, started),
                  })),
                }
              : {}),
          });
        }
      }
      const cohortOf = (r: Restriction): Cohort => (r === 'domestic' ? domestic.cohort : 'none');
      const extra = { cohort: domestic.cohort, ...(exempt ? { exempt: true } : {}) };
      const why = decision.kind === 'allow' ? decision.credential : decision.reason;
      deps.metrics?.auth(req.protocol, decision.kind, why, domestic.cohort, clock() - started);

      if (decision.kind === 'allow') {
        const acct = account!;
        for (const r of decision.wouldRefuse) {
          background('stats', req.sessionId, rollout.record('would-refuse', r, cohortOf(r), started));
        }
        if (needsSuccessRecord(looked.lockout, lockoutConfig, started)) {
          background('known-source', req.sessionId, lockout.recordSuccess(acct.login, src, started));
        }
        // rules.md R11: one background round trip, after the reply is decided.
        notices.loginAllowed?.({
          login: acct.login,
          msisdn: acct.msisdn,
          lang: acct.lang,
          tz: acct.tz,
          protocol: req.protocol,
          country: where.country,
          provider,
          at: started,
        });
        if (decision.credential === 'primary' && acct.primaryHash && hasher.needsRehash(acct.primaryHash)) {
          background(
            'rehash',
            req.sessionId,
            rehash(acct.login, acct.primaryHash, Buffer.from(req.password)),
          );
        }
        log.info(
          {
            ...logLine,
            account: acct.login,
            result: 'allow',
            reason: decision.credential,
            wouldRefuse: decision.wouldRefuse,
            ...extra,
            ms: clock() - started,
          },
          'login allowed',
        );
        return {
          kind: 'allow',
          account: acct,
          credential: decision.credential,
          version: decision.credential === 'imap-only' ? acct.imapVersion : acct.primaryVersion,
          geo: where,
          wouldRefuse: decision.wouldRefuse,
        };
      }

      let failures = looked.lockout.sourceFailures;
      if (decision.countsAsFailure) {
        failures = await lockout
          .recordFailure(account?.login ?? null, src, started)
          .catch(() => failures + 1);
      }
      if (decision.reason === 'overseas-restricted' || decision.reason === 'domestic-restricted') {
        const r: Restriction = decision.reason === 'overseas-restricted' ? 'overseas' : 'domestic';
        background('stats', req.sessionId, rollout.record('refused', r, cohortOf(r), started));
      }
      const tarpit = decision.countsAsFailure || decision.reason === 'throttled';
      log.info(
        {
          ...logLine,
          result: 'deny',
          reason: decision.reason,
          ...extra,
          sourceFailures: failures,
          ms: clock() - started,
        },
        'login refused',
      );
      return {
        kind: 'deny',
        reason: decision.reason,
        geo: where,
        delayMs: tarpit ? tarpitDelayMs(failures, lockoutConfig) : 0,
      };
    } catch (err) {
      const reason: TempFailReason = err instanceof OverloadedError ? 'overloaded' : 'store-unavailable';
      deps.metrics?.auth(req.protocol, 'tempfail', reason, 'none', clock() - started);
      if (!(err instanceof MailgateError)) {
        log.error({ event: 'error', session: req.sessionId, err }, 'authentication failed');
      }
      log.warn(
        {
          ...logLine,
          result: 'tempfail',
          reason,
          code: (err as MailgateError).code ?? null,
          ms: clock() - started,
        },
        'login deferred',
      );
      return { kind: 'tempfail', reason };
    }
  }

  return { authenticate };
}
