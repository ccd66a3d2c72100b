import type { TlsMode } from '../loadtest/connect.js';
import { median } from './measure.js';

/**
 * scripts/bench's figures and their markdown: medians over rounds, each figure beside its
 * ratio to nginx's mail proxy and to direct Dovecot, and the performance targets marked met or
 * missed. Pure (no I/O), so the tables are unit-tested.
 */

export type PeerGroup = 'direct' | 'mailgate' | 'nginx' | 'dovecot';
/** argon2: every login verifies the argon2id hash. cheap: a plaintext check, or mailgate's warm cache. */
export type AuthMode = 'argon2' | 'cheap';

export interface BenchPeer {
  id: string;
  group: PeerGroup;
  auth: AuthMode;
  label: string;
  ports: Record<TlsMode, number>;
  /** PIDs whose process trees are the target's cost (its workers, helpers, auth responder). */
  roots(): number[];
  accounts: Array<{ login: string; password: string }>;
}

export interface LoginCell {
  peer: string;
  front: TlsMode;
  concurrency: number;
  round?: number;
  logins: number;
  loginsPerSec: number;
  p50: number;
  p99: number;
  cpuMsPerLogin: number;
  errors: number;
  errorKinds?: Record<string, number | undefined>;
}

export interface FetchCell {
  peer: string;
  front: TlsMode;
  round?: number;
  mbPerSec: number;
  cpuMsPerMb: number;
  errors: number;
  errorKinds?: Record<string, number | undefined>;
}

export interface IdleCell {
  peer: string;
  front: TlsMode;
  sessions: number;
  round?: number;
  established: number;
  kibPerSession: number;
  errors: number;
  errorKinds?: Record<string, number | undefined>;
}

export interface BenchFigures {
  settings: Record<string, unknown>;
  peers: Array<{ id: string; group: PeerGroup; auth: AuthMode; label: string }>;
  login: LoginCell[];
  fetch: FetchCell[];
  idle: IdleCell[];
  elapsedSeconds: number;
}

type PeerInfo = BenchFigures['peers'][number];

const FRONT_NAME: Record<TlsMode, string> = { none: 'plain', implicit: 'TLS (IMAPS)', starttls: 'STARTTLS' };

function fmt(n: number, digits = 2): string {
  if (!Number.isFinite(n)) return '–';
  if (Math.abs(n) >= 100) return n.toFixed(0);
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(digits);
}

function ratio(value: number, reference: number | undefined): string {
  if (reference === undefined || !Number.isFinite(value) || !Number.isFinite(reference) || reference === 0)
    return '–';
  return `${(value / reference).toFixed(2)}×`;
}

/** "value (÷nginx, ÷direct)". */
function withRatios(
  value: number,
  nginx: number | undefined,
  direct: number | undefined,
  digits = 2,
): string {
  return `${fmt(value, digits)} (${ratio(value, nginx)}, ${ratio(value, direct)})`;
}

/** Medians over rounds of the cells that share a key. */
function medians<T extends { peer: string }>(
  cells: readonly T[],
  key: (c: T) => string,
  fields: ReadonlyArray<keyof T>,
): Map<string, Record<string, number>> {
  const groups = new Map<string, T[]>();
  for (const c of cells) {
    const k = key(c);
    groups.set(k, [...(groups.get(k) ?? []), c]);
  }
  const out = new Map<string, Record<string, number>>();
  for (const [k, cs] of groups) {
    out.set(k, Object.fromEntries(fields.map((f) => [f as string, median(cs.map((c) => Number(c[f])))])));
  }
  return out;
}

/** The nginx peer a peer is compared with: the same auth mode, default proxy_buffer. */
function nginxFor(peers: readonly PeerInfo[], p: PeerInfo): PeerInfo | undefined {
  const auth = p.group === 'direct' ? 'cheap' : p.auth;
  return peers.find((q) => q.group === 'nginx' && q.auth === auth && !q.label.includes('proxy_buffer'));
}
const directPeer = (peers: readonly PeerInfo[]) => peers.find((q) => q.group === 'direct');

function authLabel(p: PeerInfo): string {
  if (p.group === 'direct') return 'Dovecot passdb (plain)';
  if (p.auth === 'argon2') return 'argon2id every login';
  return p.group === 'mailgate' ? 'argon2id once, then cache' : 'plaintext (cheap)';
}

export interface TargetCheck {
  target: string;
  mailgate: number;
  reference: number;
  limit: string;
  met: boolean;
}

