import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { splice } from '../../src/net/splice.js';

/** Two connected loopback socket pairs: user <-> [client ~ store] <-> backend, with splice in the middle. */
async function chain(): Promise<{
  user: net.Socket;
  backend: net.Socket;
  client: net.Socket;
  store: net.Socket;
}> {
  const pair = async () => {
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const outer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const inner = await accepted;
    server.close();
    return { outer, inner };
  };
  const front = await pair(); // user -> client
  const back = await pair(); // store -> backend
  back.outer.pause();
  open.push(front.outer, front.inner, back.outer, back.inner);
  splice(front.inner, back.outer);
  front.inner.resume();
  back.outer.resume();
  back.inner.resume();
  return { user: front.outer, client: front.inner, store: back.outer, backend: back.inner };
}

const open: net.Socket[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.destroy();
});

function collect(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve) => socket.once('end', () => resolve(Buffer.concat(chunks))));
}

describe('splice', () => {
  it('carries bytes both ways, in order, and passes each end on', async () => {
    const { user, backend } = await chain();
    const up = randomBytes(256 * 1024);
    const down = randomBytes(3 * 1024 * 1024);
    const atBackend = collect(backend);
    const atUser = collect(user);
    user.end(up);
    backend.end(down);
    expect((await atBackend).equals(up)).toBe(true);
    expect((await atUser).equals(down)).toBe(true);
  });

  it('holds the store back while the client does not read, and loses nothing', async () => {
    const { user, backend, store } = await chain();
    user.pause(); // a client that stops reading mid-FETCH
    const down = randomBytes(16 * 1024 * 1024);
    backend.end(down);
    // The kernel buffers fill, the client socket's write buffer fills, the store is paused.
    await new Promise<void>((resolve, reject) => {
      const started = Date.now();
      const poll = setInterval(() => {
        if (store.isPaused()) {
          clearInterval(poll);
          resolve();
        } else if (Date.now() - started > 10_000) {
          clearInterval(poll);
          reject(new Error('the store was never paused'));
        }
      }, 10);
    });
    const atUser = collect(user);
    user.resume();
    expect((await atUser).equals(down)).toBe(true);
  });

  it('adds one data listener per socket and no pipe() state', async () => {
    const { client, store } = await chain();
    expect(client.listenerCount('data')).toBe(1);
    expect(store.listenerCount('data')).toBe(1);
    expect(client.listenerCount('unpipe')).toBe(0);
    expect(client.readableFlowing).toBe(true);
  });
});
