import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { WebhookPayload } from '../../src/notify/worker.js';

export interface Received {
  payload: WebhookPayload;
  authorization: string | undefined;
  idempotencyHeader: string | undefined;
  status: number;
  at: number;
}

/**
 * A small real HTTP server standing in for the SMS gateway: records every request, honours the
 * idempotency key (a key accepted once is answered 200 again without counting as a new SMS),
 * and can be told to fail the next N requests, fail everything, or answer slowly.
 */
export class FakeSmsGateway {
  readonly received: Received[] = [];
  /** Accepted SMS by idempotency key: what a subscriber's phone would show. */
  readonly sms = new Map<string, WebhookPayload>();
  /** Requests for a key already accepted. */
  duplicates = 0;
  #failNext = 0;
  #failStatus = 503;
  #failAlways: number | null = null;
  delayMs = 0;
  readonly #server: Server;
  url = '';

  private constructor() {
    this.#server = createServer((req, res) => {
      void this.#handle(req).then(
        ([status, body]) => {
          res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        },
        () => res.writeHead(500).end(),
      );
    });
  }

  static async start(): Promise<FakeSmsGateway> {
    const gw = new FakeSmsGateway();
    await new Promise<void>((r) => gw.#server.listen(0, '127.0.0.1', r));
    gw.url = `http://127.0.0.1:${(gw.#server.address() as AddressInfo).port}/v1/sms`;
    return gw;
  }

  /** The next `n` requests get `status` (default 503). */
  failNext(n: number, status = 503): void {
    this.#failNext = n;
    this.#failStatus = status;
  }

  /** Every request gets `status` until called with null. */
  failAlways(status: number | null): void {
    this.#failAlways = status;
  }

  async #handle(req: IncomingMessage): Promise<[number, unknown]> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const payload = JSON.parse(Buffer.concat(chunks).toString('utf8')) as WebhookPayload;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    let status = 200;
    if (this.#failAlways !== null) status = this.#failAlways;
    else if (this.#failNext > 0) {
      this.#failNext--;
      status = this.#failStatus;
    }
    this.received.push({
      payload,
      authorization: req.headers.authorization,
      idempotencyHeader: req.headers['idempotency-key'] as string | undefined,
      status,
      at: Date.now(),
    });
    if (status !== 200) return [status, { error: 'unavailable' }];
    if (this.sms.has(payload.idempotencyKey)) {
      this.duplicates++;
      return [200, { duplicate: true }];
    }
    this.sms.set(payload.idempotencyKey, payload);
    return [200, { accepted: true }];
  }

  /** Accepted SMS to one number, in order. */
  to(msisdn: string, template?: string): WebhookPayload[] {
    return [...this.sms.values()].filter(
      (p) => p.msisdn === msisdn && (!template || p.template === template),
    );
  }

  async waitFor(cond: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((r) => this.#server.close(() => r()));
  }
}
