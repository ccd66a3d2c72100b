import { writeFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { loadConfig } from '../config/load.js';
import { RefusedError, UsageError } from '../util/errors.js';
import { readAccounts } from './accounts.js';
import type { TlsMode } from './connect.js';
import { renderHtml } from './html.js';
import { progressReporter } from './progress.js';
import { renderSummary, type Scenario } from './report.js';
import { checkTarget, type LoadtestOptions, runLoadtest } from './run.js';
import { SourceMix } from './source-mix.js';

/** `bin/mailgate loadtest`: argv in, runLoadtest(), the summary and reports out. */

const DEFAULT_CONFIG = process.env.MAILGATE_CONFIG ?? '/etc/mailgate/mailgate.yaml';
const DEFAULT_DURATION_MS = 60_000;

/** "60s", "5m", "1h", "500ms" or a bare number of seconds. */
export function parseDuration(value: string, option: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m) throw new UsageError(`${option} must be a duration like 30s, 5m, 1h or 500ms, not "${value}"`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(n * unit);
}

/** "2048", "2k", "2KiB", "1M". */
export function parseSize(value: string, option: string): number {
  const m = /^(\d+)\s*(k|kb|kib|m|mb|mib)?$/i.exec(value.trim());
  if (!m) throw new UsageError(`${option} must be a size like 2048, 20k or 1M, not "${value}"`);
  const mult = (m[2] ?? '').toLowerCase().startsWith('k')
    ? 1024
    : (m[2] ?? '').toLowerCase().startsWith('m')
      ? 1024 * 1024
      : 1;
  return Number(m[1]) * mult;
}

function intArg(value: string, option: string): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`${option} must be a whole number, not "${value}"`);
  return Number(value);
}

/** HOST:PORT, IPv6 as [addr]:port. */
export function parseTarget(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(value.trim());
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535) throw new UsageError(`--target must be HOST:PORT, not "${value}"`);
  return { host: (m[1] ?? m[2])!, port };
}

/** The usual TLS mode of a well-known port; on any other port the operator must say. */
function defaultTls(port: number): TlsMode {
  if (port === 993 || port === 465) return 'implicit';
  if (port === 143 || port === 587) return 'starttls';
  throw new UsageError(
    `give --tls implicit, starttls or none: port ${port} is not one whose TLS mode is known`,
  );
}

/** Without --target: the first listener of the config for the scenario's protocol. */
function targetFromConfig(file: string, scenario: Scenario): { host: string; port: number; tls: TlsMode } {
  const config = loadConfig(file);
  const listeners = scenario === 'smtp' ? config.smtp?.listen : config.imap?.listen;
  const l = listeners?.[0];
  if (!l)
    throw new UsageError(
      `give --target HOST:PORT (${file} has no ${scenario === 'smtp' ? 'smtp' : 'imap'} listener)`,
    );
  const host = l.host === '0.0.0.0' || l.host === '::' ? '127.0.0.1' : l.host;
  return { host, port: l.port, tls: l.tls };
}

interface LoadtestArgs {
  target?: string;
  accounts: string;
  scenario: Scenario;
  concurrency: string;
  rate?: string;
  duration?: string;
  count?: string;
  rampUp: string;
  tls?: TlsMode;
  insecure?: boolean;
  servername?: string;
  proxy?: 'v1' | 'v2';
  sourceMix?: string;
  localAddress?: string;
  timeout: string;
  messageSize: string;
  seed?: string;
  json?: string | boolean;
  html?: string;
  maxErrorRate?: string;
  allowRemote?: boolean;
  progress: boolean;
  config: string;
}

