import type { AuthResult } from '../auth/authenticator.js';
import type { DenyReason } from '../auth/policy.js';
import { assertNever } from '../util/errors.js';

/**
 * Every reply the gateway itself makes up for an SMTP client, in one place. The text starts
 * with the enhanced status code (RFC 3463); the AUTH codes are RFC 4954 §6's: 535 5.7.8 for
 * bad credentials, 454 4.7.0 for a temporary failure (clients then retry instead of asking the
 * user for a new password). A policy refusal keeps 535 5.7.8, because the fix is the same as
 * for a wrong password (type the IMAP-only password into the mail app, which then asks for
 * it), and says in plain words what to do. Replies relayed from the mail store are passed on
 * as the store wrote them.
 */

export interface SmtpReply {
  code: number;
  /** Text after the code, starting with the enhanced status code. */
  text: string;
}

const reply = (code: number, text: string): SmtpReply => ({ code, text });

export const AUTH_FAILED = reply(535, '5.7.8 Authentication failed.');
export const AUTH_TEMP_FAILED = reply(454, '4.7.0 Temporary authentication failure, please try again later.');
export const TOO_MANY_AUTH_FAILURES = reply(421, '4.7.0 Too many failed logins, closing connection.');
export const AUTHZID_REFUSED = reply(
  535,
  '5.7.8 Authentication failed: acting as another user is not allowed.',
);

export function denyReply(reason: DenyReason): SmtpReply {
  switch (reason) {
    case 'unknown-account':
    case 'bad-password':
      return AUTH_FAILED;
    case 'throttled':
      return reply(
        454,
        '4.7.0 Too many failed logins from your network. Please wait a few minutes before trying again.',
      );
    case 'locked':
      return reply(
        535,
        '5.7.8 This account is temporarily locked after too many failed logins. Please try again later or contact support.',
      );
    case 'imap-password-required':
      return reply(
        535,
        '5.7.8 This account requires its IMAP-only password. Use the IMAP-only password shown on the "confirm IMAP ID / password" screen, not the account password.',
      );
    case 'overseas-restricted':
      return reply(
        535,
        '5.7.8 Access from abroad is restricted for this account. Set an IMAP-only password and use it in your mail app, or use web mail.',
      );
    case 'domestic-restricted':
      return reply(
        535,
        '5.7.8 Mail app access with the account password has ended for this account. Issue an IMAP-only password and use it in your mail app, or use web mail.',
      );
    default:
      return assertNever(reason, 'deny reason');
  }
}

/** The reply to AUTH for a refused or deferred login. */
export function authFailureReply(result: Exclude<AuthResult, { kind: 'allow' }>): SmtpReply {
  switch (result.kind) {
    case 'deny':
      return denyReply(result.reason);
    case 'tempfail':
      return AUTH_TEMP_FAILED;
    default:
      return assertNever(result, 'auth result');
  }
}

export const SENDER_NOT_OWNED = (address: string): SmtpReply =>
  reply(553, `5.7.1 <${address}>: Sender address rejected: not one of this account's addresses.`);
export const TOO_MANY_MESSAGES = reply(
  421,
  '4.7.0 Too many messages in one session, closing connection; please reconnect to send more.',
);
export const UPSTREAM_UNAVAILABLE = reply(
  451,
  '4.4.1 The mail server is not reachable right now; please try again later.',
);
export const UPSTREAM_LOST = reply(
  451,
  '4.4.1 Connection to the mail server was lost; the message was not sent, please try again.',
);
export const UPSTREAM_PROTOCOL = reply(
  451,
  '4.3.0 The mail server gave an unexpected reply; please try again later.',
);
export const UNSUPPORTED_PARAMETER = (param: string): SmtpReply =>
  reply(555, `5.5.4 ${param} is not supported by the mail server.`);
export const CREDENTIAL_CHANGED = reply(
  421,
  "4.7.0 This account's password was changed; please log in again with the new password.",
);
export const SHUTTING_DOWN = reply(421, '4.3.2 Service shutting down, please try again later.');
export const UNTRUSTED_PROXY_HEADER = reply(
  421,
  '4.7.0 PROXY protocol header not accepted from this address.',
);
