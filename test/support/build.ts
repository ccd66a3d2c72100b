import { execFileSync } from 'node:child_process';
import { ROOT } from './cli.js';

/**
 * vitest globalSetup of the e2e project: builds dist/ once, for the tests that run
 * bin/mailgate as a process (scripts/test has built it already; this keeps `npx vitest` right).
 */
export default function setup(): void {
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' });
}
