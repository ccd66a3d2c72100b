import { assertNever } from '../util/errors.js';

/**
 * The login decision (docs/rules.md, the login decision), as a pure function of facts gathered beforehand. It does no
 * I/O and reads no clock: the authenticator gathers the account, the rollout state, the
 * client's location and the outcome of the password checks, and applies the decision's
 * effects (reply, counters, notices) afterwards.
 */

export type Protocol = 'imap' | 'smtp';
export type Phase = 'off' | 'warn' | 'enforce';
export type Location = 'domestic' | 'overseas';

/** Which stored credential, if any, the given password matched. */
export type CredentialMatch = 'imap-only' | 'primary' | 'none';

export interface LoginFacts {
  protocol: Protocol;
  /** False when no account has this login or alias. */
  accountExists: boolean;
  /**
   * Too many recent failures from this client's address (or its IPv6 /64), whatever account
   * they named: refused before any password is checked.
   */
  throttled: boolean;
  /** Step 2 (rules.md R13): locked for this client, by failures on this account (see auth/lockout.ts). */
  locked: boolean;
  hasImapPassword: boolean;
  matched: CredentialMatch;
  /** Where the client is, from GeoIP (unknown country already mapped per geo.unknownCountry). */
  location: Location;
  /** Overseas restriction phase (rules.md R7), global. */
  overseasPhase: Phase;
  /** Domestic restriction phase (rules.md R8) as it applies to this account. */
  domesticPhase: Phase;
}

export type DenyReason =
  | 'throttled'
  | 'unknown-account'
  | 'bad-password'
  | 'locked'
  | 'imap-password-required'
  | 'overseas-restricted'
  | 'domestic-restricted';

/** A restriction that applies to a login: refuses it under `enforce`, is only recorded under `warn`. */
export type Restriction = 'overseas' | 'domestic';

/** A subscriber notification to queue (rules.md R7, R8, R12); delivery belongs to notify/. */
export type Notice = 'overseas-restricted' | 'domestic-restricted' | 'restriction-warning';

export type Decision =
  | {
      kind: 'allow';
      credential: 'imap-only' | 'primary';
      /** Restrictions in `warn` phase that would have refused this login. */
      wouldRefuse: Restriction[];
      notices: Notice[];
    }
  | {
      kind: 'deny';
      reason: DenyReason;
      /** Whether this attempt counts toward the lockout threshold (rules.md R13). */
      countsAsFailure: boolean;
      notices: Notice[];
    };

export function decide(f: LoginFacts): Decision {
  // 0. Sources that keep failing are slowed down and then refused before anything else, so a
  //    password spray costs the sprayer, not the subscriber (WildDuck's order: IP first).
  if (f.throttled) return deny('throttled', false);

  // 1. Unknown account: the caller has already spent a dummy verification so that the reply
  //    takes as long as for a wrong password.
  if (!f.accountExists) return deny('unknown-account', true);

  // 2. Locked (rules.md R13): refused whatever the password, so a guess cannot be confirmed.
  if (f.locked) return deny('locked', false);

  // 3. The account has an IMAP-only password: it alone opens IMAP/SMTP, from anywhere (rules.md R1).
  if (f.hasImapPassword) {
    if (f.matched === 'imap-only') return allow('imap-only', [], []);
    // The primary password still "counts": a client left on it keeps failing and should lock (rules.md R4, R13).
    if (f.matched === 'primary') return deny('imap-password-required', true);
    return deny('bad-password', true);
  }

  // 4. No IMAP-only password, primary password given. Overseas is checked first (rules.md R9).
  if (f.matched === 'primary') {
    const wouldRefuse: Restriction[] = [];
    const notices: Notice[] = [];
    if (f.location === 'overseas') {
      switch (f.overseasPhase) {
        case 'enforce':
          return deny('overseas-restricted', false, ['overseas-restricted']);
        case 'warn':
          wouldRefuse.push('overseas');
          break;
        case 'off':
          break;
        default:
          assertNever(f.overseasPhase, 'phase');
      }
    }
    switch (f.domesticPhase) {
      case 'enforce':
        return deny('domestic-restricted', false, ['domestic-restricted']);
      case 'warn':
        wouldRefuse.push('domestic');
        break;
      case 'off':
        break;
      default:
        assertNever(f.domesticPhase, 'phase');
    }
    if (wouldRefuse.length > 0) notices.push('restriction-warning');
    return allow('primary', wouldRefuse, notices);
  }

  // 5. Anything else is a wrong password.
  return deny('bad-password', true);
}

function allow(credential: 'imap-only' | 'primary', wouldRefuse: Restriction[], notices: Notice[]): Decision {
  return { kind: 'allow', credential, wouldRefuse, notices };
}

function deny(reason: DenyReason, countsAsFailure: boolean, notices: Notice[] = []): Decision {
  return { kind: 'deny', reason, countsAsFailure, notices };
}
