import type { AuthResult } from '../auth/authenticator.js';
import type { ImapLimits } from '../config/schema.js';
import {
  decodeBase64,
  LOGIN_PASSWORD_PROMPT,
  LOGIN_USERNAME_PROMPT,
  parsePlain,
  type SaslCredentials,
} from '../sasl/sasl.js';
import { assertNever } from '../util/errors.js';
import type { ImapArg, ReaderEvent } from './parser.js';
import { denyReply, tempFailReply } from './replies.js';

/**
 * The IMAP not-authenticated state (RFC 9051 §6.1, §6.2), sans I/O: each input returns the
 * actions for the driver to carry out. The session ends at a successful login; from then on
 * the driver joins the client to the mail store and no IMAP is parsed here.
 */

export type Action =
  | { type: 'send'; line: string }
  /** Verify these credentials; answer with onAuthResult. Nothing else is processed meanwhile. */
  | { type: 'authenticate'; tag: string; credentials: SaslCredentials }
  /** The OK for STARTTLS has been queued: discard unread input and start the TLS handshake. */
  | { type: 'start-tls' }
  /** SASL exchange: deliver the next client lines raw (RFC 9051 §6.2.2). */
  | { type: 'line-mode'; on: boolean }
  | { type: 'close'; reason: string };

export interface SessionOptions {
  /** How the listener is secured: drives STARTTLS and LOGINDISABLED. */
  tlsMode: 'implicit' | 'starttls' | 'none';
  limits: Pick<ImapLimits, 'maxBadCommands' | 'maxAuthFailures'>;
  greeting: string;
}

type SaslState = { mech: 'PLAIN'; tag: string } | { mech: 'LOGIN'; tag: string; login: string | null };

type State =
  | { name: 'ready' }
  | { name: 'sasl'; sasl: SaslState }
  | { name: 'authenticating' }
  | { name: 'done' };

type Verb = 'CAPABILITY' | 'NOOP' | 'LOGOUT' | 'ID' | 'STARTTLS' | 'LOGIN' | 'AUTHENTICATE';

interface CommandSpec {
  /** Only meaningful before TLS on a STARTTLS listener. */
  needsPlaintext?: boolean;
  /** Carries a password: refused until TLS on a STARTTLS listener (LOGINDISABLED). */
  needsTls?: boolean;
  handler: (s: ImapSession, tag: string, args: ImapArg[]) => Action[];
}

const commands = {
  CAPABILITY: {
    handler: (s, tag) => [s.untagged(`CAPABILITY ${s.capabilities()}`), s.ok(tag, 'CAPABILITY completed.')],
  },
  NOOP: { handler: (s, tag) => [s.ok(tag, 'NOOP completed.')] },
  LOGOUT: {
    handler: (s, tag) => {
      s.state = { name: 'done' };
      return [
        s.untagged('BYE Logging out.'),
        s.ok(tag, 'LOGOUT completed.'),
        { type: 'close', reason: 'logout' },
      ];
    },
  },
  // RFC 2971. The client's own ID fields are not forwarded: the store learns the address from ours.
  ID: { handler: (s, tag) => [s.untagged('ID ("name" "mailgate")'), s.ok(tag, 'ID completed.')] },
  STARTTLS: {
    needsPlaintext: true,
    handler: (s, tag, args) => {
      if (args.length) return s.bad(tag, 'STARTTLS takes no arguments.');
      s.secure = true;
      return [s.ok(tag, 'Begin TLS negotiation now.'), { type: 'start-tls' }];
    },
  },
  LOGIN: {
    needsTls: true,
    handler: (s, tag, args) => {
      const [user, pass] = args;
      if (args.length !== 2 || !user || !pass || !isAstring(user) || !isAstring(pass)) {
        return s.bad(tag, 'LOGIN expects a user name and a password.');
      }
      return s.authenticate(tag, { login: argText(user), password: argBytes(pass) });
    },
  },
  AUTHENTICATE: {
    needsTls: true,
    handler: (s, tag, args) => {
      const [mechArg, irArg] = args;
      if (mechArg?.type !== 'atom' || args.length > 2 || (irArg && irArg.type !== 'atom')) {
        return s.bad(tag, 'AUTHENTICATE expects a mechanism name and an optional initial response.');
      }
      const mech = mechArg.value.toUpperCase();
      // RFC 4959: "=" is an empty initial response; no argument means none was sent.
      const ir = irArg?.type === 'atom' ? irArg.value : null;
      if (mech === 'PLAIN') {
        if (ir === null) return s.challenge({ mech, tag }, '');
        return s.saslPlain(tag, ir === '=' ? '' : ir);
      }
      if (mech === 'LOGIN') {
        if (ir === null) return s.challenge({ mech, tag, login: null }, LOGIN_USERNAME_PROMPT);
        const login = decodeBase64(ir === '=' ? '' : ir);
        if (!login) return s.bad(tag, 'Invalid base64 data.');
        return s.challenge({ mech, tag, login: login.toString('utf8') }, LOGIN_PASSWORD_PROMPT);
      }
      return [s.tagged(tag, 'NO [CANNOT] Unsupported authentication mechanism.')];
    },
  },
} satisfies Record<Verb, CommandSpec>;

