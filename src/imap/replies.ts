import type { TempFailReason } from '../auth/authenticator.js';
import type { DenyReason } from '../auth/policy.js';
import { assertNever } from '../util/errors.js';

/**
 * Every text the gateway sends to an IMAP client before the login completes, in one place.
 * Response codes per RFC 5530: AUTHENTICATIONFAILED for bad credentials, UNAVAILABLE for a
 * temporary failure (clients retry instead of asking the user for a new password). Policy
 * refusals carry ALERT, whose text RFC 9051 §7.1 says clients MUST show to the user, and say
 * in plain words what to do.
 */

export const AUTH_FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
export const TEMP_FAILED = 'NO [UNAVAILABLE] Temporary authentication failure, please try again later.';

export function denyReply(reason: DenyReason): string {
  switch (reason) {
    case 'unknown-account':
    case 'bad-password':
      return AUTH_FAILED;
    case 'throttled':
      return 'NO [ALERT] Too many failed logins from your network. Please wait a few minutes before trying again.';
    case 'locked':
      return 'NO [ALERT] This account is temporarily locked after too many failed logins. Please try again later or contact support.';
    case 'imap-password-required':
      return 'NO [ALERT] This account requires its IMAP-only password. Use the IMAP-only password shown on the "confirm IMAP ID / password" screen, not the account password.';
    case 'overseas-restricted':
      return 'NO [ALERT] Access from abroad is restricted for this account. Set an IMAP-only password and use it in your mail app, or use web mail.';
    case 'domestic-restricted':
      return 'NO [ALERT] Mail app access with the account password has ended for this account. Issue an IMAP-only password and use it in your mail app, or use web mail.';
    default:
      return assertNever(reason, 'deny reason');
  }
}

export function tempFailReply(_reason: TempFailReason): string {
  return TEMP_FAILED;
}

/** An IMAP quoted string (RFC 9051 §4.3); throws for CR, LF or NUL, which need a literal. */
export function quoteImapString(value: string): string {
  if (/[\r\n\0]/.test(value)) throw new Error('value cannot be sent as a quoted string');
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}
