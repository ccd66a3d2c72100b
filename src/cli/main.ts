import { readFileSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { Command, CommanderError, Option } from 'commander';
import {
  IMPORT_COLUMNS,
  type ImportFormat,
  type ImportProgress,
  type ImportSummary,
} from '../accounts/import.js';
import { connectRedis, createRedis } from '../accounts/redis.js';
import { type AuditEntry, formatAuditLine, RedisAuditLog } from '../admin/audit.js';
import { type OperatorService, operatorServiceOn, type RolloutStatus } from '../admin/service.js';
import type { Phase } from '../auth/policy.js';
import { loadConfig, redactConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { addLoadtestCommand } from '../loadtest/cli.js';
import { createLogger } from '../observability/logger.js';
import { resolveWorkers, serve } from '../supervisor.js';
import { ConfigError, MailgateError, RefusedError, UsageError } from '../util/errors.js';
import { addNotifyCommands } from './notify.js';

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
  const audit = new RedisAuditLog(redis, config.redis.keyPrefix, log);
  const svc = operatorServiceOn(redis, config, {
    log,
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

/** Rejected lines printed in text mode; --json lists them all. */
const MAX_REJECTED_SHOWN = 20;

/** The import source: a file opened before anything else (a missing one is a usage error), or stdin. */
async function openImport(file: string): Promise<{ stream: AsyncIterable<Buffer>; name: string | null }> {
  if (file === '-') {
    if (process.stdin.isTTY)
      throw new UsageError('account import -: pipe the accounts in; standard input is a terminal');
    return { stream: process.stdin, name: null };
  }
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    throw new UsageError(
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  if ((await handle.stat()).isDirectory()) {
    await handle.close();
    throw new UsageError(`cannot read ${file}: it is a directory`);
  }
  return { stream: handle.createReadStream({ highWaterMark: 256 * 1024 }), name: file };
}

function rate(accounts: number, ms: number): number {
  return ms > 0 ? Math.round((accounts * 1000) / ms) : accounts;
}

function formatImport(file: string, s: ImportSummary): string {
  const out = s.rejectedLines
    .slice(0, MAX_REJECTED_SHOWN)
    .map((r) => `line ${r.line}: ${r.reason}: ${r.message}${r.login ? ` (${r.login})` : ''}`);
  const more = s.rejected - Math.min(s.rejected, MAX_REJECTED_SHOWN);
  if (more > 0) out.push(`... and ${more} more rejected line(s); --json lists them`);
  const fields = Object.entries(s.changedFields)
    .map(([f, n]) => `${f} ${n}`)
    .join(', ');
  const accounts = s.created + s.updated + s.unchanged + s.rejected;
  out.push(
    `${file}: created ${s.created}, updated ${s.updated}${fields ? ` (${fields})` : ''}, unchanged ${s.unchanged}, ` +
      `rejected ${s.rejected}; ${s.lines} lines (${s.format}) in ${(s.ms / 1000).toFixed(2)} s, ${rate(accounts, s.ms)} accounts/s`,
  );
  return out.join('\n');
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
    .description('run the gateway with every configured listener, one worker process per core')
    .option(
      '--workers <n>',
      'worker processes, or "auto" for one per core; 1: a single process (default: config workers)',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate serve --config /etc/mailgate/mailgate.yaml\n  mailgate serve --config /etc/mailgate/mailgate.yaml --workers 1\n\nA supervisor restarts a worker that dies. SIGHUP reloads the TLS certificate and GeoIP\ndatabase in every worker; SIGTERM/SIGINT stop them all.',
    )
    .action(async (opts: GlobalOpts & { workers?: string }) => {
      const config = loadConfig(opts.config);
      await serve(config, opts.workers === undefined ? {} : { workers: workersArg(opts.workers) });
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
    .description('accounts: add, import, show, set-primary, remove')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate account show alice@example.jp\n  mailgate account import accounts.csv\n  mailgate account add --help',
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
    .option('--lang <ja|en>', 'language of SMS notices (default: notify.defaults.lang)')
    .option('--tz <zone>', 'IANA time zone for SMS quiet hours and dates, e.g. Europe/London')
    .addHelpText(
      'after',
      '\nExample:\n  echo -n "$PW" | mailgate account add alice@example.jp --primary-password-stdin --msisdn +819012345678 --alias alice --lang en',
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
          lang?: string;
          tz?: string;
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
            ...(opts.lang !== undefined ? { lang: opts.lang } : {}),
            ...(opts.tz !== undefined ? { tz: opts.tz } : {}),
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
          `domestic rule:  ${v.domestic ? `${v.domestic.phase} from ${v.domestic.from}` : '- (waves only)'}`,
          `exempt until:   ${v.exemptUntil ?? '-'}`,
          `upstream:       ${v.upstream ?? '(configured servers)'} as ${v.upstreamUser ?? v.login}`,
        ].join('\n');
        out.result(v, text);
      });
    });
  withCommonOptions(account.command('import <file>'))
    .description('create or update accounts from JSON lines or CSV ("-" reads standard input); idempotent')
    .addOption(
      new Option('--format <format>', 'file format (default: by extension, else by the first line)').choices([
        'jsonl',
        'csv',
      ]),
    )
    .option('--no-progress', 'no progress lines on standard error')
    .addHelpText(
      'after',
      `
Examples:
  mailgate account import accounts.csv
  mailgate account import accounts.jsonl --json > report.json
  export-accounts | mailgate account import - --format jsonl

CSV has a header row; JSON lines are objects. The fields:
  ${IMPORT_COLUMNS.join(', ')}
aliases are ";"-separated in CSV, an array in JSON; primaryHash is an argon2 PHC string
or a bcrypt hash; msisdn is E.164 (+819012345678). A field the file does not give is left
as it is; an empty one clears it (never the primary hash). Fields not listed are never
touched. Lines apply in order; a rejected line writes nothing, the others still import.
Exit 0: every line imported; 1: some lines rejected (listed); 2: unusable file or arguments.`,
    )
    .action(async (file: string, opts: GlobalOpts & { format?: ImportFormat; progress: boolean }) => {
      const input = await openImport(file);
      await withService(opts, async (svc, out) => {
        const s = await svc.importAccounts(input.stream, {
          name: input.name,
          ...(opts.format !== undefined ? { format: opts.format } : {}),
          ...(opts.progress
            ? {
                onProgress: (p: ImportProgress) =>
                  process.stderr.write(
                    `mailgate: import: ${p.lines} lines, ${p.accounts} accounts, ${rate(p.accounts, p.ms)} accounts/s\n`,
                  ),
              }
            : {}),
        });
        const accounts = s.created + s.updated + s.unchanged + s.rejected;
        out.result({ file, ...s, accountsPerSecond: rate(accounts, s.ms) }, formatImport(file, s));
        if (s.rejected > 0)
          throw new RefusedError(`${s.rejected} line(s) rejected; every other line was imported`);
      });
    });
  withCommonOptions(account.command('remove <login>'))
    .description('delete an account and free its aliases; its sessions end')
    .addHelpText('after', '\nExample:\n  mailgate account remove alice@example.jp')
    .action(async (login: string, opts: GlobalOpts) => {
      await withService(opts, async (svc, out) => {
        const r = await svc.removeAccount(login);
        out.result(
          r,
          `removed ${r.login}${r.aliases.length ? ` (aliases freed: ${r.aliases.join(', ')})` : ''}`,
        );
      });
    });
  withCommonOptions(account.command('set-primary <login>'))
    .description('replace the primary (account-site) password; the old one stops working at once')
    .option('--primary-password-stdin', 'read the new primary password from standard input')
    .option('--primary-hash <hash>', 'the new primary password as an argon2 PHC string or a bcrypt hash')
    .addHelpText(
      'after',
      '\nExamples:\n  echo -n "$PW" | mailgate account set-primary alice@example.jp --primary-password-stdin\n  mailgate account set-primary alice@example.jp --primary-hash \'$2b$12$...\'',
    )
    .action(
      async (login: string, opts: GlobalOpts & { primaryPasswordStdin?: boolean; primaryHash?: string }) => {
        if (Boolean(opts.primaryPasswordStdin) === (opts.primaryHash !== undefined))
          throw new UsageError('give --primary-password-stdin or --primary-hash HASH');
        const input =
          opts.primaryHash !== undefined ? { hash: opts.primaryHash } : { password: await readStdinLine() };
        await withService(opts, async (svc, out) => {
          const r = await svc.setPrimary(login, input);
          out.result(
            r,
            r.changed
              ? `primary password of ${r.login} replaced (primaryVersion ${r.primaryVersion})`
              : `${r.login} already has this primary hash; nothing changed`,
          );
        });
      },
    );

  const imapPassword = program
    .command('imap-password')
    .description('IMAP-only passwords: issue, revoke')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate imap-password issue alice@example.jp\n  mailgate imap-password revoke alice@example.jp',
    );
  withCommonOptions(imapPassword.command('issue <login>'))
    .description('issue a new IMAP-only password and print it once (it cannot be shown again)')
    .option(
      '--if-absent',
      'issue only if the account has none (phone configuration profiles: installing one again changes nothing)',
    )
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
    .description(
      'rules in force and scheduled, accounts per phase and cohort, refusals in the last hour and day',
    )
    .addHelpText('after', '\nExample:\n  mailgate rollout status --json')
    .action(async (opts: GlobalOpts) => {
      await withService(opts, async (svc, out) => {
        const s = await svc.rolloutStatus();
        out.result(s, formatStatus(s));
      });
    });
  withCommonOptions(rollout.command('overseas <phase>'))
    .description(
      'set the overseas restriction (logins from abroad without an IMAP-only password): off | warn | enforce',
    )
    .option('--at <time>', 'start at this time (ISO 8601, e.g. 2026-12-01T00:00+09:00) instead of now')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate rollout overseas warn\n  mailgate rollout overseas enforce --at 2026-12-01T00:00+09:00',
    )
    .action(async (phase: string, opts: GlobalOpts & { at?: string }) => {
      const p = phaseArg(phase);
      const at = opts.at === undefined ? undefined : timeArg(opts.at, '--at');
      await withService(opts, async (svc, out) => {
        const r = await svc.setOverseasPhase(p, at);
        out.result(
          r,
          `overseas restriction ${p} from ${new Date(r.rule.at).toISOString()}; in force now: ${r.phaseNow}`,
        );
      });
    });
  withCommonOptions(rollout.command('domestic <phase>'))
    .description('set the domestic restriction customer by customer: off | warn | enforce')
    .addOption(
      new Option('--login <login>', 'an account to change (repeatable)').argParser(
        (v: string, acc: string[] = []) => [...acc, v],
      ),
    )
    .option('--users <file>', 'a file of logins, one per line (# comments allowed)')
    .option('--percent <n>', 'a stable share of all accounts (growing it keeps those already in)')
    .option('--all', 'every account')
    .option('--at <time>', 'start at this time (ISO 8601) instead of now')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate rollout domestic warn --all\n  mailgate rollout domestic enforce --percent 10\n  mailgate rollout domestic enforce --percent 25 --at 2026-12-01T00:00+09:00\n  mailgate rollout domestic enforce --users wave3.txt\n  mailgate rollout domestic off --percent 25        # undo that wave\n\nThe most recent command wins for each account.',
    )
    .action(
      async (
        phase: string,
        opts: GlobalOpts & { login?: string[]; users?: string; percent?: string; all?: boolean; at?: string },
      ) => {
        const p = phaseArg(phase);
        const given = [opts.login?.length, opts.users, opts.percent, opts.all].filter(Boolean).length;
        if (given !== 1)
          throw new UsageError('give exactly one of --login LOGIN..., --users FILE, --percent N, --all');
        const at = opts.at === undefined ? undefined : timeArg(opts.at, '--at');
        let target: { logins: string[] } | { percent: number } | { all: true };
        if (opts.all) target = { all: true };
        else if (opts.percent !== undefined) {
          const n = Number(opts.percent);
          if (!/^\d+(\.\d{1,2})?$/.test(opts.percent) || n <= 0 || n > 100) {
            throw new UsageError(`--percent must be a number above 0 and at most 100, not "${opts.percent}"`);
          }
          target = { percent: n };
        } else if (opts.users !== undefined) target = { logins: readUsersFile(opts.users) };
        else target = { logins: opts.login ?? [] };
        await withService(opts, async (svc, out) => {
          const r = await svc.setDomesticPhase(target, p, at);
          const who =
            r.percent !== undefined
              ? r.percent >= 100
                ? 'every account'
                : `${r.percent}% of accounts`
              : `${r.logins?.length ?? 0} account(s)`;
          const n = r.notices;
          const sms = n
            ? `\nSMS notices (domestic restriction): ${n.queued} queued, ${n.deferred} deferred to quiet hours, ${n.noMsisdn} without msisdn, ${n.suppressed} already sent or capped`
            : '';
          out.result(r, `domestic restriction ${r.phase} for ${who} from ${r.at}${sms}`);
        });
      },
    );
  withCommonOptions(rollout.command('exempt <login>'))
    .description(
      'lift both restrictions for one account until a time (a subscriber abroad without a password)',
    )
    .requiredOption('--until <time>', 'ISO 8601 time, or "now" to end the exemption')
    .addHelpText(
      'after',
      '\nExamples:\n  mailgate rollout exempt alice@example.jp --until 2026-12-20T00:00+09:00\n  mailgate rollout exempt alice@example.jp --until now',
    )
    .action(async (login: string, opts: GlobalOpts & { until: string }) => {
      const until = opts.until === 'now' ? 0 : timeArg(opts.until, '--until');
      await withService(opts, async (svc, out) => {
        const r = await svc.exempt(login, until);
        out.result(r, r.until ? `${r.login} exempt until ${r.until}` : `${r.login} no longer exempt`);
      });
    });

  withCommonOptions(program.command('unlock <login>'))
    .description('clear the lockout and failure counts of an account (after repeated failed logins)')
    .addHelpText('after', '\nExample:\n  mailgate unlock alice@example.jp')
    .action(async (login: string, opts: GlobalOpts) => {
      await withService(opts, async (svc, out) => {
        const r = await svc.unlock(login);
        out.result(r, `unlocked ${r.login}`);
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

  addNotifyCommands(program, withCommonOptions);
  addLoadtestCommand(program);
  return program;
}

function workersArg(value: string): number {
  if (value === 'auto') return resolveWorkers('auto');
  const n = Number(value);
  if (!/^\d{1,3}$/.test(value) || n < 1 || n > 256) {
    throw new UsageError(`--workers must be "auto" or a number from 1 to 256, not "${value}"`);
  }
  return n;
}

function timeArg(value: string, option: string): number {
  const t = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(t)) {
    throw new UsageError(`${option} must be an ISO 8601 time like 2026-12-01T00:00+09:00, not "${value}"`);
  }
  return t;
}

function readUsersFile(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const logins: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const l = line.replace(/#.*/, '').trim();
    if (!l) return;
    if (/\s/.test(l)) throw new UsageError(`${file} line ${i + 1}: one login per line`);
    logins.push(l);
  });
  if (logins.length === 0) throw new UsageError(`${file}: no logins`);
  return logins;
}

function formatStatus(s: RolloutStatus): string {
  const lines = [
    `overseas restriction:  ${s.overseas.phase}${s.overseas.scheduled.map((r) => `, ${r.phase} from ${r.at}`).join('')}`,
    `accounts:              ${s.accounts} (${s.accountsWithoutImapPassword} without an IMAP-only password)`,
    'domestic waves:',
    ...(s.domesticWaves.length
      ? s.domesticWaves.map(
          (w) =>
            `  ${w.phase.padEnd(8)} ${String(w.percent).padStart(6)}%  from ${w.at}${w.active ? '' : ' (scheduled)'}`,
        )
      : ['  none']),
    'domestic phase by cohort (accounts / without IMAP-only password):',
    ...(s.domesticCohorts.length
      ? s.domesticCohorts.map(
          (c) => `  ${c.phase.padEnd(8)} ${c.cohort.padEnd(14)} ${c.accounts} / ${c.withoutImapPassword}`,
        )
      : ['  none']),
    'refusals (last hour / last day):',
  ];
  const keys = [...new Set([...Object.keys(s.refusals.lastHour), ...Object.keys(s.refusals.lastDay)])].sort();
  for (const k of keys)
    lines.push(
      `  ${k.replaceAll('|', ' ').padEnd(40)} ${s.refusals.lastHour[k] ?? 0} / ${s.refusals.lastDay[k] ?? 0}`,
    );
  if (!keys.length) lines.push('  none');
  return lines.join('\n');
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
