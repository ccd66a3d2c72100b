import type net from 'node:net';

/**
 * Joins a client socket to its store socket both ways, with back-pressure, as
 * `client.pipe(store); store.pipe(client)` would, but with one 'data', 'drain' and 'end'
 * listener per direction instead of pipe()'s ten: an idle session's memory is mostly what its
 * streams hold, and a gateway holds many thousands of them.
 *
 * A chunk goes straight from one socket's read to the other's write (no copy, no parsing);
 * when the writer's buffer is full, the reader pauses until it drains. An end (FIN) from
 * either side ends the other side once what was read has been written. Errors are left to the
 * caller's 'error' and 'close' listeners. Both sockets must be paused; the caller resumes them.
 */
export function splice(client: net.Socket, store: net.Socket): void {
  forward(client, store);
  forward(store, client);
}

function forward(from: net.Socket, to: net.Socket): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => {
    if (!to.writableEnded) to.end();
  });
}
