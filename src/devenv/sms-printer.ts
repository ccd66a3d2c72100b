import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { maskMsisdn } from '../notify/schedule.js';
import type { WebhookPayload } from '../notify/worker.js';

/** Longest body the demo's SMS gateway reads. */
const MAX_BODY_BYTES = 64 * 1024;

/**
 * The demo's SMS gateway: a loopback HTTP server that takes the notify webhook's POSTs and
 * prints each message, as a phone would show it, through `print`. Answers 200 (a repeated
 * idempotency key too, without printing it again).
 */
export async function startSmsPrinter(
  print: (text: string) => void,
): Promise<{ url: string; close(): Promise<void> }> {
  const seen = new Set<string>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on('end', () => {
      try {
        const p = JSON.parse(Buffer.concat(chunks).toString('utf8')) as WebhookPayload;
        if (!seen.has(p.idempotencyKey)) {
          seen.add(p.idempotencyKey);
          const body = p.text
            .split('\n')
            .map((l) => `    ${l}`)
            .join('\n');
          print(`\n[SMS to ${maskMsisdn(p.msisdn)}, ${p.template}, ${p.language}]\n${body}\n`);
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"accepted":true}');
      } catch {
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/sms`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
