import { once } from 'node:events';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type { SmtpUpstreamConfig } from '../../src/config/schema.js';
import {
  SmtpClientAbortedError,
  SmtpMessageTooLargeError,
  SmtpUpstream,
  SmtpUpstreamAuthError,
  SmtpUpstreamClosedError,
  SmtpUpstreamConnectError,
  SmtpUpstreamTimeoutError,
} from '../../src/smtp/upstream.js';

/**
 * The relay's SMTP client against a scripted store on loopback: each test says how the store
 * answers, and checks what it received, above all that no final dot reaches the store unless
 * the client's message was complete.
 */

interface Store {
  server: Server;
  address: string;
  /** Everything the store received, per connection. */
  received: string[];
  sockets: Socket[];
}

type Answer = (line: string, s: Socket) => string | null | undefined;

const EHLO =
  '250-store.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n';

/** A store that answers line by line; DATA collects until the final dot. */
function defaultAnswer(line: string): string | null {
  const verb = line.split(' ')[0]!.toUpperCase();
  switch (verb) {
    case 'EHLO':
      return EHLO;
    case 'XCLIENT':
      return '220 store.test ESMTP\r\n';
    case 'AUTH':
      return '235 2.7.0 Authentication successful\r\n';
    case 'MAIL':
    case 'RCPT':
    case 'RSET':
      return '250 2.1.0 Ok\r\n';
    case 'DATA':
      return '354 End data with <CR><LF>.<CR><LF>\r\n';
    case 'QUIT':
      return '221 2.0.0 Bye\r\n';
    default:
      return '502 5.5.2 Error: command not recognized\r\n';
  }
}

const stores: Store[] = [];

async function startStore(
  opts: { greeting?: string; answer?: Answer; afterData?: string | null } = {},
): Promise<Store> {
  const store: Store = { server: createServer(), address: '', received: [], sockets: [] };
  store.server.on('connection', (s) => {
    const i = store.received.push('') - 1;
    store.sockets.push(s);
    s.on('error', () => {});
    let buf = '';
    let inData = false;
    s.write(opts.greeting ?? '220 store.test ESMTP\r\n');
    s.on('data', (d: Buffer) => {
      store.received[i] += d.toString('latin1');
      buf += d.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) return;
          buf = buf.slice(end + 5);
          inData = false;
          const r = opts.afterData === undefined ? '250 2.0.0 Ok: queued as ABC123\r\n' : opts.afterData;
          if (r !== null) s.write(r);
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        const custom = opts.answer?.(line, s);
        const r = custom === undefined ? defaultAnswer(line) : custom;
        if (r !== null) s.write(r);
        if (r?.startsWith('354')) inData = true;
      }
    });
  });
  store.server.listen(0, '127.0.0.1');
  await once(store.server, 'listening');
  store.address = `127.0.0.1:${(store.server.address() as AddressInfo).port}`;
  stores.push(store);
  return store;
}

afterEach(async () => {
  for (const s of stores.splice(0)) {
    for (const sock of s.sockets) sock.destroy();
    await new Promise((r) => s.server.close(r));
  }
});

function cfg(over: Partial<SmtpUpstreamConfig> = {}): SmtpUpstreamConfig {
  return {
    servers: [],
    tls: 'none',
    tlsVerify: true,
    login: { style: 'xclient' },
    connectTimeoutMs: 1_000,
    loginTimeoutMs: 1_000,
    replyTimeoutMs: 1_000,
    dataTimeoutMs: 1_000,
    ...over,
  };
}

const req = (servers: string[]) => ({
  servers,
  user: 'alice',
  clientIp: '203.0.113.5',
  clientPort: 40000,
  clientHelo: 'pc.example',
  localName: 'gateway.test',
});

