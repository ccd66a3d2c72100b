import type { Readable } from 'node:stream';
import type { Account } from '../accounts/store.js';
import type { Authenticator } from '../auth/authenticator.js';
import type { SmtpConfig } from '../config/schema.js';
import type { ClientConnection } from '../net/listener.js';
import type { SessionRegistry } from '../net/session-registry.js';
import type { Logger } from '../observability/logger.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import { MailgateError } from '../util/errors.js';
import { mailCommand, ownsSender, queueIdOf, rcptCommand } from './envelope.js';
import {
  AUTH_TEMP_FAILED,
  AUTHZID_REFUSED,
  authFailureReply,
  CREDENTIAL_CHANGED,
  SENDER_NOT_OWNED,
  type SmtpReply,
  TOO_MANY_AUTH_FAILURES,
  TOO_MANY_MESSAGES,
  UNSUPPORTED_PARAMETER,
  UPSTREAM_LOST,
  UPSTREAM_PROTOCOL,
  UPSTREAM_UNAVAILABLE,
} from './replies.js';
import {
  isPositive,
  replyText,
  SmtpClientAbortedError,
  SmtpMessageTooLargeError,
  SmtpUpstream,
  SmtpUpstreamClosedError,
  SmtpUpstreamConnectError,
  type UpstreamReply,
} from './upstream.js';

/**
 * One client's submission session after the listener: the login (through the one
 * authenticator, protocol smtp), then every mail transaction relayed command by command to
 * the mail store over one upstream connection, so that each reply the client gets is the
 * store's own. The client's 250 for a message is the store's 250 for it (docs/rules.md, after the decision): a message
 * is never acknowledged before the store has it, and never sent to the store twice.
 */

export interface SubmissionDeps {
  config: SmtpConfig;
  authenticator: Authenticator;
  log: Logger;
  clock: () => number;
  /** The gateway's name, for EHLO to the store. */
  localName: string;
  /** Logged-in sessions by account, so that a credential change ends them (rules.md R4, R14). */
  sessions?: Pick<SessionRegistry, 'add'>;
  metrics?: Pick<GatewayMetrics, 'sessionOpened' | 'sessionClosed' | 'upstreamError'>;
  /** Ends the client's connection with this reply (smtp-server sends it, then closes). */
  kick: (reply: SmtpReply) => void;
}

export type AuthOutcome = { ok: true; login: string } | { ok: false; reply: SmtpReply };
export type DataOutcome = { ok: true; text: string } | { ok: false; reply: SmtpReply };

export interface AuthAttempt {
  method: string;
  username: string;
  password: string;
  /** SASL PLAIN authorization identity (RFC 4616), '' when absent. */
  authzid: string;
  /** The client's EHLO argument, if it gave one. */
  helo: string | null;
}

export interface EnvelopeFacts {
  bodyType?: string;
  smtpUtf8?: boolean;
  /** SIZE= of MAIL FROM. */
  size?: string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Submission {
  #account: Account | null = null;
  #credential = '';
  #unregister: (() => void) | null = null;
  #upstream: SmtpUpstream | null = null;
  /** The store has a MAIL FROM that no final reply has closed yet; the next MAIL needs an RSET first. */
  #inTransaction = false;
  #helo: string | null = null;
  #rcpts = 0;
  #authFailures = 0;
  #messages = 0;
  #closed = false;
  readonly #started: number;

  constructor(
    readonly conn: ClientConnection,
    private readonly deps: SubmissionDeps,
  ) {
    this.#started = deps.clock();
  }

  get login(): string | null {
    return this.#account?.login ?? null;
  }

  /** After STARTTLS (RFC 3207 §4.2) nothing learnt before TLS stays: no login, no store session. */
  resetAfterTls(): void {
    this.#dropUpstream();
    this.#loggedOut();
  }

  #loggedOut(): void {
    if (this.#unregister) {
      this.#unregister();
      this.#unregister = null;
      this.deps.metrics?.sessionClosed('smtp');
    }
    this.#account = null;
  }

