import type { Account, AccountStore } from '../accounts/store.js';
import type { GeoAnswer } from '../geo/geo.js';
import type { NoticeSink } from '../notify/notices.js';
import type { Logger } from '../observability/logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { MailgateError } from '../util/errors.js';
import { OverloadedError } from '../util/semaphore.js';
import type { PasswordHasher } from './passwords.js';
import {
  type CredentialMatch,
  type DenyReason,
  decide,
  type LoginFacts,
  type Phase,
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
      geo: GeoAnswer;
      wouldRefuse: Restriction[];
    }
  | { kind: 'deny'; reason: DenyReason; geo: GeoAnswer }
  | { kind: 'tempfail'; reason: TempFailReason };

export interface Authenticator {
  authenticate(req: AuthRequest): Promise<AuthResult>;
}

export interface AuthenticatorDeps {
  accounts: Pick<AccountStore, 'lookupForLogin'>;
  geo: { lookup(ip: string): GeoAnswer };
  hasher: Pick<PasswordHasher, 'verify' | 'verifyDummy'>;
  notices: NoticeSink;
  log: Logger;
  clock: () => number;
  metrics?: Pick<GatewayMetrics, 'auth'>;
}

const PHASE_RANK: Record<Phase, number> = { off: 0, warn: 1, enforce: 2 };

function strongest(a: Phase, b: Phase): Phase {
  return PHASE_RANK[a] >= PHASE_RANK[b] ? a : b;
}

/**
 * Gathers the facts for one login (account and rollout from Redis, location from GeoIP,
 * password checks with argon2), runs the pure decision, and applies its effects: the auth
 * log line and the notices. Protocol front ends turn the result into their own replies.
 */
export function createAuthenticator(deps: AuthenticatorDeps): Authenticator {
  const { accounts, geo, hasher, notices, log, clock } = deps;

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

  async function authenticate(req: AuthRequest): Promise<AuthResult> {
    const started = clock();
    const where = geo.lookup(req.clientIp);
    const logLine = {
      event: 'auth',
      session: req.sessionId,
      login: req.login,
      ip: req.clientIp,
      country: where.country,
      asn: where.asn ?? null,
      protocol: req.protocol,
    };
    try {
      const { account, rollout } = await accounts.lookupForLogin(req.login);
      const matched = await match(account, req.password);
      const facts: LoginFacts = {
        protocol: req.protocol,
        accountExists: account !== null,
        locked: false,
        hasImapPassword: Boolean(account?.imapHash),
        matched,
        location: where.location,
        overseasPhase: rollout.overseas,
        domesticPhase: account ? strongest(account.domesticPhase, rollout.domesticAll) : 'off',
      };
      const decision = decide(facts);
      const ms = clock() - started;
      const why = decision.kind === 'allow' ? decision.credential : decision.reason;
      deps.metrics?.auth(req.protocol, decision.kind, why, 'none', ms);
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
          });
        }
      }
      if (decision.kind === 'allow') {
        log.info(
          {
            ...logLine,
            account: account!.login,
            result: 'allow',
            reason: decision.credential,
            wouldRefuse: decision.wouldRefuse,
            ms,
          },
          'login allowed',
        );
        return {
          kind: 'allow',
          account: account!,
          credential: decision.credential,
          geo: where,
          wouldRefuse: decision.wouldRefuse,
        };
      }
      log.info({ ...logLine, result: 'deny', reason: decision.reason, ms }, 'login refused');
      return { kind: 'deny', reason: decision.reason, geo: where };
    } catch (err) {
      const reason: TempFailReason = err instanceof OverloadedError ? 'overloaded' : 'store-unavailable';
      const ms = clock() - started;
      deps.metrics?.auth(req.protocol, 'tempfail', reason, 'none', ms);
      if (!(err instanceof MailgateError))
        log.error({ event: 'error', session: req.sessionId, err }, 'authentication failed');
      log.warn(
        { ...logLine, result: 'tempfail', reason, code: (err as MailgateError).code ?? null, ms },
        'login deferred',
      );
      return { kind: 'tempfail', reason };
    }
  }

  return { authenticate };
}