const until = async (cond: () => boolean, ms = 2_000) => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('opening the store session', () => {
  it('EHLO, XCLIENT with the client facts, then EHLO again as the client (XCLIENT_README)', async () => {
    const store = await startStore();
    const up = await SmtpUpstream.open(cfg(), req([store.address]));
    expect(store.received[0]).toBe(
      'EHLO gateway.test\r\nXCLIENT ADDR=203.0.113.5 PORT=40000 NAME=[UNAVAILABLE] HELO=pc.example PROTO=ESMTP LOGIN=alice\r\nEHLO pc.example\r\n',
    );
    expect(up.extension('8BITMIME')).toBe('');
    expect(up.extension('SIZE')).toBe('10240000');
    expect(up.alive).toBe(true);
    up.quit();
    await until(() => store.received[0]!.endsWith('QUIT\r\n'));
  });

  it('master style: AUTH PLAIN with authzid = user, authcid = master (RFC 4616)', async () => {
    const store = await startStore();
    const login = { style: 'master' as const, user: 'proxy', password: 'master-secret' };
    const up = await SmtpUpstream.open(cfg({ login }), req([store.address]));
    const auth = /AUTH PLAIN (\S+)/.exec(store.received[0]!)?.[1];
    expect(Buffer.from(auth!, 'base64').toString()).toBe('alice\0proxy\0master-secret');
    up.destroy();
  });

  it('a store that refuses XCLIENT, or does not offer it, is an auth error', async () => {
    const refusing = await startStore({
      answer: (l) =>
        l.startsWith('XCLIENT') ? '550 5.7.0 Error: insufficient authorization\r\n' : undefined,
    });
    await expect(SmtpUpstream.open(cfg(), req([refusing.address]))).rejects.toBeInstanceOf(
      SmtpUpstreamAuthError,
    );
    const plain = await startStore({
      answer: (l) => (l.startsWith('EHLO') ? '250-store\r\n250 8BITMIME\r\n' : undefined),
    });
    await expect(SmtpUpstream.open(cfg(), req([plain.address]))).rejects.toThrow(/does not offer XCLIENT/);
  });

  it('moves on to the next server when one is down or greets with 421', async () => {
    const busy = await startStore({ greeting: '421 4.3.2 busy\r\n' });
    const good = await startStore();
    const up = await SmtpUpstream.open(cfg(), req(['127.0.0.1:1', busy.address, good.address]));
    expect(up.server).toBe(good.address);
    up.destroy();
    await expect(SmtpUpstream.open(cfg(), req(['127.0.0.1:1']))).rejects.toBeInstanceOf(
      SmtpUpstreamConnectError,
    );
  });

  it('a store that does not answer in time is a timeout', async () => {
    const mute = await startStore({ answer: (l) => (l.startsWith('EHLO') ? null : undefined) });
    await expect(SmtpUpstream.open(cfg({ loginTimeoutMs: 100 }), req([mute.address]))).rejects.toBeInstanceOf(
      SmtpUpstreamTimeoutError,
    );
  });
});

describe('commands and replies', () => {
  it('reads multi-line replies however they are split, and returns 4xx/5xx as values', async () => {
    const store = await startStore({
      answer: (l, s) => {
        if (!l.startsWith('RCPT')) return undefined;
        const reply = '550-5.1.1 first line\r\n550 5.1.1 <x@example.jp>: Recipient address rejected\r\n';
        for (const ch of reply) s.write(ch);
        return null;
      },
    });
    const up = await SmtpUpstream.open(cfg(), req([store.address]));
    const r = await up.command('RCPT TO:<x@example.jp>');
    expect(r).toEqual({
      code: 550,
      lines: ['5.1.1 first line', '5.1.1 <x@example.jp>: Recipient address rejected'],
    });
    expect(up.alive).toBe(true);
    up.destroy();
  });

  it('a 421 ends the session: not alive afterwards', async () => {
    const store = await startStore({
      answer: (l) => (l.startsWith('MAIL') ? '421 4.4.2 timeout\r\n' : undefined),
    });
    const up = await SmtpUpstream.open(cfg(), req([store.address]));
    expect((await up.command('MAIL FROM:<a@example.jp>')).code).toBe(421);
    expect(up.alive).toBe(false);
    await expect(up.command('RSET')).rejects.toBeInstanceOf(SmtpUpstreamClosedError);
  });

  it('an unsolicited reply while idle (the store timing out) makes the session unusable', async () => {
    const store = await startStore();
    const up = await SmtpUpstream.open(cfg(), req([store.address]));
    store.sockets[0]!.write('421 4.4.2 store.test Error: timeout exceeded\r\n');
    await until(() => !up.alive);
    up.destroy();
  });
});

