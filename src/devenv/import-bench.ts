import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { ImportSummary } from '../accounts/import.js';
import { operatorServiceOn } from '../admin/service.js';
import { parseConfig } from '../config/load.js';
import { createLogger } from '../observability/logger.js';
import { startRedis } from './servers.js';

/**
 * scripts/import-bench: `account import` throughput into a private local Redis, through the
 * same service function as the CLI. Writes ACCOUNTS accounts (default 100,000) as JSON lines
 * or CSV (FORMAT=jsonl|csv), each with two aliases, an msisdn and a fabricated primary hash
 * (three in four argon2id PHC strings, one in four bcrypt: an import only stores them), then
 * imports the file twice: the first run creates every account, the second finds every one
 * unchanged. Redis runs as startRedis() starts it (appendonly yes, fsync every second).
 */

const ACCOUNTS = Number(process.env.ACCOUNTS ?? 100_000);
const FORMAT = process.env.FORMAT === 'csv' ? 'csv' : 'jsonl';
const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function fakeHash(i: number): string {
  if (i % 4 === 3) {
    let s = '';
    for (const b of randomBytes(53)) s += BCRYPT_ALPHABET[b & 63];
    return `$2b$10$${s}`;
  }
  const b64 = (n: number) => randomBytes(n).toString('base64').replace(/=+$/, '');
  return `$argon2id$v=19$m=19456,t=2,p=1$${b64(16)}$${b64(32)}`;
}

async function writeAccounts(file: string): Promise<void> {
  const out = createWriteStream(file);
  if (FORMAT === 'csv') out.write('login,aliases,msisdn,primaryHash,upstreamUser\n');
  for (let i = 0; i < ACCOUNTS; i++) {
    const login = `user${i}@example.jp`;
    const aliases = [`user${i}`, `u${i}@mail.example.jp`];
    const msisdn = `+8190${String(i).padStart(8, '0')}`;
    const line =
      FORMAT === 'csv'
        ? `${login},${aliases.join(';')},${msisdn},"${fakeHash(i)}",user${i}\n`
        : `${JSON.stringify({ login, aliases, msisdn, primaryHash: fakeHash(i), upstreamUser: `user${i}` })}\n`;
    if (!out.write(line)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mailgate-import-bench-'));
  const file = join(dir, `accounts.${FORMAT}`);
  await writeAccounts(file);
  const redis = await startRedis();
  const client = new Redis(redis.url);
  try {
    const config = parseConfig({ redis: { url: redis.url }, geo: { domesticCountries: ['JP'] } });
    const svc = operatorServiceOn(client, config, { log: createLogger('silent'), actor: 'bench' });
    const run = async (what: string, expect: keyof ImportSummary): Promise<string> => {
      const s = await svc.importAccounts(createReadStream(file, { highWaterMark: 256 * 1024 }), {
        name: file,
      });
      if (s[expect] !== ACCOUNTS || s.rejected !== 0)
        throw new Error(
          `${what}: expected ${ACCOUNTS} ${expect}, got ${JSON.stringify({ ...s, rejectedLines: [] })}`,
        );
      const rate = Math.round((ACCOUNTS * 1000) / s.ms);
      return `| ${what} | ${ACCOUNTS} | ${(s.ms / 1000).toFixed(2)} | ${rate} |`;
    };
    const first = await run(`first import (all ${'created'})`, 'created');
    const again = await run('re-import (all unchanged)', 'unchanged');
    process.stdout.write(
      [
        `account import, ${FORMAT}, local Redis (appendonly everysec), ${ACCOUNTS} accounts with 2 aliases each`,
        '',
        '| run | accounts | seconds | accounts/s |',
        '| --- | --- | --- | --- |',
        first,
        again,
        '',
      ].join('\n'),
    );
  } finally {
    client.disconnect();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`import-bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
