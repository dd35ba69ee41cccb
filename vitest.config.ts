import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Servers in tests are real HTTP servers on 127.0.0.1; give slow CI machines room.
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Starts a loopback redis-server for the distributed-mode tests (skipped, with a line, without one).
    globalSetup: ['test/redis/global-setup.ts'],
  },
});
