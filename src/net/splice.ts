import type net from 'node:net';

/**
 * Joins a client socket to its store socket both ways, with back-pressure, as
 * `client.pipe(store); store.pipe(client)` would, but with one 'data', 'drain' and 'end'
 * listener per socket, the same three functions for every session, instead of pipe()'s ten
 * closures per direction: an idle session's memory is mostly what its streams hold, and a
 * gateway holds many thousands of them.
 *
 * A chunk goes straight from one socket's read to the other's write (no copy, no parsing);
 * when the writer's buffer is full, the reader pauses until it drains. An end (FIN) from
 * either side ends the other side once what was read has been written. Errors surface through
 * 'close', which the caller listens to. Both sockets must be paused; the caller resumes them.
 */
export function splice(client: net.Socket, store: net.Socket): void {
  ignoreErrors(store);
  (client as Spliced)[PEER] = store;
  (store as Spliced)[PEER] = client;
  for (const socket of [client, store]) {
    socket.on('data', relayData);
    socket.on('drain', resumePeer);
    socket.on('end', endPeer);
  }
}

/** Each spliced socket knows the other; the listeners below are shared by every session. */
const PEER = Symbol('mailgate.splice.peer');
type Spliced = net.Socket & { [PEER]: net.Socket };

/** 'data' on one side: write it to the other; pause this side while the other is full. */
function relayData(this: Spliced, chunk: Buffer): void {
  if (!this[PEER].write(chunk)) this.pause();
}

/** 'drain' on one side: the side writing to it may read again. */
function resumePeer(this: Spliced): void {
  this[PEER].resume();
}

/** 'end' (FIN) on one side: end the other once what was read has been written. */
function endPeer(this: Spliced): void {
  if (!this[PEER].writableEnded) this[PEER].end();
}

/**
 * The one 'error' listener a socket needs when its errors are handled through 'close' (without
 * one, an error event would throw). Shared by every socket rather than a closure for each.
 */
export function ignoreError(): void {}

/** Adds ignoreError to a socket once. */
export function ignoreErrors(socket: net.Socket): void {
  if (!socket.listeners('error').includes(ignoreError)) socket.on('error', ignoreError);
}
