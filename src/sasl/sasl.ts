/**
 * SASL mechanisms the gateway accepts from clients: PLAIN (RFC 4616) and LOGIN
 * (draft-murchison-sasl-login). Pure functions; the protocol sessions drive the exchange.
 */

export type SaslCredentials = { login: string; password: Buffer };
export type SaslOutcome = { ok: true; credentials: SaslCredentials } | { ok: false; error: string };

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Strict base64 (RFC 4648 §4): Node's decoder silently skips garbage, which we must not. */
export function decodeBase64(text: string): Buffer | null {
  const t = text.trim();
  if (t.length % 4 !== 0 || !BASE64.test(t)) return null;
  return Buffer.from(t, 'base64');
}

/** RFC 4616 §2: [authzid] NUL authcid NUL passwd. An authzid other than authcid is refused. */
export function parsePlain(message: Buffer): SaslOutcome {
  const first = message.indexOf(0);
  const second = first < 0 ? -1 : message.indexOf(0, first + 1);
  if (first < 0 || second < 0 || message.indexOf(0, second + 1) >= 0) {
    return { ok: false, error: 'malformed PLAIN message' };
  }
  const authzid = message.subarray(0, first).toString('utf8');
  const authcid = message.subarray(first + 1, second).toString('utf8');
  const password = Buffer.from(message.subarray(second + 1));
  if (authcid.length === 0) return { ok: false, error: 'empty user name' };
  if (authzid.length > 0 && authzid !== authcid) {
    return { ok: false, error: 'acting as another user is not allowed' };
  }
  return { ok: true, credentials: { login: authcid, password } };
}

export const LOGIN_USERNAME_PROMPT = Buffer.from('Username:').toString('base64');
export const LOGIN_PASSWORD_PROMPT = Buffer.from('Password:').toString('base64');
