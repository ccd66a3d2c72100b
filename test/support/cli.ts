import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root and bin/mailgate, which runs the built dist/ (built once by build.ts). */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = join(ROOT, 'bin', 'mailgate');

export interface Run {
  args: string[];
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs bin/mailgate as operators do: a child process, standard input closed after `input`.
 * MAILGATE_CONFIG points nowhere, so a test that forgets --config fails loudly.
 */
export function runMailgate(
  args: string[],
  opts: { input?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, MAILGATE_CONFIG: '/nonexistent/mailgate.yaml', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ args, code, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}
