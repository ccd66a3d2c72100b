import type { CredentialEvent } from '../accounts/store.js';

/**
 * The sessions this process has joined to a mail store, by account, so that a credential
 * change ends the ones opened with the old credential (rules.md R4: a replaced IMAP-only password must
 * stop working, including on connections already open; rules.md R14 likewise for the primary one).
 * Protocol-neutral: IMAP and SMTP sessions register the same way.
 */

export interface LiveSession {
  id: string;
  login: string;
  credential: 'imap-only' | 'primary';
  /** The credential's version when the session logged in. */
  version: number;
  close(reason: string): void;
}

/** Current versions of an account's credentials, or null when the account is gone. */
export type CredentialVersions = {
  imapVersion: number;
  primaryVersion: number;
  hasImapPassword: boolean;
} | null;

export class SessionRegistry {
  readonly #byLogin = new Map<string, Set<LiveSession>>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** Registers a session; call the returned function when it ends. */
  add(session: LiveSession): () => void {
    let set = this.#byLogin.get(session.login);
    if (!set) {
      set = new Set();
      this.#byLogin.set(session.login, set);
    }
    set.add(session);
    this.#size++;
    return () => {
      if (!set.delete(session)) return;
      this.#size--;
      if (set.size === 0) this.#byLogin.delete(session.login);
    };
  }

  logins(): string[] {
    return [...this.#byLogin.keys()];
  }

  /** Ends the sessions that an announced change made stale; returns how many. */
  onCredentialEvent(ev: CredentialEvent): number {
    return this.#closeWhere(
      ev.login,
      (s) => ev.credential === 'all' || (s.credential === ev.credential && s.version < ev.version),
    );
  }

  /**
   * Ends the sessions whose credential moved on while no announcement reached us (the event
   * subscription was down). `versions` maps logins to what Redis holds now.
   */
  sweep(versions: Map<string, CredentialVersions>): number {
    let closed = 0;
    for (const [login, v] of versions) {
      closed += this.#closeWhere(
        login,
        (s) =>
          v === null ||
          (s.credential === 'imap-only'
            ? s.version < v.imapVersion
            : s.version < v.primaryVersion || v.hasImapPassword),
      );
    }
    return closed;
  }

  #closeWhere(login: string, stale: (s: LiveSession) => boolean): number {
    const set = this.#byLogin.get(login);
    if (!set) return 0;
    let closed = 0;
    for (const s of [...set]) {
      if (!stale(s)) continue;
      s.close('credential-changed');
      closed++;
    }
    return closed;
  }
}