/** The performance targets, evaluated on the plain front's medians. */
export function checkTargets(f: BenchFigures): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const login = medians(f.login, (c) => `${c.peer}|${c.front}|${c.concurrency}`, ['cpuMsPerLogin', 'p99']);
  const fetch = medians(f.fetch, (c) => `${c.peer}|${c.front}`, ['mbPerSec', 'cpuMsPerMb']);
  const idle = medians(f.idle, (c) => `${c.peer}|${c.front}|${c.sessions}`, ['kibPerSession']);
  const byGroup = (group: PeerGroup, auth: AuthMode) =>
    f.peers.find((p) => p.group === group && p.auth === auth && !p.label.includes('proxy_buffer'));
  const mg = byGroup('mailgate', 'cheap');
  const ngx = byGroup('nginx', 'cheap');
  const direct = directPeer(f.peers);
  if (!mg || !ngx) return checks;
  const concurrencies = [...new Set(f.login.map((c) => c.concurrency))].sort((a, b) => a - b);
  for (const c of concurrencies) {
    const m = login.get(`${mg.id}|none|${c}`);
    const n = login.get(`${ngx.id}|none|${c}`);
    if (m && n) {
      checks.push({
        target: `CPU-ms per login, warm credentials, c=${c}`,
        mailgate: m.cpuMsPerLogin!,
        reference: n.cpuMsPerLogin!,
        limit: '≤ nginx',
        met: m.cpuMsPerLogin! <= n.cpuMsPerLogin!,
      });
    }
  }
  const top = concurrencies.at(-1);
  const m64 = login.get(`${mg.id}|none|${top}`);
  const n64 = login.get(`${ngx.id}|none|${top}`);
  if (m64 && n64) {
    checks.push({
      target: `LOGIN p99 ms at c=${top}, warm credentials`,
      mailgate: m64.p99!,
      reference: n64.p99!,
      limit: '≤ nginx',
      met: m64.p99! <= n64.p99!,
    });
  }
  const mf = fetch.get(`${mg.id}|none`);
  const df = direct ? fetch.get(`${direct.id}|none`) : undefined;
  for (const n of f.peers.filter((p) => p.group === 'nginx' && p.auth === 'cheap')) {
    const nf = fetch.get(`${n.id}|none`);
    if (!mf || !nf) continue;
    const buffer = n.label.includes('proxy_buffer')
      ? n.label.slice(n.label.indexOf('proxy_buffer'))
      : 'proxy_buffer 4k';
    checks.push({
      target: `CPU-ms per MB fetched (nginx with ${buffer})`,
      mailgate: mf.cpuMsPerMb!,
      reference: nf.cpuMsPerMb!,
      limit: '≤ nginx',
      met: mf.cpuMsPerMb! <= nf.cpuMsPerMb!,
    });
  }
  if (mf && df) {
    checks.push({
      target: 'FETCH MB/s',
      mailgate: mf.mbPerSec!,
      reference: df.mbPerSec!,
      limit: '≥ 0.9 × direct',
      met: mf.mbPerSec! >= 0.9 * df.mbPerSec!,
    });
  }
  for (const sessions of [...new Set(f.idle.filter((c) => c.front === 'none').map((c) => c.sessions))]) {
    const mi = idle.get(`${mg.id}|none|${sessions}`);
    const ni = idle.get(`${ngx.id}|none|${sessions}`);
    if (mi && ni) {
      checks.push({
        target: `KiB per idle session, ${sessions} sessions`,
        mailgate: mi.kibPerSession!,
        reference: ni.kibPerSession!,
        limit: '≤ 1.5 × nginx',
        met: mi.kibPerSession! <= 1.5 * ni.kibPerSession!,
      });
    }
  }
  return checks;
}

