import { describe, expect, it } from 'vitest';
import { type Decision, decide, type LoginFacts } from '../../src/auth/policy.js';

const base: LoginFacts = {
  protocol: 'imap',
  accountExists: true,
  throttled: false,
  locked: false,
  hasImapPassword: false,
  matched: 'none',
  location: 'domestic',
  overseasPhase: 'off',
  domesticPhase: 'off',
};

type Row = [name: string, facts: Partial<LoginFacts>, expected: Partial<Decision>];

// One row per step of the login decision (docs/rules.md), in its order.
const rows: Row[] = [
  [
    '0 throttled source, even with the right IMAP-only password',
    { throttled: true, hasImapPassword: true, matched: 'imap-only' },
    { kind: 'deny', reason: 'throttled', countsAsFailure: false },
  ],
  [
    '0 throttled source, unknown account',
    { throttled: true, accountExists: false },
    { kind: 'deny', reason: 'throttled' },
  ],
  [
    '1 unknown account',
    { accountExists: false },
    { kind: 'deny', reason: 'unknown-account', countsAsFailure: true },
  ],
  [
    '2 locked, even with the right password',
    { locked: true, hasImapPassword: true, matched: 'imap-only' },
    { kind: 'deny', reason: 'locked', countsAsFailure: false },
  ],
  [
    '3 IMAP-only password matches at home',
    { hasImapPassword: true, matched: 'imap-only' },
    { kind: 'allow', credential: 'imap-only', wouldRefuse: [] },
  ],
  [
    '3 IMAP-only password matches from abroad, every phase enforced',
    {
      hasImapPassword: true,
      matched: 'imap-only',
      location: 'overseas',
      overseasPhase: 'enforce',
      domesticPhase: 'enforce',
    },
    { kind: 'allow', credential: 'imap-only', wouldRefuse: [], notices: [] },
  ],
  [
    '3 primary password while an IMAP-only password exists',
    { hasImapPassword: true, matched: 'primary' },
    { kind: 'deny', reason: 'imap-password-required', countsAsFailure: true },
  ],
  [
    '3 wrong password while an IMAP-only password exists',
    { hasImapPassword: true, matched: 'none' },
    { kind: 'deny', reason: 'bad-password', countsAsFailure: true },
  ],
  [
    '4 primary from abroad, overseas enforced',
    { matched: 'primary', location: 'overseas', overseasPhase: 'enforce' },
    { kind: 'deny', reason: 'overseas-restricted', countsAsFailure: false, notices: ['overseas-restricted'] },
  ],
  [
    '4 primary from abroad, overseas warn',
    { matched: 'primary', location: 'overseas', overseasPhase: 'warn' },
    { kind: 'allow', credential: 'primary', wouldRefuse: ['overseas'], notices: ['restriction-warning'] },
  ],
  [
    '4 primary from abroad, overseas off',
    { matched: 'primary', location: 'overseas' },
    { kind: 'allow', credential: 'primary', wouldRefuse: [], notices: [] },
  ],
  [
    '4 primary at home, overseas enforced',
    { matched: 'primary', location: 'domestic', overseasPhase: 'enforce' },
    { kind: 'allow', credential: 'primary', wouldRefuse: [] },
  ],
  [
    '4 primary at home, domestic enforced for the account',
    { matched: 'primary', domesticPhase: 'enforce' },
    { kind: 'deny', reason: 'domestic-restricted', countsAsFailure: false, notices: ['domestic-restricted'] },
  ],
  [
    '4 primary from abroad, domestic enforced, overseas off: domestic applies from anywhere',
    { matched: 'primary', location: 'overseas', domesticPhase: 'enforce' },
    { kind: 'deny', reason: 'domestic-restricted' },
  ],
  [
    '4 overseas is checked before domestic (rules.md R9)',
    { matched: 'primary', location: 'overseas', overseasPhase: 'enforce', domesticPhase: 'enforce' },
    { kind: 'deny', reason: 'overseas-restricted', notices: ['overseas-restricted'] },
  ],
  [
    '4 primary at home, domestic warn',
    { matched: 'primary', domesticPhase: 'warn' },
    { kind: 'allow', credential: 'primary', wouldRefuse: ['domestic'], notices: ['restriction-warning'] },
  ],
  [
    '4 both warn from abroad records both',
    { matched: 'primary', location: 'overseas', overseasPhase: 'warn', domesticPhase: 'warn' },
    { kind: 'allow', wouldRefuse: ['overseas', 'domestic'], notices: ['restriction-warning'] },
  ],
  [
    '4 overseas warn, domestic enforce: refused by domestic',
    { matched: 'primary', location: 'overseas', overseasPhase: 'warn', domesticPhase: 'enforce' },
    { kind: 'deny', reason: 'domestic-restricted' },
  ],
  [
    '5 wrong password, no IMAP-only password',
    { matched: 'none' },
    { kind: 'deny', reason: 'bad-password', countsAsFailure: true },
  ],
  [
    '5 wrong password from abroad with overseas enforced is still a wrong password',
    { matched: 'none', location: 'overseas', overseasPhase: 'enforce' },
    { kind: 'deny', reason: 'bad-password', countsAsFailure: true, notices: [] },
  ],
];

describe('decide (docs/rules.md, the login decision)', () => {
  it.each(rows)('%s', (_name, facts, expected) => {
    expect(decide({ ...base, ...facts })).toMatchObject(expected);
  });

  it('is the same for smtp as for imap', () => {
    for (const [, facts] of rows) {
      expect(decide({ ...base, ...facts, protocol: 'smtp' })).toEqual(decide({ ...base, ...facts }));
    }
  });
});
