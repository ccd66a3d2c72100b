import { describe, expect, it } from 'vitest';
import {
  LANGS,
  type NoticeParams,
  type RenderContext,
  render,
  TEMPLATE_IDS,
  type TemplateId,
} from '../../src/notify/templates.js';

const AT = Date.UTC(2026, 5, 17, 10, 5); // 2026-06-17 19:05 in Tokyo
const FROM = Date.UTC(2026, 11, 1, 0, 0); // 2026-12-01 09:00 in Tokyo

const ctx = (lang: 'ja' | 'en', extra: Partial<RenderContext> = {}): RenderContext => ({
  lang,
  tz: 'Asia/Tokyo',
  brand: { ja: 'メールサービス', en: 'Mail service' },
  links: {},
  ...extra,
});

const params: Record<TemplateId, NoticeParams> = {
  'login-notification': { at: AT, protocol: 'smtp', country: 'US', asn: 15169, org: 'Google LLC' },
  'overseas-restricted': { at: AT, protocol: 'imap', country: 'FR' },
  'domestic-restricted': { at: AT, from: FROM },
  'connection-error': { at: AT, protocol: 'imap', country: 'JP' },
  'restriction-warning': { at: AT, protocol: 'imap', country: 'US', restriction: 'overseas', from: FROM },
};

describe('every template in both languages', () => {
  for (const id of TEMPLATE_IDS) {
    for (const lang of LANGS) {
      it(`${id} (${lang}) names the service and what to do, and nothing is left unfilled`, () => {
        const text = render(id, params[id], ctx(lang));
        expect(text.startsWith(lang === 'ja' ? '【メールサービス】' : '[Mail service] ')).toBe(true);
        expect(text).toContain(lang === 'ja' ? 'IMAP専用パスワード' : 'IMAP-only password');
        expect(text).not.toMatch(/undefined|null|NaN|\$\{/);
        // Long SMS (concatenated) carry up to 670 UCS-2 characters.
        expect(text.length).toBeLessThan(670);
      });
    }
  }
});

describe('login notification (rules.md R11)', () => {
  it('names protocol, time in the subscriber zone, country and provider (ja)', () => {
    expect(render('login-notification', params['login-notification'], ctx('ja'))).toBe(
      [
        '【メールサービス】お客さまのメールアカウントに、普段と異なるプロバイダまたは場所からのログインがありました。',
        '日時：2026年6月17日 19:05 JST',
        '接続方法：SMTP',
        '場所：アメリカ合衆国',
        'プロバイダ：Google LLC (AS15169)',
        'お客さまご自身のログインでない場合は、不正アクセスの可能性があります。速やかにIMAP専用パスワードを新たに発行してください。',
      ].join('\n'),
    );
  });

  it('the same in English, in another time zone, with the issuing page', () => {
    const text = render(
      'login-notification',
      params['login-notification'],
      ctx('en', { tz: 'Europe/London', links: { imapPassword: 'https://example.jp/imap' } }),
    );
    expect(text).toContain('Time: 17 June 2026 at 11:05 BST');
    expect(text).toContain('Method: SMTP');
    expect(text).toContain('Location: United States');
    expect(text).toContain('Provider: Google LLC (AS15169)');
    expect(text).toContain('If this was not you');
    expect(text.endsWith('Issue an IMAP-only password: https://example.jp/imap')).toBe(true);
  });

  it('an unknown provider or country says so', () => {
    const text = render(
      'login-notification',
      { at: AT, protocol: 'imap', country: null, asn: null },
      ctx('ja'),
    );
    expect(text).toContain('場所：不明');
    expect(text).toContain('プロバイダ：不明');
  });
});

describe('restriction notices', () => {
  it('rules.md R7 and R12 offer web mail as the other way, with its page when configured', () => {
    const links = { imapPassword: 'https://example.jp/imap', webmail: 'https://mail.example.jp/' };
    for (const id of ['overseas-restricted', 'connection-error'] as const) {
      const ja = render(id, params[id], ctx('ja', { links }));
      expect(ja).toContain('ウェブメール');
      expect(ja).toContain('ウェブメール：https://mail.example.jp/');
      expect(ja).toContain('IMAP専用パスワードの発行：https://example.jp/imap');
      expect(render(id, params[id], ctx('en'))).toContain('web mail');
    }
    expect(render('overseas-restricted', params['overseas-restricted'], ctx('ja'))).toContain(
      '接続元：フランス',
    );
    expect(render('connection-error', params['connection-error'], ctx('en'))).toContain('Method: IMAP');
  });

  it('rules.md R8: a wave with a future date names the date; an immediate one says from today', () => {
    expect(render('domestic-restricted', params['domestic-restricted'], ctx('ja'))).toContain(
      '【メールサービス】2026年12月1日より、',
    );
    expect(render('domestic-restricted', { at: AT }, ctx('ja'))).toContain('本日より');
    expect(render('domestic-restricted', params['domestic-restricted'], ctx('en'))).toContain(
      'From 1 December 2026, mail apps',
    );
    expect(render('domestic-restricted', { at: AT, from: AT }, ctx('en'))).toContain('From today,');
  });

  it('warn phases say from when the restriction comes, or soon when nothing is scheduled', () => {
    const dated = render('restriction-warning', params['restriction-warning'], ctx('ja'));
    expect(dated).toContain('2026年12月1日から、IMAP専用パスワードが未設定の場合、海外から');
    expect(dated).toContain('今回の接続：2026年6月17日 19:05 JST（アメリカ合衆国）');
    const soon = render('restriction-warning', { at: AT, restriction: 'domestic' }, ctx('en'));
    expect(soon).toMatch(/^\[Mail service\] Soon, mail apps \(IMAP\/SMTP\) will need an IMAP-only password/);
    expect(soon).not.toContain('This connection'); // sent by a wave, not by a login
  });
});
