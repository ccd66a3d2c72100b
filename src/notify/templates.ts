/**
 * The SMS texts (rules.md R7, R8, R11, R12), in Japanese and English, in the tone of a carrier's service
 * message: what happened, when, and what to do (issue an IMAP-only password, or use web mail).
 * Rendering is pure: the same notice renders to the same text, so a retried delivery sends the
 * same words under the same idempotency key.
 */
import type { Protocol } from '../auth/policy.js';
import { assertNever } from '../util/errors.js';

export type Lang = 'ja' | 'en';
export const LANGS: readonly Lang[] = ['ja', 'en'];

export type TemplateId =
  /** rules.md R11: an allowed login from a provider or country the account has not used recently. */
  | 'login-notification'
  /** rules.md R7: a login refused by the overseas restriction. */
  | 'overseas-restricted'
  /** rules.md R8: the account is (or will be) under the domestic restriction; sent when a wave is applied. */
  | 'domestic-restricted'
  /** rules.md R12: a login refused by the domestic restriction. */
  | 'connection-error'
  /** A `warn` phase: this kind of login will be refused from a date (or soon). */
  | 'restriction-warning';

export const TEMPLATE_IDS: readonly TemplateId[] = [
  'login-notification',
  'overseas-restricted',
  'domestic-restricted',
  'connection-error',
  'restriction-warning',
];

/** Facts a template may name; each template uses some of them. No secret is ever here. */
export interface NoticeParams {
  /** When it happened (login, refusal) or when the operator applied the wave (epoch ms). */
  at: number;
  protocol?: Protocol;
  /** ISO 3166-1 alpha-2 of the client, null when unknown. */
  country?: string | null;
  asn?: number | null;
  org?: string | null;
  /** restriction-warning: which restriction is coming. */
  restriction?: 'overseas' | 'domestic';
  /** domestic-restricted, restriction-warning: when it applies; null or absent: now / not yet known. */
  from?: number | null;
}

export interface RenderContext {
  lang: Lang;
  /** The subscriber's IANA time zone: dates are written in it. */
  tz: string;
  /** Service name at the head of the message, per language. */
  brand: { ja: string; en: string };
  links: { imapPassword?: string | undefined; webmail?: string | undefined };
}

const dateTimeFormats = new Map<string, Intl.DateTimeFormat>();
const displayNames = new Map<Lang, Intl.DisplayNames>();

function format(at: number, ctx: RenderContext, withTime: boolean): string {
  const key = `${ctx.lang}|${ctx.tz}|${withTime}`;
  let f = dateTimeFormats.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(ctx.lang === 'ja' ? 'ja-JP' : 'en-GB', {
      timeZone: ctx.tz,
      year: 'numeric',
      month: 'long',
      day: 'numeric',
      ...(withTime ? { hour: '2-digit', minute: '2-digit', timeZoneName: 'short' } : {}),
    });
    dateTimeFormats.set(key, f);
  }
  return f.format(at);
}

function countryName(code: string | null | undefined, lang: Lang): string {
  if (!code) return lang === 'ja' ? '不明' : 'unknown';
  let names = displayNames.get(lang);
  if (!names) {
    names = new Intl.DisplayNames([lang], { type: 'region' });
    displayNames.set(lang, names);
  }
  try {
    return names.of(code) ?? code;
  } catch {
    return code;
  }
}

function providerName(p: NoticeParams, lang: Lang): string {
  if (p.asn == null) return lang === 'ja' ? '不明' : 'unknown';
  return p.org ? `${p.org} (AS${p.asn})` : `AS${p.asn}`;
}

function protocolName(p: NoticeParams): string {
  return (p.protocol ?? 'imap').toUpperCase();
}

/** What to do, with the operator's pages when configured. */
function remedy(ctx: RenderContext, opts: { webmail: boolean }): string {
  const { imapPassword, webmail } = ctx.links;
  if (ctx.lang === 'ja') {
    const lines = [
      opts.webmail
        ? 'IMAP専用パスワードを発行してメールアプリに設定いただくか、ブラウザ版のウェブメールをご利用ください。'
        : 'IMAP専用パスワードを発行し、ご利用のメールアプリに設定してください。',
    ];
    if (imapPassword) lines.push(`IMAP専用パスワードの発行：${imapPassword}`);
    if (opts.webmail && webmail) lines.push(`ウェブメール：${webmail}`);
    return lines.join('\n');
  }
  const lines = [
    opts.webmail
      ? 'Please issue an IMAP-only password and enter it in your mail app, or use web mail in your browser.'
      : 'Please issue an IMAP-only password and enter it in your mail app.',
  ];
  if (imapPassword) lines.push(`Issue an IMAP-only password: ${imapPassword}`);
  if (opts.webmail && webmail) lines.push(`Web mail: ${webmail}`);
  return lines.join('\n');
}

