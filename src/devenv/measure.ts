import { readdirSync, readFileSync } from 'node:fs';
import type { LoadtestAccount } from '../loadtest/accounts.js';
import { type LoadtestOptions, runLoadtest } from '../loadtest/run.js';

/**
 * What the benchmark scripts read from the outside of a server: CPU time and memory of a
 * process tree from /proc (so a proxy's workers and helpers count, whatever language they are
 * written in), and the gateway's credential-cache counters from its /metrics.
 */

const TICK_MS = 1000 / 100; // CLK_TCK is 100 on Linux

interface ProcEntry {
  ppid: number;
  /** utime + stime. */
  cpuMs: number;
  /** cutime + cstime: the children it has waited for (exited workers, helpers). */
  childrenCpuMs: number;
}

function processTable(): Map<number, ProcEntry> {
  const table = new Map<number, ProcEntry>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // "pid (comm) S ppid ... utime stime": comm may hold spaces, so split after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      table.set(Number(name), {
        ppid: Number(fields[1]),
        cpuMs: (Number(fields[11]) + Number(fields[12])) * TICK_MS,
        childrenCpuMs: (Number(fields[13]) + Number(fields[14])) * TICK_MS,
      });
    } catch {
      // gone meanwhile
    }
  }
  return table;
}

/** The given PIDs and all their descendants. */
export function processTree(roots: readonly number[], table = processTable()): number[] {
  const found: number[] = [];
  const stack = [...roots];
  while (stack.length) {
    const pid = stack.pop()!;
    if (!table.has(pid) || found.includes(pid)) continue;
    found.push(pid);
    for (const [child, entry] of table) if (entry.ppid === pid) stack.push(child);
  }
  return found;
}

/**
 * CPU time of one process, in ms: the sum over its threads of /proc/PID/task/TID/schedstat
 * (nanoseconds on the CPU), which short runs need; utime + stime in 10 ms ticks otherwise.
 */
function processCpuMs(pid: number, entry: ProcEntry | undefined): number {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    }
    return ns / 1e6;
  } catch {
    return entry?.cpuMs ?? 0;
  }
}

/**
 * CPU time of the given processes and all their descendants, in ms: each live one's own time,
 * plus what the children it reaped used (a Dovecot imap process that ends with its last
 * session, in 10 ms ticks). Threads that exit take their time with them.
 */
export function treeCpuMs(roots: readonly number[]): number {
  const table = processTable();
  return processTree(roots, table).reduce((sum, pid) => {
    const entry = table.get(pid);
    return sum + processCpuMs(pid, entry) + (entry?.childrenCpuMs ?? 0);
  }, 0);
}

/**
 * Proportional set size of the given processes and their descendants, in KiB: shared pages
 * (a master's and its workers' code, copy-on-write heap) are split among their sharers, so
 * a multi-process server is not counted several times over.
 */
export function treePssKiB(roots: readonly number[]): number {
  let total = 0;
  for (const pid of processTree(roots)) {
    try {
      const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
      total += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return total;
}

export const median = (xs: readonly number[]): number =>
  xs.length === 0 ? Number.NaN : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * The gateway's credential cache counters, from /metrics (summed over its workers). The admin
 * API starts with the first worker: a gateway just started is given up to 10 s to answer.
 */
export async function cacheLookups(adminPort: number): Promise<{ hit: number; miss: number }> {
  let text = '';
  for (let attempt = 1; ; attempt++) {
    try {
      text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      break;
    } catch (err) {
      if (attempt >= 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const value = (result: string) =>
    Number(
      new RegExp(`^mailgate_credential_cache_lookups_total\\{result="${result}"\\} (\\S+)$`, 'm').exec(
        text,
      )?.[1] ?? 0,
    );
  return { hit: value('hit'), miss: value('miss') };
}

/** Options of a bounded, plain-front login run of `runLoadtest` (overridable). */
export function loginRun(
  port: number,
  accounts: LoadtestAccount[],
  o: Partial<LoadtestOptions> = {},
): LoadtestOptions {
  return {
    scenario: 'login',
    target: { host: '127.0.0.1', port, tls: 'none', insecure: true },
    accounts,
    concurrency: 1,
    ratePerSec: null,
    durationMs: null,
    count: accounts.length,
    rampUpMs: 0,
    timeoutMs: 30_000,
    proxy: null,
    messageBytes: 0,
    seed: 1,
    allowRemote: false,
    ...o,
  };
}

/** Polls with single logins until one through `port` succeeds (a server just started). */
export async function waitForLogin(port: number, account: LoadtestAccount): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const r = await runLoadtest(loginRun(port, [account], { timeoutMs: 5_000 })).catch(() => null);
    if (r?.totals.ok === 1) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no login through port ${port}`);
}

/**
 * Logs every account in through the gateway until its credential cache is warm: every worker
 * has verified every credential once (each worker has its own cache, and connections go to
 * workers round-robin), measured as a pass over all accounts that misses no more than 1%.
 */
export async function warmCredentialCache(
  port: number,
  adminPort: number,
  accounts: LoadtestAccount[],
): Promise<void> {
  for (let pass = 0; pass < 10; pass++) {
    const before = await cacheLookups(adminPort);
    await runLoadtest(loginRun(port, accounts, { concurrency: 4 }));
    const after = await cacheLookups(adminPort);
    if (after.miss - before.miss <= accounts.length / 100) return;
  }
}
