import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { operatorServiceOn } from '../admin/service.js';
import { loadConfig } from '../config/load.js';
import { startGateway } from '../main.js';
import { createLogger } from '../observability/logger.js';
import { makeCertificate } from './cert.js';
import { freePort } from './ports.js';
import { startDovecot, startPostfix, startRedis } from './servers.js';
import { startSmsPrinter } from './sms-printer.js';

/**
 * scripts/demo: a private Redis, Dovecot and Postfix (the SMTP upstream, delivering to Dovecot
 * over LMTP) in a temporary folder, demo accounts, and the gateway (IMAP and SMTP submission)
 * in front of them on loopback, until Ctrl-C. Everything it starts, it stops.
 */

const BIN = resolve(import.meta.dirname, '../../bin/mailgate');

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mailgate-demo-'));
  const say = (s = '') => process.stdout.write(`${s}\n`);
  say('Starting a private Redis and Dovecot...');
  const redis = await startRedis();
  const dovecot = await startDovecot({
    users: [
      { user: 'taro', password: 'store-only-secret' },
      { user: 'hanako', password: 'store-only-secret' },
    ],
    lmtp: true,
  });
  say('Starting a private Postfix (the SMTP upstream, delivering to Dovecot)...');
  const postfix = await startPostfix({ deliverTo: dovecot, users: ['taro', 'hanako'] });
  const [imaps, imap] = [await freePort(), await freePort()];
  const [smtps, submission] = [await freePort(), await freePort()];
  const tls = makeCertificate(dir);
  // The subscribers' phones: SMS notices are printed here as the gateway sends them.
  const sms = await startSmsPrinter(say);
  const configFile = join(dir, 'mailgate.yaml');
  // JSON is YAML; the operator commands printed below use this same file.
  writeFileSync(
    configFile,
    JSON.stringify(
      {
        log: { level: 'info' },
        redis: { url: redis.url, keyPrefix: 'demo:' },
        tls,
        imap: {
          listen: [
            { host: '127.0.0.1', port: imaps, tls: 'implicit' },
            { host: '127.0.0.1', port: imap, tls: 'starttls' },
          ],
          upstream: {
            servers: [`${dovecot.host}:${dovecot.port}`],
            login: { style: 'master', user: dovecot.masterUser, password: dovecot.masterPassword },
          },
        },
        smtp: {
          listen: [
            { host: '127.0.0.1', port: smtps, tls: 'implicit' },
            { host: '127.0.0.1', port: submission, tls: 'starttls' },
          ],
          hostname: 'localhost',
          upstream: { servers: [`${postfix.host}:${postfix.port}`], login: { style: 'xclient' } },
        },
        geo: {
          domesticCountries: ['JP'],
          // Loopback has no country; the demo pretends it is the carrier network.
          overrides: [{ cidr: '127.0.0.0/8', country: 'JP', org: 'demo carrier network' }],
        },
        // Cheaper than production so the demo starts fast; see config/example.yaml.
        passwords: { argon2: { memoryKiB: 4096, iterations: 2, parallelism: 1 } },
        notify: { webhook: { url: sms.url }, links: { imapPassword: 'https://example.jp/imap-password' } },
      },
      null,
      2,
    ),
  );
  const config = loadConfig(configFile);
  const logFile = join(dir, 'mailgate.log');
  const log = createLogger('info', pino.destination({ dest: logFile, sync: false }));
  const gateway = await startGateway(config, { log });

  const ops = operatorServiceOn(gateway.redis, config, { log, actor: 'demo' });
  await ops.addAccount({
    login: 'taro@example.jp',
    aliases: ['taro'],
    primaryPassword: 'taro-primary-pw',
    upstreamUser: 'taro',
    msisdn: '+819012345678',
  });
  await ops.addAccount({
    login: 'hanako@example.jp',
    primaryPassword: 'hanako-primary-pw',
    upstreamUser: 'hanako',
    msisdn: '+819087654321',
    lang: 'en',
  });
  // The password goes on swaks's command line below, which takes a leading "-" for an option.
  let password = '-';
  while (password.startsWith('-')) {
    password = (await ops.issueImapPassword('taro@example.jp', { ifAbsent: false })).password!;
  }
  await ops.setOverseasPhase('enforce');
  for (const user of ['taro', 'hanako']) {
    await dovecot.deliver(
      user,
      `From: support@example.jp\r\nTo: ${user}@example.jp\r\nSubject: Welcome to mailgate\r\nDate: ${new Date().toUTCString()}\r\n\r\nThis message was read through the mailgate IMAP gateway.\r\n`,
    );
  }

  say(`
mailgate demo is running (self-signed certificate; logs: ${logFile}).

  IMAPS     127.0.0.1:${imaps}   (implicit TLS)
  IMAP      127.0.0.1:${imap}   (STARTTLS required before login)
  SMTPS     127.0.0.1:${smtps}   (submission, implicit TLS, like port 465)
  SMTP      127.0.0.1:${submission}   (submission, STARTTLS required before AUTH, like port 587)

Accounts:
  taro@example.jp   (alias "taro")  IMAP-only password: ${password}
                    primary password taro-primary-pw is refused: an IMAP-only password is set
  hanako@example.jp primary password hanako-primary-pw (no IMAP-only password yet)
The overseas restriction is enforced; 127.0.0.0/8 is pinned to Japan, so you count as domestic.

Read taro's mail with openssl (type the lines after the greeting):
  openssl s_client -quiet -connect 127.0.0.1:${imaps}
  a LOGIN taro@example.jp ${password}
  b SELECT INBOX
  c FETCH 1 BODY[]
  d LOGOUT

Or with Python (paste the whole block):
  python3 - <<'PY'
  import imaplib, ssl
  m = imaplib.IMAP4_SSL('127.0.0.1', ${imaps}, ssl_context=ssl._create_unverified_context())
  m.login('taro', '${password}')
  m.select('INBOX')
  print(m.fetch('1', '(BODY[])')[1][0][1].decode())
  m.logout()
  PY

Or Thunderbird: server 127.0.0.1, port ${imaps}, SSL/TLS, normal password, accept the certificate.

Send taro a message over SMTPS with swaks; it is relayed to Postfix (XCLIENT) and delivered
to Dovecot, where the openssl session above lists it after SELECT with
"c FETCH 1:* BODY[HEADER.FIELDS (SUBJECT RECEIVED)]":
  swaks --server 127.0.0.1:${smtps} --tls-on-connect --auth PLAIN \\
    --auth-user taro@example.jp --auth-password '${password}' \\
    --from taro@example.jp --to taro@example.jp --header 'Subject: sent through mailgate'
(--tls with port ${submission} uses STARTTLS; a From other than taro's own addresses gets 553.)

Try the rollout (in another terminal; takes effect on the next login):
  ${BIN} rollout domestic enforce --login hanako@example.jp --config ${configFile}
  ${BIN} imap-password issue hanako@example.jp --config ${configFile}
  ${BIN} rollout status --config ${configFile}
The first command sends hanako the domestic-restriction SMS, and her next login with the
primary password the connection-error SMS; they are printed here (the demo's SMS gateway).
  ${BIN} notify tail --config ${configFile}

Ctrl-C stops everything.`);

  await new Promise<void>((done) => {
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  say('\nStopping...');
  await gateway.close();
  await sms.close();
  log.flush();
  await postfix.stop();
  await Promise.allSettled([dovecot.stop(), redis.stop()]);
  rmSync(dir, { recursive: true, force: true });
  say('Stopped.');
}

main().catch((err: unknown) => {
  process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