/** The message text of one notice. */
export function render(template: TemplateId, p: NoticeParams, ctx: RenderContext): string {
  const ja = ctx.lang === 'ja';
  const head = ja ? `【${ctx.brand.ja}】` : `[${ctx.brand.en}] `;
  const when = format(p.at, ctx, true);
  switch (template) {
    case 'login-notification': {
      if (ja) {
        return [
          `${head}お客さまのメールアカウントに、普段と異なるプロバイダまたは場所からのログインがありました。`,
          `日時：${when}`,
          `接続方法：${protocolName(p)}`,
          `場所：${countryName(p.country, 'ja')}`,
          `プロバイダ：${providerName(p, 'ja')}`,
          'お客さまご自身のログインでない場合は、不正アクセスの可能性があります。速やかにIMAP専用パスワードを新たに発行してください。',
          ...(ctx.links.imapPassword ? [`IMAP専用パスワードの発行：${ctx.links.imapPassword}`] : []),
        ].join('\n');
      }
      return [
        `${head}Your mail account was signed in to from a provider or place you do not usually use.`,
        `Time: ${when}`,
        `Method: ${protocolName(p)}`,
        `Location: ${countryName(p.country, 'en')}`,
        `Provider: ${providerName(p, 'en')}`,
        'If this was not you, someone else may have your password: please issue a new IMAP-only password at once.',
        ...(ctx.links.imapPassword ? [`Issue an IMAP-only password: ${ctx.links.imapPassword}`] : []),
      ].join('\n');
    }
    case 'overseas-restricted':
      if (ja) {
        return [
          `${head}海外からのアクセスを制限しました。IMAP専用パスワードが未設定のため、海外からメールアプリ（IMAP/SMTP）でご利用いただくことはできません。`,
          `日時：${when}`,
          `接続元：${countryName(p.country, 'ja')}`,
          'VPNや一部のアプリをお使いの場合、国内からでも海外からのアクセスと判定されることがあります。',
          remedy(ctx, { webmail: true }),
        ].join('\n');
      }
      return [
        `${head}Access from abroad has been restricted. Your account has no IMAP-only password, so mail apps (IMAP/SMTP) cannot connect from outside the country.`,
        `Time: ${when}`,
        `From: ${countryName(p.country, 'en')}`,
        'A VPN or some apps can make access from home count as access from abroad.',
        remedy(ctx, { webmail: true }),
      ].join('\n');
    case 'domestic-restricted': {
      const future = p.from != null && p.from > p.at;
      if (ja) {
        const since = future ? `${format(p.from!, ctx, false)}より` : '本日より';
        return [
          `${head}${since}、メールアプリ（IMAP/SMTP）からの接続は国内外を問わずIMAP専用パスワードでのみご利用いただけます。アカウントのパスワードではログインできなくなります。`,
          remedy(ctx, { webmail: true }),
        ].join('\n');
      }
      const since = future ? `From ${format(p.from!, ctx, false)}` : 'From today';
      return [
        `${head}${since}, mail apps (IMAP/SMTP) can sign in to your account only with an IMAP-only password, from home and abroad alike. Your account password will no longer work in mail apps.`,
        remedy(ctx, { webmail: true }),
      ].join('\n');
    }
    case 'connection-error':
      if (ja) {
        return [
          `${head}アクセス制限により、メールアプリからの接続をお断りしました。IMAP専用パスワードが未設定のため、アカウントのパスワードではメールアプリ（IMAP/SMTP）からご利用いただけません。`,
          `日時：${when}`,
          `接続方法：${protocolName(p)}`,
          remedy(ctx, { webmail: true }),
        ].join('\n');
      }
      return [
        `${head}A mail app's connection was refused because of the access restriction. Without an IMAP-only password, your account password cannot be used in mail apps (IMAP/SMTP).`,
        `Time: ${when}`,
        `Method: ${protocolName(p)}`,
        remedy(ctx, { webmail: true }),
      ].join('\n');
    case 'restriction-warning': {
      const dated = p.from != null && p.from > p.at;
      const overseas = p.restriction === 'overseas';
      if (ja) {
        const since = dated ? `${format(p.from!, ctx, false)}から` : '近日中に';
        return [
          overseas
            ? `${head}${since}、IMAP専用パスワードが未設定の場合、海外からメールアプリ（IMAP/SMTP）で接続できなくなります。`
            : `${head}${since}、メールアプリ（IMAP/SMTP）からの接続にはIMAP専用パスワードが必要になり、アカウントのパスワードではログインできなくなります。`,
          ...(p.protocol ? [`今回の接続：${when}（${countryName(p.country, 'ja')}）`] : []),
          `お早めに${remedy(ctx, { webmail: false })}`,
        ].join('\n');
      }
      const since = dated ? `From ${format(p.from!, ctx, false)}` : 'Soon';
      return [
        overseas
          ? `${head}${since}, mail apps (IMAP/SMTP) will not be able to connect from abroad to an account without an IMAP-only password.`
          : `${head}${since}, mail apps (IMAP/SMTP) will need an IMAP-only password; your account password will no longer work in them.`,
        ...(p.protocol ? [`This connection: ${when} (${countryName(p.country, 'en')})`] : []),
        remedy(ctx, { webmail: false }),
      ].join('\n');
    }
    default:
      return assertNever(template, 'template');
  }
}
