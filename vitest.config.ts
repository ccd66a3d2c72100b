import { defineConfig } from 'vitest/config';

// Two projects:
// - unit: test/unit, files in parallel (default worker count).
// - e2e: test/e2e, one file at a time (fileParallelism: false, so maxWorkers = 1). Each e2e file starts
//   its own Redis and Dovecot (a master plus ~6 service processes) and drives real logins; on a 2-core
//   CI box, two or three such files side by side starve each other and turn timeouts into flakes.
//   Vitest puts projects with maxWorkers 1 in a sequential group that runs after the parallel one, so
//   e2e files never overlap the unit run either.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          environment: 'node',
          fileParallelism: false,
          globalSetup: ['test/support/build.ts'],
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
