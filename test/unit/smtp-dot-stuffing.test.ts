import { randomBytes } from 'node:crypto';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { describe, expect, it } from 'vitest';
import { DotStuffer } from '../../src/smtp/dot-stuffing.js';

/** The whole-message definition (RFC 5321 §4.5.2), to check the streaming one against. */
function reference(message: Buffer): Buffer {
  const text = message.toString('latin1');
  let out = text.replace(/(^|\n)\./g, '$1..');
  if (text.length > 0 && !text.endsWith('\r\n')) out += '\r\n';
  return Buffer.from(`${out}.\r\n`, 'latin1');
}

function stuffInChunks(message: Buffer, cuts: number[]): Buffer {
  const s = new DotStuffer();
  const parts: Buffer[] = [];
  let at = 0;
  for (const cut of [...cuts, message.length]) {
    parts.push(s.push(message.subarray(at, cut)));
    at = cut;
  }
  parts.push(s.end());
  return Buffer.concat(parts);
}

function randomCuts(length: number): number[] {
  const n = Math.floor(Math.random() * 6);
  return Array.from({ length: n }, () => Math.floor(Math.random() * (length + 1))).sort((a, b) => a - b);
}

/** Messages full of the cases that matter: dots at line starts, bare LF, CR, missing final CRLF. */
function randomMessage(): Buffer {
  const alphabet = ['.', '.', '\r\n', '\n', '\r', 'a', 'b', '..', '\r\n.\r\n', ' '];
  const n = Math.floor(Math.random() * 40);
  return Buffer.from(
    Array.from({ length: n }, () => alphabet[Math.floor(Math.random() * alphabet.length)]).join(''),
  );
}

/** What smtp-server makes of the stuffed bytes: the message as its onData stream would give it. */
function unstuffWithSmtpServer(wire: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parser = new SMTPStream();
    const stream = parser.startDataMode();
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    parser.on('error', reject);
    parser.end(wire);
  });
}

describe('DotStuffer', () => {
  it('doubles a dot at the start of every line, the first one included', () => {
    expect(stuffInChunks(Buffer.from('.a\r\nb\r\n.\r\n..c\r\n'), []).toString()).toBe(
      '..a\r\nb\r\n..\r\n...c\r\n.\r\n',
    );
  });

  it('ends with CRLF . CRLF, adding the CRLF only when the message lacks it', () => {
    expect(stuffInChunks(Buffer.from('x\r\n'), []).toString()).toBe('x\r\n.\r\n');
    expect(stuffInChunks(Buffer.from('x'), []).toString()).toBe('x\r\n.\r\n');
    expect(stuffInChunks(Buffer.from(''), []).toString()).toBe('.\r\n');
    // The CRLF split over two chunks still counts.
    expect(stuffInChunks(Buffer.from('x\r\n'), [2]).toString()).toBe('x\r\n.\r\n');
    expect(stuffInChunks(Buffer.from('x\r\n'), [1, 2, 3]).toString()).toBe('x\r\n.\r\n');
  });

  it('stuffs a dot after a bare LF too (smtp-server and Postfix treat it as a line start)', () => {
    expect(stuffInChunks(Buffer.from('a\n.\nb\r\n'), []).toString()).toBe('a\n..\nb\r\n.\r\n');
  });

  it('gives the same bytes however the message is cut into chunks (fuzz)', () => {
    for (let i = 0; i < 3000; i++) {
      const msg = randomMessage();
      expect(stuffInChunks(msg, randomCuts(msg.length))).toEqual(reference(msg));
    }
  });

  it('counts content bytes, not stuffed ones', () => {
    const s = new DotStuffer();
    s.push(Buffer.from('.\r\n.'));
    expect(s.bytes).toBe(4);
  });

  it("round trip: smtp-server's own DATA reader gives back exactly the message (fuzz)", async () => {
    for (let i = 0; i < 300; i++) {
      // Every message smtp-server hands over ends with CRLF (its terminator needs it) or is empty.
      // Its reader does not unstuff a dot right after a bare LF that opens the message (it looks
      // from the third byte on), so such messages, which no real client sends, are left out.
      let msg = randomMessage();
      if (msg.toString('latin1').startsWith('\n')) msg = Buffer.concat([Buffer.from('x'), msg]);
      if (msg.length && !msg.toString('latin1').endsWith('\r\n'))
        msg = Buffer.concat([msg, Buffer.from('\r\n')]);
      const wire = stuffInChunks(msg, randomCuts(msg.length));
      expect(await unstuffWithSmtpServer(wire)).toEqual(msg);
    }
    const big = randomBytes(256 * 1024);
    const wire = stuffInChunks(big, randomCuts(big.length));
    const back = await unstuffWithSmtpServer(wire);
    expect(back.subarray(0, big.length)).toEqual(big);
  });
});
