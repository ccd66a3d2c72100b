import { domainToASCII } from 'node:url';
import type { Account } from '../accounts/store.js';
import { normalizeLogin } from '../accounts/store.js';

/**
 * Pure envelope work for the relay: whose sender address this is, and the MAIL/RCPT lines the
 * mail store gets. No I/O; unit-tested on its own.
 */

/** The addresses an account may send as: its login and every alias that is a mail address. */
export function senderAddresses(account: Pick<Account, 'login' | 'aliases'>): Set<string> {
  return new Set([account.login, ...account.aliases].map(canonicalAddress).filter((a) => a.includes('@')));
}

/**
 * True when the account may use this envelope sender. The null sender (<>) is allowed: it is
 * what RFC 8098 asks of read receipts (MDNs), and it cannot be used to pose as anyone.
 */
export function ownsSender(account: Pick<Account, 'login' | 'aliases'>, address: string): boolean {
  if (address === '') return true;
  return senderAddresses(account).has(canonicalAddress(address));
}

/** Lower case, NFC, the domain as A-labels: "Alice@Bücher.example" and "alice@xn--bcher-kva.example" match. */
export function canonicalAddress(address: string): string {
  const n = normalizeLogin(address);
  const at = n.lastIndexOf('@');
  if (at < 0) return n;
  const ascii = domainToASCII(n.slice(at + 1));
  return `${n.slice(0, at)}@${ascii || n.slice(at + 1)}`;
}

/**
 * The address as the store gets it. smtp-server hands domains over as U-labels (it decodes
 * punycode); without SMTPUTF8 the store must get the A-label form the client wrote (RFC 5890).
 */
export function wireAddress(address: string, smtpUtf8: boolean): string {
  if (smtpUtf8) return address;
  const at = address.lastIndexOf('@');
  if (at < 0) return address;
  const domain = address.slice(at + 1);
  if (domain.startsWith('[')) return address; // address literal
  const ascii = domainToASCII(domain);
  return ascii ? `${address.slice(0, at)}@${ascii}` : address;
}

export interface MailParams {
  /** SIZE= as the client declared it (RFC 1870). */
  size?: string;
  /** '7bit' | '8bitmime' as smtp-server recorded BODY= (RFC 6152). */
  bodyType?: string;
  smtpUtf8?: boolean;
}

/**
 * MAIL FROM for the store, passing SIZE, BODY=8BITMIME and SMTPUTF8 on when the store offers
 * them. A parameter the client relies on and the store lacks is refused (RFC 6152 §3: a relay
 * must not pass 8-bit data to a server without 8BITMIME); SIZE is only advisory and is dropped.
 */
export function mailCommand(
  address: string,
  params: MailParams,
  offers: (keyword: string) => boolean,
): { line: string } | { unsupported: string } {
  let line = `MAIL FROM:<${wireAddress(address, params.smtpUtf8 === true)}>`;
  if (params.size !== undefined && offers('SIZE')) line += ` SIZE=${params.size}`;
  if (params.bodyType === '8bitmime') {
    if (!offers('8BITMIME')) return { unsupported: 'BODY=8BITMIME' };
    line += ' BODY=8BITMIME';
  }
  if (params.smtpUtf8) {
    if (!offers('SMTPUTF8')) return { unsupported: 'SMTPUTF8' };
    line += ' SMTPUTF8';
  }
  return { line };
}

export function rcptCommand(address: string, smtpUtf8: boolean): string {
  return `RCPT TO:<${wireAddress(address, smtpUtf8)}>`;
}

/** The queue id in a store's reply to the final dot ("250 2.0.0 Ok: queued as 4F7x2Z1yQ"). */
export function queueIdOf(text: string): string | null {
  return /\bqueued as ([A-Za-z0-9]+)/i.exec(text)?.[1] ?? null;
}
