/**
 * Load-test failures by kind, as an operator reads them: was the password refused, did policy
 * refuse the login, was the service unavailable (the client would retry), or did the network,
 * TLS or the protocol fail? Classified from what imapflow and nodemailer report: the IMAP
 * response code (RFC 5530), the SMTP reply code (RFC 4954, 535 / 454), Node's error codes.
 */

export const ERROR_KINDS = [
  /** Bad credentials: IMAP [AUTHENTICATIONFAILED], SMTP 535 "Authentication failed." */
  'auth',
  /** A policy refusal with a reason: IMAP NO [ALERT] ..., SMTP 535 with a sentence. */
  'refused',
  /** Temporary: IMAP [UNAVAILABLE], SMTP 454 / 421. */
  'unavailable',
  'connect',
  'tls',
  'timeout',
  /** The server closed the connection (BYE, reset) in the middle. */
  'closed',
  /** A message refused by the submission server (SMTP 4xx/5xx after AUTH). */
  'rejected',
  /** Any other unexpected answer (a NO to SELECT, FETCH of an empty mailbox, ...). */
  'protocol',
  'other',
] as const;

export type ErrorKind = (typeof ERROR_KINDS)[number];

/** Our own per-operation deadline (--timeout). */
export class LoadtestTimeoutError extends Error {
  readonly code = 'MG_LOADTEST_TIMEOUT';
}

/** A scenario precondition that failed (e.g. nothing to FETCH). */
export class ScenarioError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
  }
}

interface ClientError {
  code?: unknown;
  message?: unknown;
  serverResponseCode?: unknown;
  authenticationFailed?: unknown;
  responseCode?: unknown;
  response?: unknown;
  command?: unknown;
}

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'EADDRINUSE',
  'EMFILE',
  'ENFILE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNECTION',
]);
const TIMEOUT_CODES = new Set([
  'ETIMEDOUT',
  'CONNECT_TIMEOUT',
  'GREETING_TIMEOUT',
  'MG_LOADTEST_TIMEOUT',
  'ESOCKETTIMEDOUT',
]);
const CLOSED_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'EConnectionClosed',
  'NoConnection',
  'ESOCKET',
  'StateLogout',
]);

export function classifyError(err: unknown): ErrorKind {
  if (err instanceof ScenarioError) return err.kind;
  const e = (typeof err === 'object' && err !== null ? err : {}) as ClientError;
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : '';
  const responseText = typeof e.response === 'string' ? e.response : '';

  // IMAP response codes (RFC 5530).
  switch (e.serverResponseCode) {
    case 'AUTHENTICATIONFAILED':
    case 'AUTHORIZATIONFAILED':
      return 'auth';
    case 'UNAVAILABLE':
      return 'unavailable';
    case 'ALERT':
    case 'CONTACTADMIN':
    case 'EXPIRED':
    case 'PRIVACYREQUIRED':
      return 'refused';
  }
  if (e.authenticationFailed === true) return /\[ALERT\]/.test(responseText) ? 'refused' : 'auth';

  // SMTP reply codes (nodemailer: responseCode, response).
  if (typeof e.responseCode === 'number') {
    const rc = e.responseCode;
    if (code === 'EAUTH' || rc === 535 || rc === 538) {
      if (rc === 454 || rc === 421) return 'unavailable';
      return /Authentication failed\.?\s*$/i.test(responseText) ? 'auth' : 'refused';
    }
    if (rc === 421 || rc === 454) return 'unavailable';
    if (code === 'EENVELOPE' || code === 'EMESSAGE' || rc >= 400) return 'rejected';
  }
  if (code === 'EAUTH') return 'auth';

  if (code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || code === 'ETLS') return 'tls';
  if (/certificate|SSL routines|TLS/i.test(message) && !CLOSED_CODES.has(code)) return 'tls';
  if (TIMEOUT_CODES.has(code) || /timed? ?out/i.test(message)) return 'timeout';
  if (CONNECT_CODES.has(code)) return 'connect';
  if (CLOSED_CODES.has(code) || /connection (closed|reset)|socket hang up|unexpected close/i.test(message))
    return 'closed';
  if (code === 'EPROTOCOL' || typeof e.serverResponseCode === 'string' || /^(NO|BAD)\b/.test(responseText))
    return 'protocol';
  if (message.includes('Command failed')) return 'protocol';
  return 'other';
}

/**
 * A short description for the report's error samples: the code and the server's text, with
 * anything that looks like a login or address removed; never a password (clients never put
 * one in an error).
 */
export function describeError(err: unknown): string {
  const e = (typeof err === 'object' && err !== null ? err : {}) as ClientError;
  const text =
    typeof e.response === 'string' ? e.response : typeof e.message === 'string' ? e.message : String(err);
  const parts = [
    typeof e.code === 'string' ? e.code : '',
    typeof e.serverResponseCode === 'string' && !text.includes(`[${e.serverResponseCode}]`)
      ? `[${e.serverResponseCode}]`
      : '',
    typeof e.responseCode === 'number' && !text.startsWith(String(e.responseCode))
      ? String(e.responseCode)
      : '',
    text,
  ];
  return parts
    .filter(Boolean)
    .join(' ')
    .replace(/[^\s"<>]+@[^\s"<>]+/g, '[address]')
    .slice(0, 200);
}