export function addLoadtestCommand(program: Command): void {
  program
    .command('loadtest')
    .description(
      'drive scripted IMAP or SMTP sessions against a gateway: live progress, summary, JSON and HTML reports',
    )
    .option('--target <host:port>', 'where to connect (default: the first listener in --config)')
    .requiredOption(
      '--accounts <file>',
      'accounts: login,password per line (CSV) or JSON lines {"login","password"}',
    )
    .addOption(
      new Option('--scenario <name>', 'login | fetch | idle | smtp')
        .choices(['login', 'fetch', 'idle', 'smtp'])
        .default('login'),
    )
    .option('--concurrency <n>', 'sessions at once (with --rate: at most this many at once)', '10')
    .option('--rate <n>', 'start this many iterations per second (open loop) instead of back to back')
    .option('--duration <time>', 'stop after this long, e.g. 60s, 5m (default 60s unless --count)')
    .option('--count <n>', 'stop after this many iterations')
    .option('--ramp-up <time>', 'reach full concurrency or rate over this long', '0s')
    .addOption(
      new Option(
        '--tls <mode>',
        'implicit | starttls | none (default: 993/465 implicit, 143/587 starttls; required on other ports)',
      ).choices(['implicit', 'starttls', 'none']),
    )
    .option('--insecure', 'accept any TLS certificate (self-signed test gateways)')
    .option('--servername <name>', 'TLS server name (SNI) and certificate name')
    .addOption(
      new Option('--proxy <version>', 'send a PROXY protocol header on each connection').choices([
        'v1',
        'v2',
      ]),
    )
    .option(
      '--source-mix <mix>',
      'client addresses for PROXY headers, weighted: regions (JP, US) or CIDRs, e.g. "JP:95,US:5" or "49.96.0.0/16:95,8.8.8.0/24:5" (implies --proxy v2)',
    )
    .option(
      '--local-address <addr>',
      'connect from this local address (one the gateway trusts for PROXY headers)',
    )
    .option('--timeout <time>', 'each step (connect, login, command) must finish within this', '30s')
    .option('--message-size <size>', 'smtp: bytes per message', '2k')
    .option('--seed <n>', 'seed of the source-address draws, for a reproducible run')
    .option('--json [file]', 'write the JSON report to FILE; without FILE, print it instead of the summary')
    .option('--html <file>', 'write a self-contained HTML report with charts')
    .option(
      '--max-error-rate <percent>',
      'exit 1 when more than this share of iterations failed (default: only when none succeeded)',
    )
    .option('--allow-remote', 'allow a target that is not loopback (a server you are responsible for)')
    .option('--no-progress', 'no progress on standard error')
    .option(
      '-c, --config <file>',
      'configuration file, for the default target (env MAILGATE_CONFIG)',
      DEFAULT_CONFIG,
    )
    .addHelpText(
      'after',
      `
Examples:
  mailgate loadtest --target 127.0.0.1:993 --insecure --accounts accounts.csv --concurrency 16 --duration 60s
  mailgate loadtest --target 127.0.0.1:143 --tls none --accounts accounts.csv --rate 200 --ramp-up 10s --duration 2m \\
      --proxy v2 --source-mix "JP:95,US:5" --local-address 127.0.0.2 --json report.json --html report.html
  mailgate loadtest --scenario fetch --target 127.0.0.1:993 --insecure --accounts accounts.csv --count 5000
  mailgate loadtest --scenario idle --target 127.0.0.1:993 --insecure --accounts accounts.csv --concurrency 1000 --ramp-up 30s --duration 5m
  mailgate loadtest --scenario smtp --target 127.0.0.1:465 --insecure --accounts accounts.csv --duration 30s

Scenarios: login (connect, LOGIN, SELECT, LOGOUT per iteration), fetch (log in once, then
FETCH whole messages from INBOX), idle (hold --concurrency sessions in IDLE), smtp (connect,
AUTH, one message to the account itself, QUIT). Source-mix regions: JP (Japanese carrier
ranges 49.96.0.0/16, 1.66.0.0/16, 110.163.0.0/16), US (8.8.0.0/16). Only loopback targets
unless --allow-remote. Exit 0: the run finished; 1: no iteration succeeded, or more failed
than --max-error-rate; 2: bad arguments, an unusable accounts file, or a refused target.`,
    )
    .action(async (a: LoadtestArgs) => {
      const scenario = a.scenario;
      let target: { host: string; port: number; tls: TlsMode };
      if (a.target !== undefined) {
        const t = parseTarget(a.target);
        target = { ...t, tls: a.tls ?? defaultTls(t.port) };
      } else {
        target = targetFromConfig(a.config, scenario);
        if (a.tls) target.tls = a.tls;
      }
      await checkTarget(target.host, Boolean(a.allowRemote));
      const mix = a.sourceMix !== undefined ? SourceMix.parse(a.sourceMix) : null;
      if (a.proxy && !mix)
        throw new UsageError('--proxy needs --source-mix: the client addresses to put in the headers');
      let durationMs = a.duration !== undefined ? parseDuration(a.duration, '--duration') : null;
      const count = a.count !== undefined ? intArg(a.count, '--count') : null;
      if (durationMs === null && count === null) durationMs = DEFAULT_DURATION_MS;
      const maxErrorRate = a.maxErrorRate !== undefined ? Number(a.maxErrorRate) : null;
      if (maxErrorRate !== null && !(maxErrorRate >= 0 && maxErrorRate <= 100))
        throw new UsageError('--max-error-rate must be a percentage from 0 to 100');

      const options: LoadtestOptions = {
        scenario,
        target: {
          ...target,
          insecure: Boolean(a.insecure),
          ...(a.servername ? { servername: a.servername } : {}),
          ...(a.localAddress ? { localAddress: a.localAddress } : {}),
        },
        accounts: readAccounts(a.accounts),
        concurrency: intArg(a.concurrency, '--concurrency'),
        ratePerSec: a.rate !== undefined ? Number(a.rate) : null,
        durationMs,
        count,
        rampUpMs: parseDuration(a.rampUp, '--ramp-up'),
        timeoutMs: parseDuration(a.timeout, '--timeout'),
        proxy: mix ? { version: a.proxy === 'v1' ? 1 : 2, mix } : null,
        messageBytes: parseSize(a.messageSize, '--message-size'),
        seed: a.seed !== undefined ? intArg(a.seed, '--seed') : Date.now() % 2 ** 31,
        allowRemote: Boolean(a.allowRemote),
      };
      if (options.ratePerSec !== null && Number.isNaN(options.ratePerSec))
        throw new UsageError(`--rate must be a number, not "${a.rate}"`);

      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const progress = a.progress ? progressReporter(process.stderr, { durationMs, count }) : null;
      let report: Awaited<ReturnType<typeof runLoadtest>>;
      try {
        report = await runLoadtest(options, {
          signal: stop.signal,
          ...(progress ? { onProgress: progress.onProgress, progressIntervalMs: progress.intervalMs } : {}),
        });
      } finally {
        progress?.done();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }

      const written: string[] = [];
      if (typeof a.json === 'string') {
        writeFileSync(a.json, `${JSON.stringify(report, null, 2)}\n`);
        written.push(`JSON report: ${a.json}`);
      }
      if (a.html !== undefined) {
        writeFileSync(a.html, renderHtml(report));
        written.push(`HTML report: ${a.html}`);
      }
      if (a.json === true) process.stdout.write(`${JSON.stringify(report)}\n`);
      else
        process.stdout.write(
          `${renderSummary(report)}\n${written.length ? `\n${written.join('\n')}\n` : ''}`,
        );

      const t = report.totals;
      if (t.iterations > 0 && t.ok === 0)
        throw new RefusedError('no iteration succeeded', 'MG_LOADTEST_FAILED');
      if (maxErrorRate !== null && t.iterations > 0 && (t.errors * 100) / t.iterations > maxErrorRate) {
        throw new RefusedError(
          `${((t.errors * 100) / t.iterations).toFixed(1)}% of iterations failed (--max-error-rate ${maxErrorRate})`,
          'MG_LOADTEST_FAILED',
        );
      }
    });
}
