import type { Account, AccountStore, RolloutState } from '../accounts/store.js';
import { checkPhc, generateImapPassword, type PasswordHasher } from '../auth/passwords.js';
import type { Phase } from '../auth/policy.js';
import { parseHostPort } from '../imap/upstream.js';
import type { Logger } from '../observability/logger.js';
import { RefusedError, UsageError } from '../util/errors.js';
import type { AuditSink } from './audit.js';

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
  domesticPhase: Phase;
  createdAt: string;
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
    domesticPhase: a.domesticPhase,
    createdAt: new Date(a.createdAt).toISOString(),
  };
}

export interface OperatorDeps {
  accounts: AccountStore;
  hasher: Pick<PasswordHasher, 'hash'>;
  log: Logger;
  clock: () => number;
  /** Who is acting, for the audit line: a CLI user or an API token name. */
  actor: string;
  /** The durable audit trail (the Redis stream, audit.ts), besides the `admin` log line. */
  audit: AuditSink;
}

const MSISDN = /^\+[1-9]\d{6,14}$/; // E.164

export function createOperatorService(deps: OperatorDeps) {
  const { accounts, hasher, log, clock, actor } = deps;
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
    }): Promise<AccountView> {
      if (input.primaryPassword !== undefined && input.primaryHash !== undefined) {
        throw new UsageError('give either a primary password or a primary hash, not both');
      }
      if (input.msisdn !== undefined && !MSISDN.test(input.msisdn)) {
        throw new UsageError(`msisdn "${input.msisdn}" is not an E.164 number like +819012345678`);
      }
      if (input.upstream !== undefined) {
        try {
          parseHostPort(input.upstream);
        } catch {
          throw new UsageError(`upstream "${input.upstream}" is not HOST:PORT`);
        }
      }
      if (input.primaryPassword !== undefined && input.primaryPassword.length === 0) {
        throw new UsageError('the primary password is empty');
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
        now: clock(),
      });
      audit('account.add', { login: account.login, aliases: account.aliases });
      return viewAccount(account);
    },

    async showAccount(login: string): Promise<AccountView> {
      return viewAccount(await accounts.require(login));
    },

    /**
     * Issues a new IMAP-only password (S3 method 2, S4), or with ifAbsent only when none exists
     * (S3 method 1, S5). The password is returned once and stored only as a hash.
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

    async setOverseasPhase(phase: Phase): Promise<RolloutState> {
      const before = await accounts.getRollout();
      const after = await accounts.setRollout({ overseas: phase });
      audit('rollout.overseas', { before: before.overseas, after: after.overseas });
      return after;
    },

    async setDomesticPhase(
      target: { logins: string[] } | { all: true },
      phase: Phase,
    ): Promise<{ phase: Phase; logins: string[] | 'all' }> {
      if ('all' in target) {
        const before = await accounts.getRollout();
        await accounts.setRollout({ domesticAll: phase });
        audit('rollout.domestic', { target: 'all', before: before.domesticAll, after: phase });
        return { phase, logins: 'all' };
      }
      if (target.logins.length === 0) throw new UsageError('name at least one --login, or --all');
      const { changed, missing } = await accounts.setDomesticPhase(target.logins, phase);
      if (missing.length)
        throw new RefusedError(`no account ${missing.map((m) => `"${m}"`).join(', ')}; nothing changed`);
      audit('rollout.domestic', { target: changed, after: phase });
      return { phase, logins: changed };
    },

    async rolloutStatus(): Promise<RolloutState & { accounts: number }> {
      const [state, count] = await Promise.all([accounts.getRollout(), accounts.countAccounts()]);
      return { ...state, accounts: count };
    },
  };
}

export type OperatorService = ReturnType<typeof createOperatorService>;
