import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { connectRedis, createRedis } from '../accounts/redis.js';
import { AccountStore } from '../accounts/store.js';
import { type AuditEntry, formatAuditLine, RedisAuditLog } from '../admin/audit.js';
import { createOperatorService, type OperatorService } from '../admin/service.js';
import { PasswordHasher } from '../auth/passwords.js';
import type { Phase } from '../auth/policy.js';
import { loadConfig, redactConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { startGateway } from '../main.js';
import { createLogger } from '../observability/logger.js';
import { ConfigError, MailgateError, RefusedError, UsageError } from '../util/errors.js';

/**
 * bin/mailgate: argv in, one service call, text or JSON out. Exit codes: 0 done, 1 refused or
 * failed (unknown login, Redis down), 2 usage (bad arguments or config).
 */

const DEFAULT_CONFIG = process.env.MAILGATE_CONFIG ?? '/etc/mailgate/mailgate.yaml';

interface GlobalOpts {
  config: string;
  json?: boolean;
}

class Output {
  constructor(private readonly json: boolean) {}

  /** Prints a result: JSON as is, or the human text. */
  result(value: unknown, text: string): void {
    process.stdout.write(this.json ? `${JSON.stringify(value)}\n` : `${text}\n`);
  }
}

function withCommonOptions(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'configuration file (env MAILGATE_CONFIG)', DEFAULT_CONFIG)
    .option('--json', 'print results as JSON');
}

async function withService<T>(
  opts: GlobalOpts,
  fn: (svc: OperatorService, out: Output, config: Config) => Promise<T>,
): Promise<T> {
  const config = loadConfig(opts.config);
  const redis = createRedis(config.redis);
  await connectRedis(redis, config.redis.url);
  // Operator actions are audited on stderr so that stdout stays the command's result.
  const log = createLogger(config.log.level === 'silent' ? 'silent' : 'info', process.stderr);
  const hasher = new PasswordHasher(config.passwords.argon2, { maxConcurrent: 2, maxQueued: 100 });
  const audit = new RedisAuditLog(redis, config.redis.keyPrefix, log);
  const svc = createOperatorService({
    accounts: new AccountStore(redis, config.redis.keyPrefix),
    hasher,
    log,
    clock: Date.now,
    actor: `cli:${process.env.SUDO_USER ?? process.env.USER ?? 'unknown'}`,
    audit,
  });
  try {
    return await fn(svc, new Output(Boolean(opts.json)), config);
  } finally {
    await audit.flush();
    redis.disconnect();
  }
}

const phaseArg = (value: string): Phase => {
  if (value === 'off' || value === 'warn' || value === 'enforce') return value;
  throw new UsageError(`phase must be off, warn or enforce, not "${value}"`);
};

