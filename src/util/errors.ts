/**
 * Every error mailgate throws on purpose has a class and a stable code, so that callers can
 * classify it without string matching and logs can be grepped by code. A wrong password is
 * never an error: it is a value (see auth/policy.ts).
 */
export class MailgateError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A configuration file or value that cannot be used; the message names the key. */
export class ConfigError extends MailgateError {
  constructor(message: string) {
    super('MG_CONFIG', message);
  }
}

/** A bad argument to an operator command (unknown login, malformed value). */
export class UsageError extends MailgateError {
  constructor(message: string) {
    super('MG_USAGE', message);
  }
}

/** The operation was understood but refused (e.g. account already exists). */
export class RefusedError extends MailgateError {
  constructor(message: string, code = 'MG_REFUSED') {
    super(code, message);
  }
}

/** Refused because the named account (or other object) does not exist: HTTP 404, CLI exit 1. */
export class NotFoundError extends RefusedError {
  constructor(message: string) {
    super(message, 'MG_NOT_FOUND');
  }
}

/** Redis could not be reached or answered with an error. */
export class StoreUnavailableError extends MailgateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MG_STORE_UNAVAILABLE', message, options);
  }
}

export function assertNever(value: never, what = 'value'): never {
  throw new Error(`unexpected ${what}: ${JSON.stringify(value)}`);
}