  async auth(a: AuthAttempt): Promise<AuthOutcome> {
    const { log } = this.deps;
    this.#helo = a.helo;
    // RFC 4616 §2: an authzid other than the login asks to act as someone else; nobody may.
    if (a.authzid && a.authzid.toLowerCase() !== a.username.toLowerCase()) {
      log.info(
        {
          event: 'auth',
          session: this.conn.id,
          login: a.username,
          ip: this.conn.clientIp,
          protocol: 'smtp',
          result: 'deny',
          reason: 'authzid-not-permitted',
        },
        'login refused',
      );
      return this.#authFailed(AUTHZID_REFUSED);
    }
    const password = Buffer.from(a.password, 'utf8');
    const result = await this.deps.authenticator.authenticate({
      login: a.username,
      password,
      protocol: 'smtp',
      clientIp: this.conn.clientIp,
      sessionId: this.conn.id,
    });
    password.fill(0);
    if (this.#closed) return { ok: false, reply: AUTH_TEMP_FAILED };
    if (result.kind !== 'allow') {
      if (result.kind === 'tempfail') return { ok: false, reply: authFailureReply(result) };
      // A source that keeps failing is answered slowly (tarpit), as the authenticator says.
      if (result.delayMs > 0) await sleep(result.delayMs);
      return this.#authFailed(authFailureReply(result));
    }
    // Like IMAP: the login is only complete once the store has taken the user, so that a
    // store outage answers AUTH with 454 (try again later), not a later MAIL with an error.
    try {
      this.#upstream = await this.#openUpstream(result.account);
    } catch (err) {
      this.#logUpstream(err, result.account.login, 'upstream login failed');
      return { ok: false, reply: AUTH_TEMP_FAILED };
    }
    if (this.#closed) {
      this.#dropUpstream();
      return { ok: false, reply: AUTH_TEMP_FAILED };
    }
    this.#account = result.account;
    this.#credential = result.credential;
    this.deps.metrics?.sessionOpened('smtp');
    this.#unregister =
      this.deps.sessions?.add({
        id: this.conn.id,
        login: result.account.login,
        credential: result.credential,
        version: result.version,
        // The password this session logged in with was replaced or revoked (rules.md R4): end it. A
        // message in DATA is abandoned at the store (never acknowledged); the client resends
        // it after logging in again with the new password.
        close: (reason) => {
          this.deps.log.info(
            {
              event: 'session',
              session: this.conn.id,
              protocol: 'smtp',
              login: result.account.login,
              reason,
            },
            'ending session',
          );
          this.#dropUpstream();
          this.deps.kick(CREDENTIAL_CHANGED);
        },
      }) ?? null;
    return { ok: true, login: result.account.login };
  }

  #authFailed(reply: SmtpReply): AuthOutcome {
    this.#authFailures++;
    if (this.#authFailures >= this.deps.config.limits.maxAuthFailures)
      return { ok: false, reply: TOO_MANY_AUTH_FAILURES };
    return { ok: false, reply };
  }

  #openUpstream(account: Account): Promise<SmtpUpstream> {
    return SmtpUpstream.open(this.deps.config.upstream, {
      // An account's own `upstream` is its IMAP store; submission always goes to smtp.upstream.
      servers: this.deps.config.upstream.servers,
      user: account.upstreamUser ?? account.login,
      clientIp: this.conn.clientIp,
      clientPort: this.conn.clientPort,
      clientHelo: this.#helo,
      localName: this.deps.localName,
    });
  }