function isVerb(v: string): v is Verb {
  return Object.hasOwn(commands, v);
}

function isAstring(a: ImapArg): a is Extract<ImapArg, { type: 'atom' | 'string' }> {
  return a.type === 'atom' || a.type === 'string';
}

function argText(a: Extract<ImapArg, { type: 'atom' | 'string' }>): string {
  return a.type === 'atom' ? a.value : a.value.toString('utf8');
}

function argBytes(a: Extract<ImapArg, { type: 'atom' | 'string' }>): Buffer {
  return a.type === 'atom' ? Buffer.from(a.value, 'utf8') : a.value;
}

export class ImapSession {
  state: State = { name: 'ready' };
  secure: boolean;
  badCommands = 0;
  authFailures = 0;

  constructor(readonly opts: SessionOptions) {
    this.secure = opts.tlsMode === 'implicit';
  }

  /** RFC 9051 §7.1.1: the greeting carries the capabilities so clients save a round trip. */
  greet(): Action[] {
    return [this.untagged(`OK [CAPABILITY ${this.capabilities()}] ${this.opts.greeting}`)];
  }

  capabilities(): string {
    const caps = ['IMAP4rev1', 'SASL-IR', 'ID', 'LITERAL+'];
    if (this.loginDisabled()) caps.push('STARTTLS', 'LOGINDISABLED');
    else caps.push('AUTH=PLAIN', 'AUTH=LOGIN');
    return caps.join(' ');
  }

  loginDisabled(): boolean {
    return this.opts.tlsMode === 'starttls' && !this.secure;
  }

  onEvent(ev: ReaderEvent): Action[] {
    switch (ev.type) {
      case 'command':
        return this.#onCommand(ev.tag, ev.verb, ev.args);
      case 'line':
        return this.#onSaslLine(ev.text);
      case 'continuation-needed':
        return [{ type: 'send', line: '+ Ready for literal data' }];
      case 'error':
        if (ev.fatal) {
          this.state = { name: 'done' };
          return [this.untagged(`BYE ${ev.message}`), { type: 'close', reason: ev.kind }];
        }
        return this.#badCommand(ev.tag, ev.message);
      default:
        return assertNever(ev, 'reader event');
    }
  }

  onAuthResult(tag: string, result: AuthResult): Action[] {
    switch (result.kind) {
      case 'allow':
        this.state = { name: 'done' }; // the driver answers after the upstream login
        return [];
      case 'tempfail':
        this.state = { name: 'ready' };
        return [this.tagged(tag, tempFailReply(result.reason))];
      case 'deny': {
        this.state = { name: 'ready' };
        const reply = [this.tagged(tag, denyReply(result.reason))];
        if (++this.authFailures >= this.opts.limits.maxAuthFailures) {
          this.state = { name: 'done' };
          return [
            ...reply,
            this.untagged('BYE Too many failed logins.'),
            { type: 'close', reason: 'auth-failures' },
          ];
        }
        return reply;
      }
      default:
        return assertNever(result, 'auth result');
    }
  }

