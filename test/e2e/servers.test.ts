// Checks the test-server helpers themselves against real Redis and Dovecot.
import { connect, type Socket } from 'node:net';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DovecotServer, type RedisServer, startDovecot, startRedis } from '../../src/devenv/servers.js';

const alice = { user: 'alice', password: 'alice-pw' };
const bob = { user: 'bob@example.test', password: 'bob-pw' };

let redis: RedisServer;
let dovecot: DovecotServer;

beforeAll(async () => {
  [redis, dovecot] = await Promise.all([
    startRedis({ appendOnly: true }),
    startDovecot({ users: [alice, bob], masterPassword: 'master-secret' }),
  ]);
});

afterAll(async () => {
  await Promise.all([redis?.stop(), dovecot?.stop()]);
});

/** Minimal line-oriented IMAP client over a raw socket. */
class RawImap {
  private buf = '';
  private waiters: Array<() => void> = [];
  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.buf += chunk;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async open(port: number): Promise<RawImap> {
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new RawImap(socket);
    await client.readUntil(/^\* OK/m);
    return client;
  }

  async readUntil(re: RegExp, timeoutMs = 5_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.buf)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${re}; got:\n${this.buf}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const text = this.buf;
    this.buf = '';
    return text;
  }

  async command(tag: string, line: string): Promise<string> {
    this.socket.write(`${tag} ${line}\r\n`);
    return await this.readUntil(new RegExp(`^${tag} (OK|NO|BAD)`, 'm'));
  }

  close(): void {
    this.socket.destroy();
  }
}

async function fetchSubjects(user: string, pass: string): Promise<string[]> {
  const client = new ImapFlow({
    host: dovecot.host,
    port: dovecot.port,
    secure: false,
    logger: false,
    auth: { user, pass },
  });
  await client.connect();
  try {
    const lock = await client.getMailboxLock('INBOX');
    try {
      const subjects: string[] = [];
      for await (const msg of client.fetch('1:*', { envelope: true })) {
        subjects.push(msg.envelope?.subject ?? '');
      }
      return subjects;
    } finally {
      lock.release();
    }
  } finally {
    await client.logout();
  }
}

const message = (subject: string): string =>
  [
    'From: sender@example.test',
    'To: alice@example.test',
    `Subject: ${subject}`,
    'Date: Tue, 14 Nov 2023 22:13:20 +0000',
    'Message-ID: <helper-test@example.test>',
    '',
    'Hello from the test helper.',
    '',
  ].join('\r\n');

describe('Dovecot helper', () => {
  it('serves a delivered message to the user', async () => {
    await dovecot.deliver(alice.user, message('first message'));
    expect(await fetchSubjects(alice.user, alice.password)).toEqual(['first message']);
  });

  it('accepts a master-user login (user*proxy) and logs it', async () => {
    await dovecot.deliver(bob.user, message('for bob'));
    const subjects = await fetchSubjects(`${bob.user}*${dovecot.masterUser}`, dovecot.masterPassword);
    expect(subjects).toEqual(['for bob']);
    // 2.3.19 prints "auth: Info: Master user logging in as bob@example.test".
    await dovecot.waitForLog(`Master user logging in as ${bob.user}`);
  });

  it('rejects a wrong password', async () => {
    const raw = await RawImap.open(dovecot.port);
    try {
      expect(await raw.command('a', `LOGIN ${alice.user} wrong`)).toMatch(/^a NO/m);
    } finally {
      raw.close();
    }
  });

  it('honours x-originating-ip from a trusted peer (rip= in the log)', async () => {
    const from = (await dovecot.readLog()).length;
    const raw = await RawImap.open(dovecot.port);
    try {
      expect(await raw.command('a', 'ID ("x-originating-ip" "198.51.100.7")')).toMatch(/^a OK/m);
      expect(await raw.command('b', `LOGIN ${alice.user} ${alice.password}`)).toMatch(/^b OK/m);
      await raw.command('c', 'LOGOUT');
    } finally {
      raw.close();
    }
    const line = await dovecot.waitForLog(/Login: user=<alice>.*rip=198\.51\.100\.7/, { from });
    expect(line).toContain('method=PLAIN');
  });

  it('picks up users added to the passwd-file while running', async () => {
    const carol = { user: 'carol', password: 'carol-pw' };
    await dovecot.addUser(carol);
    await dovecot.deliver(carol.user, message('for carol'));
    expect(await fetchSubjects(carol.user, carol.password)).toEqual(['for carol']);
  });
});

describe('Redis helper', () => {
  async function redisCommand(port: number, line: string): Promise<string> {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setEncoding('latin1');
    try {
      return await new Promise<string>((resolve, reject) => {
        let buf = '';
        socket.on('error', reject);
        socket.on('connect', () => socket.write(`${line}\r\n`));
        socket.on('data', (chunk: string) => {
          buf += chunk;
          // Enough for the simple replies used here: +OK, $len\r\nvalue\r\n, $-1.
          if (/^(\+|-|:|\$-1)[^\r]*\r\n$/.test(buf) || /^\$\d+\r\n.*\r\n$/s.test(buf)) resolve(buf);
        });
      });
    } finally {
      socket.destroy();
    }
  }

  it('keeps a key across restart() with appendonly, and is down after kill()', async () => {
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    expect(await redisCommand(redis.port, 'SET survivor yes')).toBe('+OK\r\n');
    const firstPid = redis.pid;

    await redis.restart();
    expect(redis.pid).not.toBe(firstPid);
    expect(await redisCommand(redis.port, 'GET survivor')).toBe('$3\r\nyes\r\n');

    await redis.kill();
    await expect(redisCommand(redis.port, 'PING')).rejects.toThrow(/ECONNREFUSED/);
    await redis.restart();
    expect(await redisCommand(redis.port, 'GET survivor')).toBe('$3\r\nyes\r\n');
  });
});