describe('streaming the message (never a final dot for an incomplete one)', () => {
  async function inData(store: Store) {
    const up = await SmtpUpstream.open(cfg(), req([store.address]));
    expect((await up.command('MAIL FROM:<alice@example.jp>')).code).toBe(250);
    expect((await up.command('RCPT TO:<bob@example.jp>')).code).toBe(250);
    expect((await up.command('DATA')).code).toBe(354);
    return up;
  }

  it('stuffs, ends with the final dot, and returns the store reply', async () => {
    const store = await startStore();
    const up = await inData(store);
    const source = new PassThrough();
    const done = up.streamMessage(source, { maxBytes: 1_000 });
    source.write('Subject: x\r\n\r\n.hidden');
    source.end('\r\nend\r\n');
    expect(await done).toEqual({ code: 250, lines: ['2.0.0 Ok: queued as ABC123'] });
    expect(store.received[0]).toContain('DATA\r\nSubject: x\r\n\r\n..hidden\r\nend\r\n.\r\n');
    up.destroy();
  });

  it('the client goes away mid-message: the store connection is cut before any final dot', async () => {
    const store = await startStore();
    const up = await inData(store);
    const source = new PassThrough();
    const done = up.streamMessage(source, { maxBytes: 1_000 });
    source.write('Subject: x\r\n\r\npartial\r\n');
    await until(() => store.received[0]!.includes('partial'));
    source.destroy();
    await expect(done).rejects.toBeInstanceOf(SmtpClientAbortedError);
    await until(() => store.sockets[0]!.destroyed || store.sockets[0]!.readableEnded);
    expect(store.received[0]!.split('DATA\r\n')[1]).not.toContain('\r\n.\r\n');
  });

  it('a message over maxBytes: cut off before the final dot, the rest of the client stream drained', async () => {
    const store = await startStore();
    const up = await inData(store);
    const source = new PassThrough();
    const done = up.streamMessage(source, { maxBytes: 100 });
    source.write('x'.repeat(60));
    source.write('y'.repeat(60));
    await expect(done).rejects.toBeInstanceOf(SmtpMessageTooLargeError);
    source.end('z'.repeat(100_000)); // nobody waits for it: drained, not buffered
    await once(source, 'end');
    expect(store.received[0]).not.toContain('yyyy');
  });

  it('the store goes away mid-message: an error, and the client stream is still drained', async () => {
    const store = await startStore();
    const up = await inData(store);
    const source = new PassThrough();
    const done = up.streamMessage(source, { maxBytes: 1_000_000 });
    source.write('first\r\n');
    await until(() => store.received[0]!.includes('first'));
    store.sockets[0]!.destroy();
    await expect(done).rejects.toBeInstanceOf(SmtpUpstreamClosedError);
    source.end('more\r\n');
    await once(source, 'end');
  });

  it('a store that takes too long after the final dot is a timeout (the client then gets 4xx)', async () => {
    const store = await startStore({ afterData: null });
    const up = await SmtpUpstream.open(cfg({ dataTimeoutMs: 100 }), req([store.address]));
    await up.command('MAIL FROM:<a@example.jp>');
    await up.command('RCPT TO:<b@example.jp>');
    await up.command('DATA');
    const source = new PassThrough();
    const done = up.streamMessage(source, { maxBytes: 1_000 });
    source.end('x\r\n');
    await expect(done).rejects.toBeInstanceOf(SmtpUpstreamTimeoutError);
  });
});