  onTimeout(): Action[] {
    this.state = { name: 'done' };
    return [this.untagged('BYE Disconnected for inactivity.'), { type: 'close', reason: 'preauth-timeout' }];
  }

  #onCommand(tag: string, verb: string, args: ImapArg[]): Action[] {
    if (this.state.name !== 'ready') return [];
    if (!isVerb(verb)) return this.#badCommand(tag, 'Unknown command or not valid before login.');
    const spec: CommandSpec = commands[verb];
    if (spec.needsPlaintext && (this.opts.tlsMode !== 'starttls' || this.secure)) {
      return this.#badCommand(tag, 'TLS is already active or not offered here.');
    }
    if (spec.needsTls && this.loginDisabled()) {
      // RFC 9051 §6.2.3: with LOGINDISABLED, LOGIN must be refused; [PRIVACYREQUIRED] per RFC 5530.
      return [this.tagged(tag, 'NO [PRIVACYREQUIRED] Run STARTTLS first.')];
    }
    return spec.handler(this, tag, args);
  }

  #onSaslLine(text: string): Action[] {
    if (this.state.name !== 'sasl') return [];
    const sasl = this.state.sasl;
    const off: Action = { type: 'line-mode', on: false };
    // RFC 9051 §6.2.2: a "*" line cancels the exchange with a tagged BAD.
    if (text === '*') {
      this.state = { name: 'ready' };
      return [off, this.tagged(sasl.tag, 'BAD Authentication cancelled.')];
    }
    const data = decodeBase64(text);
    if (!data) {
      this.state = { name: 'ready' };
      return [off, ...this.#badCommand(sasl.tag, 'Invalid base64 data.')];
    }
    switch (sasl.mech) {
      case 'PLAIN':
        return [off, ...this.#finishPlain(sasl.tag, data)];
      case 'LOGIN':
        if (sasl.login === null) {
          this.state = { name: 'sasl', sasl: { ...sasl, login: data.toString('utf8') } };
          return [this.continuation(LOGIN_PASSWORD_PROMPT)];
        }
        return [off, ...this.authenticate(sasl.tag, { login: sasl.login, password: data })];
      default:
        return assertNever(sasl, 'sasl state');
    }
  }

  saslPlain(tag: string, ir: string): Action[] {
    const data = decodeBase64(ir);
    if (!data) return this.bad(tag, 'Invalid base64 data.');
    return this.#finishPlain(tag, data);
  }

  #finishPlain(tag: string, data: Buffer): Action[] {
    const parsed = parsePlain(data);
    if (!parsed.ok) {
      this.state = { name: 'ready' };
      return this.#badCommand(tag, `Invalid PLAIN response: ${parsed.error}.`);
    }
    return this.authenticate(tag, parsed.credentials);
  }

  challenge(sasl: SaslState, data: string): Action[] {
    this.state = { name: 'sasl', sasl };
    return [{ type: 'line-mode', on: true }, this.continuation(data)];
  }

  authenticate(tag: string, credentials: SaslCredentials): Action[] {
    this.state = { name: 'authenticating' };
    return [{ type: 'authenticate', tag, credentials }];
  }

  #badCommand(tag: string | null, text: string): Action[] {
    const reply = tag === null ? this.untagged(`BAD ${text}`) : this.tagged(tag, `BAD ${text}`);
    if (++this.badCommands >= this.opts.limits.maxBadCommands) {
      this.state = { name: 'done' };
      return [
        reply,
        this.untagged('BYE Too many invalid commands.'),
        { type: 'close', reason: 'bad-commands' },
      ];
    }
    return [reply];
  }

  bad(tag: string, text: string): Action[] {
    return this.#badCommand(tag, text);
  }

  ok(tag: string, text: string): Action {
    return this.tagged(tag, `OK ${text}`);
  }

  tagged(tag: string, text: string): Action {
    return { type: 'send', line: `${tag} ${text}` };
  }

  untagged(text: string): Action {
    return { type: 'send', line: `* ${text}` };
  }

  continuation(data: string): Action {
    return { type: 'send', line: `+ ${data}` };
  }
}
