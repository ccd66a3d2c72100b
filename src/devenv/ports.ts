import { createServer } from 'node:net';

/**
 * Returns a TCP port that was free a moment ago on `host`: listens on port 0, reads the port the
 * kernel chose, closes. Another process can take it before the caller binds it, so callers that
 * start a server on it should retry with a fresh port on "address in use" (the helpers in
 * servers.ts do).
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error(`freePort: unexpected address ${String(address)}`));
        return;
      }
      const { port } = address;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}