export function renderBench(f: BenchFigures): string {
  const s = f.settings;
  const out: string[] = [];
  const peerById = new Map(f.peers.map((p) => [p.id, p]));
  const direct = directPeer(f.peers);
  out.push(
    `Loopback, ${s.cores} cores; one Dovecot backend (${s.accounts} accounts, ${s.mailboxes} mailboxes of ` +
      `${s.messages} × ~${s.messageKiB} KiB); argon2id m=19456 KiB t=2 p=1; medians of ${s.repeats} ` +
      `interleaved rounds; CPU of each target's whole process tree from /proc; ${f.elapsedSeconds} s in all.`,
    'Each figure is followed by (its ratio to nginx with the same auth, its ratio to direct Dovecot).',
    '',
  );

  if (f.login.length > 0) {
    const login = medians(f.login, (c) => `${c.peer}|${c.front}|${c.concurrency}`, [
      'loginsPerSec',
      'p50',
      'p99',
      'cpuMsPerLogin',
      'errors',
    ]);
    const peers = [...new Set(f.login.map((c) => c.peer))];
    const concurrencies = [...new Set(f.login.map((c) => c.concurrency))].sort((a, b) => a - b);
    for (const front of [...new Set(f.login.map((c) => c.front))]) {
      out.push(
        `### Logins, ${FRONT_NAME[front]} front (connect, LOGIN, SELECT, LOGOUT; ${s.runSeconds} s per run)`,
        '',
        '| target | auth | sessions | logins/s | LOGIN p50 ms | LOGIN p99 ms | CPU-ms per login | errors |',
        '| --- | --- | --- | --- | --- | --- | --- | --- |',
      );
      for (const id of peers) {
        const p = peerById.get(id)!;
        const ngx = nginxFor(f.peers, p);
        for (const c of concurrencies) {
          const m = login.get(`${id}|${front}|${c}`);
          if (!m) continue;
          const n = ngx ? login.get(`${ngx.id}|${front}|${c}`) : undefined;
          const d = direct ? login.get(`${direct.id}|${front}|${c}`) : undefined;
          out.push(
            `| ${p.label} | ${authLabel(p)} | ${c} | ${withRatios(m.loginsPerSec!, n?.loginsPerSec, d?.loginsPerSec, 0)} | ` +
              `${fmt(m.p50!)} | ${withRatios(m.p99!, n?.p99, d?.p99)} | ` +
              `${withRatios(m.cpuMsPerLogin!, n?.cpuMsPerLogin, d?.cpuMsPerLogin)} | ${fmt(m.errors!, 0)} |`,
          );
        }
      }
      out.push('');
    }
  }

  if (f.fetch.length > 0) {
    const fetch = medians(f.fetch, (c) => `${c.peer}|${c.front}`, ['mbPerSec', 'cpuMsPerMb', 'errors']);
    out.push(
      `### FETCH (${s.fetchSessions} sessions fetching whole ~${s.messageKiB} KiB messages; ${s.fetchSeconds} s per run)`,
      '',
      '| target | front | MB/s | CPU-ms per MB | errors |',
      '| --- | --- | --- | --- | --- |',
    );
    for (const front of [...new Set(f.fetch.map((c) => c.front))]) {
      for (const id of [...new Set(f.fetch.map((c) => c.peer))]) {
        const p = peerById.get(id)!;
        const m = fetch.get(`${id}|${front}`);
        if (!m) continue;
        const ngx = nginxFor(f.peers, p);
        const n = ngx ? fetch.get(`${ngx.id}|${front}`) : undefined;
        const d = direct ? fetch.get(`${direct.id}|${front}`) : undefined;
        out.push(
          `| ${p.label} | ${FRONT_NAME[front]} | ${withRatios(m.mbPerSec!, n?.mbPerSec, d?.mbPerSec, 0)} | ` +
            `${withRatios(m.cpuMsPerMb!, n?.cpuMsPerMb, d?.cpuMsPerMb)} | ${fmt(m.errors!, 0)} |`,
        );
      }
    }
    out.push('');
  }

  if (f.idle.length > 0) {
    out.push(
      "### Idle sessions (IDLE after SELECT; PSS of the target's process tree, per session)",
      '',
      '| target | front | sessions | KiB per session | established | errors |',
      '| --- | --- | --- | --- | --- | --- |',
    );
    const idle = medians(f.idle, (c) => `${c.peer}|${c.front}|${c.sessions}`, [
      'kibPerSession',
      'established',
      'errors',
    ]);
    const runs = [...new Set(f.idle.map((c) => `${c.front}|${c.sessions}`))];
    for (const run of runs) {
      const [front, sessions] = run.split('|') as [TlsMode, string];
      for (const id of [...new Set(f.idle.map((c) => c.peer))]) {
        const p = peerById.get(id)!;
        const m = idle.get(`${id}|${run}`);
        if (!m) continue;
        const ngx = nginxFor(f.peers, p);
        const n = ngx ? idle.get(`${ngx.id}|${run}`) : undefined;
        const d = direct ? idle.get(`${direct.id}|${run}`) : undefined;
        out.push(
          `| ${p.label} | ${FRONT_NAME[front]} | ${sessions} | ${withRatios(m.kibPerSession!, n?.kibPerSession, d?.kibPerSession, 1)} | ` +
            `${fmt(m.established!, 0)} | ${fmt(m.errors!, 0)} |`,
        );
      }
    }
    out.push('');
  }

  const checks = checkTargets(f);
  if (checks.length > 0) {
    out.push(
      '### Targets (plain front)',
      '',
      '| target | mailgate | nginx / direct | limit | |',
      '| --- | --- | --- | --- | --- |',
    );
    for (const c of checks) {
      out.push(
        `| ${c.target} | ${fmt(c.mailgate)} | ${fmt(c.reference)} | ${c.limit} | ${c.met ? 'met' : '**missed**'} |`,
      );
    }
    out.push('');
  }
  return `${out.join('\n')}\n`;
}
