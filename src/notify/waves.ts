/**
 * rules.md R8: when an operator applies or schedules a domestic wave, every account it moves into
 * `enforce` (or `warn`) and that has no IMAP-only password gets an SMS: "from DATE, mail apps
 * need an IMAP-only password" (or the warn-phase notice).
 *
 * "Moves" is decided per account by comparing its phase at the rule's start under the rules
 * before and after the command: widening a wave from 10% to 25% notifies the new 15% only, and
 * re-running a command notifies nobody. The notice's dedupe key and idempotency key carry the
 * rule's sequence number, so the same account is never notified twice for one wave.
 */
import type { Account } from '../accounts/store.js';
import type { Phase } from '../auth/policy.js';
import { bucketOf, domesticPhase, type RolloutDoc, type Rule } from '../rollout/engine.js';
import type { EnqueueResult, NoticeSpec } from './outbox.js';
import { waveNoticeKey } from './outbox.js';
import { enforceDate } from './schedule.js';

export interface WaveNoticeCounts {
  /** Accounts the command moved into enforce or warn, without an IMAP-only password. */
  accounts: number;
  queued: number;
  /** Queued for the end of the subscriber's quiet hours. */
  deferred: number;
  /** No msisdn on the account. */
  noMsisdn: number;
  /** Already notified for this wave, or over the daily cap. */
  suppressed: number;
}

export function emptyCounts(): WaveNoticeCounts {
  return { accounts: 0, queued: 0, deferred: 0, noMsisdn: 0, suppressed: 0 };
}

export function addResults(counts: WaveNoticeCounts, results: readonly EnqueueResult[]): void {
  for (const r of results) {
    counts.accounts++;
    if (r === 'queued') counts.queued++;
    else if (r === 'deferred') counts.deferred++;
    else if (r === 'no-msisdn') counts.noMsisdn++;
    else counts.suppressed++;
  }
}

/**
 * The notice for one account, or null when the command does not change its phase at the
 * rule's start (or it has an IMAP-only password, which the restriction does not touch).
 * `explicitBefore`/`explicitAfter`: the account's own rule before and after (--login, --users).
 */
export function waveNotice(args: {
  account: Account;
  before: RolloutDoc;
  after: RolloutDoc;
  explicitBefore: Rule | null;
  explicitAfter: Rule | null;
  rule: Rule;
  now: number;
}): NoticeSpec | null {
  const { account, rule, now } = args;
  if (account.imapHash) return null;
  const bucket = bucketOf(account.login);
  const phase = (doc: RolloutDoc, explicit: Rule | null): Phase =>
    domesticPhase(doc, { bucket, explicit }, rule.at).phase;
  const after = phase(args.after, args.explicitAfter);
  if (after === 'off' || after === phase(args.before, args.explicitBefore)) return null;
  const base = {
    login: account.login,
    msisdn: account.msisdn,
    lang: account.lang,
    tz: account.tz,
    waveSeq: rule.seq,
  };
  if (after === 'enforce') {
    return {
      ...base,
      template: 'domestic-restricted',
      params: { at: now, from: rule.at },
      key: waveNoticeKey('domestic-restricted', rule.seq, account.login),
    };
  }
  const from = enforceDate(
    args.after,
    'domestic',
    { login: account.login, domestic: args.explicitAfter },
    now,
  );
  return {
    ...base,
    template: 'restriction-warning',
    params: { at: now, restriction: 'domestic', from },
    key: waveNoticeKey('restriction-warning', rule.seq, account.login),
  };
}