async function readStdinLine(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('Primary password: ');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

export function buildProgram(): Command {
  const program = new Command('mailgate')
    .description('IMAP/SMTP authentication gateway: IMAP-only passwords, overseas and domestic restrictions')
    .showHelpAfterError()
    .exitOverride()
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate check-config --config /etc/mailgate/mailgate.yaml\n  mailgate account show alice@example.jp\n  mailgate help rollout',
    );

  withCommonOptions(program.command('serve'))
    .description('run the gateway with every configured listener')
    .addHelpText(
      'after',
      '\nExample:\n  mailgate serve --config /etc/mailgate/mailgate.yaml\n\nSIGHUP reloads the TLS certificate and GeoIP database; SIGTERM/SIGINT stop.',
    )
    .action(async (opts: GlobalOpts) => {
      const config = loadConfig(opts.config);
      const gateway = await startGateway(config);
      process.on('SIGHUP', () => {
        gateway
          .reload()
          .catch((err: Error) => gateway.log.error({ event: 'reload', error: err.message }, 'reload failed'));
      });
      await new Promise<void>((resolve) => {
        process.once('SIGTERM', resolve);
        process.once('SIGINT', resolve);
      });
      gateway.log.info({ event: 'shutdown' }, 'stopping');
      await gateway.close();
      gateway.log.flush();
    });

  withCommonOptions(program.command('check-config'))
    .description('validate the configuration and print it with secrets redacted')
    .addHelpText('after', '\nExample:\n  mailgate check-config --config config/example.yaml')
    .action((opts: GlobalOpts) => {
      const config = loadConfig(opts.config);
      const out = new Output(true);
      if (opts.json) out.result(redactConfig(config), '');
      else process.stdout.write(`${opts.config}: OK\n${JSON.stringify(redactConfig(config), null, 2)}\n`);
    });

  const account = program
    .command('account')
    .description('accounts: add, show')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate account show alice@example.jp\n  mailgate account add --help',
    );
  withCommonOptions(account.command('add <login>'))
    .description('create an account')
    .option('--primary-password-stdin', 'read the primary (account-site) password from standard input')
    .option('--primary-hash <phc>', 'the primary password as an argon2 PHC string')
    .option('--msisdn <e164>', 'mobile number for SMS notices, e.g. +819012345678')
    .option(
      '--alias <addr>',
      'another login name for the account (repeatable)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--upstream-user <name>', 'user name at the mail store, if not the login')
    .option('--upstream <host:port>', 'mail store for this account, if not the configured servers')
    .addHelpText(
      'after',
      '\nExample:\n  echo -n "$PW" | mailgate account add alice@example.jp --primary-password-stdin --msisdn +819012345678 --alias alice',
    )
    .action(
      async (
        login: string,
        opts: GlobalOpts & {
          primaryPasswordStdin?: boolean;
          primaryHash?: string;
          msisdn?: string;
          alias: string[];
          upstreamUser?: string;
          upstream?: string;
        },
      ) => {
        const primaryPassword = opts.primaryPasswordStdin ? await readStdinLine() : undefined;
        await withService(opts, async (svc, out) => {
          const view = await svc.addAccount({
            login,
            aliases: opts.alias,
            ...(primaryPassword !== undefined ? { primaryPassword } : {}),
            ...(opts.primaryHash !== undefined ? { primaryHash: opts.primaryHash } : {}),
            ...(opts.msisdn !== undefined ? { msisdn: opts.msisdn } : {}),
            ...(opts.upstreamUser !== undefined ? { upstreamUser: opts.upstreamUser } : {}),
            ...(opts.upstream !== undefined ? { upstream: opts.upstream } : {}),
          });
          out.result(view, `created ${view.login}`);
        });
      },
    );
  withCommonOptions(account.command('show <login>'))
    .description('show an account (never its hashes)')
    .addHelpText('after', '\nExample:\n  mailgate account show alice@example.jp --json')
    .action(async (login: string, opts: GlobalOpts) => {
      await withService(opts, async (svc, out) => {
        const v = await svc.showAccount(login);
        const text = [
          `login:          ${v.login}`,
          `aliases:        ${v.aliases.join(', ') || '-'}`,
          `msisdn:         ${v.msisdn ?? '-'}`,
          `primary:        ${v.primaryPassword ? 'set' : 'not set'}`,
          `imap password:  ${v.imapPassword ? `set ${v.imapPassword.issuedAt}` : 'not set'}`,
          `domestic phase: ${v.domesticPhase}`,
          `upstream:       ${v.upstream ?? '(configured servers)'} as ${v.upstreamUser ?? v.login}`,
        ].join('\n');
        out.result(v, text);
      });
    });

  const imapPassword = program
    .command('imap-password')
    .description('IMAP-only passwords: issue, revoke')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate imap-password issue alice@example.jp\n  mailgate imap-password revoke alice@example.jp',
    );
  withCommonOptions(imapPassword.command('issue <login>'))
    .description('issue a new IMAP-only password and print it once (it cannot be shown again)')
    .option('--if-absent', 'issue only if the account has none (profile installs, S5)')
    .addHelpText(
      'after',
      '\nExample:\n  mailgate imap-password issue alice@example.jp\n  mailgate imap-password issue alice@example.jp --if-absent --json',
    )
    .action(async (login: string, opts: GlobalOpts & { ifAbsent?: boolean }) => {
      await withService(opts, async (svc, out) => {
        const r = await svc.issueImapPassword(login, { ifAbsent: Boolean(opts.ifAbsent) });
        out.result(
          r,
          r.issued ? r.password! : `${r.login} already has an IMAP-only password; nothing issued`,
        );
      });
    });
  withCommonOptions(imapPassword.command('revoke <login>'))
    .description("remove an account's IMAP-only password")
    .addHelpText('after', '\nExample:\n  mailgate imap-password revoke alice@example.jp')
    .action(async (login: string, opts: GlobalOpts) => {
      await withService(opts, async (svc, out) => {
        const r = await svc.revokeImapPassword(login);
        out.result(
          r,
          r.revoked ? `revoked the IMAP-only password of ${r.login}` : `${r.login} had no IMAP-only password`,
        );
      });
    });

  const rollout = program
    .command('rollout')
    .description('the overseas and domestic restrictions')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate rollout status\n  mailgate rollout overseas warn\n  mailgate rollout domestic enforce --login alice@example.jp',
    );
  withCommonOptions(rollout.command('status'))
    .description('show the phases in force')
    .addHelpText('after', '\nExample:\n  mailgate rollout status --json')
    .action(async (opts: GlobalOpts) => {
      await withService(opts, async (svc, out) => {
        const s = await svc.rolloutStatus();
        out.result(
          s,
          `overseas:      ${s.overseas}\ndomestic all:  ${s.domesticAll}\naccounts:      ${s.accounts}`,
        );
      });
    });
  withCommonOptions(rollout.command('overseas <phase>'))
    .description('set the overseas restriction: off | warn | enforce (S7)')
    .addHelpText('after', '\nExample:\n  mailgate rollout overseas enforce')
    .action(async (phase: string, opts: GlobalOpts) => {
      const p = phaseArg(phase);
      await withService(opts, async (svc, out) => {
        const s = await svc.setOverseasPhase(p);
        out.result(s, `overseas restriction: ${s.overseas}`);
      });
    });
  withCommonOptions(rollout.command('domestic <phase>'))
    .description('set the domestic restriction for some accounts or all: off | warn | enforce (S8)')
    .addOption(
      new Option('--login <login>', 'an account to change (repeatable)').argParser(
        (v: string, acc: string[] = []) => [...acc, v],
      ),
    )
    .option('--all', 'every account')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate rollout domestic enforce --login alice@example.jp --login bob@example.jp\n  mailgate rollout domestic off --all',
    )
    .action(async (phase: string, opts: GlobalOpts & { login?: string[]; all?: boolean }) => {
      const p = phaseArg(phase);
      if (Boolean(opts.all) === Boolean(opts.login?.length))
        throw new UsageError('give --login LOGIN (one or more) or --all');
      await withService(opts, async (svc, out) => {
        const r = await svc.setDomesticPhase(opts.all ? { all: true } : { logins: opts.login ?? [] }, p);
        out.result(
          r,
          `domestic restriction ${r.phase} for ${r.logins === 'all' ? 'every account' : r.logins.join(', ')}`,
        );
      });
    });

  const audit = program
    .command('audit')
    .description('the audit trail: every operator action, from the CLI and the admin API')
    .addHelpText('after', '\nExamples:\n  mailgate audit tail -n 50\n  mailgate audit tail --follow');
  withCommonOptions(audit.command('tail'))
    .description('print the latest operator actions, oldest first: time, actor, action, details')
    .option('-n, --lines <n>', 'how many entries', '20')
    .option('-f, --follow', 'then keep printing new entries until Ctrl-C')
    .addHelpText('after', '\nExamples:\n  mailgate audit tail -n 100 --json\n  mailgate audit tail --follow')
    .action(async (opts: GlobalOpts & { lines: string; follow?: boolean }) => {
      if (!/^\d{1,9}$/.test(opts.lines)) throw new UsageError(`-n must be a number, not "${opts.lines}"`);
      const config = loadConfig(opts.config);
      const redis = createRedis(config.redis);
      await connectRedis(redis, config.redis.url);
      const log = createLogger(config.log.level === 'silent' ? 'silent' : 'info', process.stderr);
      const trail = new RedisAuditLog(redis, config.redis.keyPrefix, log);
      const print = (e: AuditEntry) =>
        process.stdout.write(opts.json ? `${JSON.stringify(e)}\n` : `${formatAuditLine(e)}\n`);
      const stop = new AbortController();
      const onSignal = () => {
        stop.abort();
        redis.disconnect(); // ends the XREAD that is blocking now
      };
      try {
        const entries = await trail.tail(Number(opts.lines));
        for (const e of entries) print(e);
        if (!opts.follow) return;
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        // Each XREAD blocks for less than the command timeout, which would otherwise cut it off.
        const blockMs = Math.max(1, Math.min(5_000, Math.floor(config.redis.commandTimeoutMs / 2)));
        for await (const e of trail.follow(entries.at(-1)?.id ?? '$', { signal: stop.signal, blockMs })) {
          print(e);
        }
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        redis.disconnect();
      }
    });

  return program;
}

export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are not errors; commander has already printed its message.
      return err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.help' ||
        err.code === 'commander.version'
        ? 0
        : 2;
    }
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`mailgate: ${message}\n`);
    if (err instanceof UsageError || err instanceof ConfigError) return 2;
    if (err instanceof RefusedError || err instanceof MailgateError) return 1;
    process.stderr.write(`${(err as Error).stack ?? ''}\n`);
    return 1;
  }
}

export function readVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}
