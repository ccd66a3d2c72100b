import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { PasswordHasher } from '../auth/passwords.js';
import type { NginxAuthConfig } from './servers.js';

/**
 * The auth_http responder behind scripts/bench's nginx mail proxy: a process of its own, so the
 * bench can count its CPU as part of nginx's. It answers nginx's header-only protocol
 * (ngx_mail_auth_http_module): a good login gets `Auth-Status: OK` with the backend's address
 * and a rewritten `Auth-User`/`Auth-Pass` (the Dovecot master login `user*master`), so the
 * store sees what it sees from mailgate; a bad one gets an error status and `Auth-Wait`.
 *
 *   GET /argon2  verifies the password against the account's argon2id hash (every login)
 *   GET /plain   compares it with the account's password (cheap auth, to isolate the proxy)
 *
 * Usage: node dist/devenv/nginx-auth.js CONFIG.json (NginxAuthConfig); prints `listening PORT`
 * on stdout. startNginxAuthResponder() in servers.ts runs it. Loopback only; logs nothing.
 */

const config = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as NginxAuthConfig;
const accounts = new Map(Object.entries(config.accounts));
// Parameters come from each stored hash; the ones given here would only matter for hash().
const hasher = new PasswordHasher(
  { memoryKiB: 19456, iterations: 2, parallelism: 1 },
  { maxConcurrent: config.maxConcurrentVerifies, maxQueued: 100_000 },
);

/** nginx escapes the login and password (%XX) in Auth-User and Auth-Pass. */
function header(value: string | string[] | undefined): string {
  const text = Array.isArray(value) ? (value[0] ?? '') : (value ?? '');
  try {
    return decodeURIComponent(text);
  } catch {
    return '';
  }
}

const server = createServer((req, res) => {
  const login = header(req.headers['auth-user']).toLowerCase();
  const password = header(req.headers['auth-pass']);
  const account = accounts.get(login);
  const answer = (ok: boolean) => {
    if (ok && account) {
      res.writeHead(200, {
        'Auth-Status': 'OK',
        'Auth-Server': config.backend.host,
        'Auth-Port': String(config.backend.port),
        'Auth-User': `${account.upstreamUser}*${config.masterUser}`,
        'Auth-Pass': config.masterPassword,
      });
    } else {
      res.writeHead(200, { 'Auth-Status': 'Invalid login or password', 'Auth-Wait': '1' });
    }
    res.end();
  };
  if (req.url === '/plain') return answer(account !== undefined && account.password === password);
  if (req.url !== '/argon2') {
    res.writeHead(404);
    return res.end();
  }
  if (account === undefined) return answer(false);
  hasher.verify(account.hash, password).then(answer, () => answer(false));
});

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`listening ${typeof address === 'object' && address ? address.port : 0}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