  /** MAIL FROM: null to accept (the client gets 250), or the reply to give. */
  async mailFrom(address: string, env: EnvelopeFacts): Promise<SmtpReply | null> {
    const account = this.#account;
    if (!account) return { code: 530, text: '5.7.0 Authentication required.' };
    this.#rcpts = 0;
    if (this.#messages >= this.deps.config.limits.maxMessagesPerSession) return TOO_MANY_MESSAGES;
    if (this.deps.config.requireSenderMatch && !ownsSender(account, address)) {
      this.deps.log.info(
        { event: 'submission', session: this.conn.id, login: account.login, result: 'sender-refused' },
        'envelope sender is not one of the account addresses',
      );
      return SENDER_NOT_OWNED(address);
    }
    // A store connection that went away while the client was idle (store timeout, restart) is
    // replaced: nothing of a transaction is lost, MAIL starts one.
    for (let attempt = 1; ; attempt++) {
      try {
        const up = await this.#usableUpstream(account);
        if (this.#inTransaction) {
          // The client reset (RSET, EHLO) or abandoned its last transaction; smtp-server does
          // not tell us, so the store's half-open transaction is reset before the new one.
          const r = await up.command('RSET');
          if (!isPositive(r)) throw new SmtpUpstreamClosedError(`RSET refused: ${r.code} ${replyText(r)}`);
          this.#inTransaction = false;
        }
        const cmd = mailCommand(address, env, (k) => up.extension(k) !== undefined);
        if ('unsupported' in cmd) return UNSUPPORTED_PARAMETER(cmd.unsupported);
        const r = await up.command(cmd.line);
        if (isPositive(r)) this.#inTransaction = true;
        return isPositive(r) ? null : storeReply(r);
      } catch (err) {
        this.#dropUpstream();
        if (err instanceof SmtpUpstreamClosedError && attempt === 1) continue;
        this.#logUpstream(err, account.login, 'mail server unavailable');
        return err instanceof SmtpUpstreamConnectError ? UPSTREAM_UNAVAILABLE : UPSTREAM_PROTOCOL;
      }
    }
  }

  async #usableUpstream(account: Account): Promise<SmtpUpstream> {
    if (this.#upstream?.alive) return this.#upstream;
    this.#dropUpstream();
    this.#upstream = await this.#openUpstream(account);
    return this.#upstream;
  }

  async rcptTo(address: string, smtpUtf8: boolean): Promise<SmtpReply | null> {
    const up = this.#upstream;
    if (!this.#account || !up?.alive || !this.#inTransaction) return this.#lost();
    try {
      const r = await up.command(rcptCommand(address, smtpUtf8));
      if (!isPositive(r)) return storeReply(r);
      this.#rcpts++;
      return null;
    } catch (err) {
      this.#logUpstream(err, this.#account.login, 'mail server lost during RCPT');
      return this.#lost();
    }
  }

  /**
   * DATA: smtp-server has already told the client 354 and is passing the message on as it
   * arrives. The store gets DATA, then the stream; the outcome is the store's reply to the
   * final dot. Every failure before that reply leaves the store without a final dot.
   */
  async data(stream: Readable & { byteLength?: number }): Promise<DataOutcome> {
    const account = this.#account;
    const up = this.#upstream;
    const started = this.deps.clock();
    const finish = (
      result: string,
      r: SmtpReply | UpstreamReply | null,
      extra: Record<string, unknown> = {},
    ) => {
      this.#messages++;
      this.#inTransaction = false;
      const text = r === null ? '' : 'text' in r ? r.text : replyText(r);
      this.deps.log.info(
        {
          event: 'submission',
          session: this.conn.id,
          login: account?.login ?? null,
          ip: this.conn.clientIp,
          result,
          code: r?.code ?? null,
          queueId: result === 'accepted' ? queueIdOf(text) : null,
          size: stream.byteLength ?? null,
          rcpts: this.#rcpts,
          upstream: up?.server ?? null,
          ms: this.deps.clock() - started,
          ...extra,
        },
        'message relayed',
      );
    };
    if (!account || !up?.alive || !this.#inTransaction) {
      finish('deferred', UPSTREAM_LOST);
      return { ok: false, reply: this.#lost() };
    }
    try {
      const go = await up.command('DATA');
      if (go.code !== 354) {
        finish(go.code >= 500 ? 'rejected' : 'deferred', go);
        return { ok: false, reply: storeReply(go) };
      }
      const r = await up.streamMessage(stream, { maxBytes: this.deps.config.limits.maxMessageBytes });
      if (r.code === 250) {
        finish('accepted', r);
        return { ok: true, text: replyText(r) };
      }
      finish(r.code >= 500 ? 'rejected' : 'deferred', r);
      return { ok: false, reply: storeReply(r) };
    } catch (err) {
      this.#dropUpstream();
      if (err instanceof SmtpMessageTooLargeError) {
        const reply = {
          code: 552,
          text: `5.3.4 Message exceeds fixed maximum message size ${this.deps.config.limits.maxMessageBytes}.`,
        };
        finish('too-large', reply);
        return { ok: false, reply };
      }
      if (err instanceof SmtpClientAbortedError) {
        finish('aborted', null);
        return { ok: false, reply: UPSTREAM_LOST };
      }
      this.#logUpstream(err, account.login, 'mail server lost during DATA');
      finish('deferred', UPSTREAM_LOST, { code: (err as MailgateError).code ?? 'MG_INTERNAL' });
      return { ok: false, reply: UPSTREAM_LOST };
    }
  }

  #lost(): SmtpReply {
    this.#dropUpstream();
    return UPSTREAM_LOST;
  }

  #dropUpstream(): void {
    this.#upstream?.destroy();
    this.#upstream = null;
    this.#inTransaction = false;
  }

  #logUpstream(err: unknown, login: string, msg: string): void {
    const code = err instanceof MailgateError ? err.code : 'MG_INTERNAL';
    this.deps.metrics?.upstreamError('smtp', code);
    if (!(err instanceof MailgateError))
      this.deps.log.error({ event: 'error', session: this.conn.id, err }, 'unexpected error in SMTP relay');
    this.deps.log.warn(
      {
        event: 'upstream',
        session: this.conn.id,
        protocol: 'smtp',
        login,
        code,
        error: (err as Error).message,
      },
      msg,
    );
  }

  /** The client is gone: end the store session (a transaction in DATA was already aborted). */
  close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#upstream?.alive && !this.#inTransaction) this.#upstream.quit();
    else this.#upstream?.destroy();
    this.#upstream = null;
    const login = this.#account?.login ?? null;
    this.#loggedOut();
    this.deps.log.info(
      {
        event: 'session',
        session: this.conn.id,
        ip: this.conn.clientIp,
        protocol: 'smtp',
        login,
        credential: this.#credential || null,
        messages: this.#messages,
        reason,
        ms: this.deps.clock() - this.#started,
      },
      'session closed',
    );
  }
}

/** A store reply passed on to the client as the store wrote it. */
function storeReply(r: UpstreamReply): SmtpReply {
  return { code: r.code, text: replyText(r) };
}
