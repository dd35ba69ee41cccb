/**
 * Vitest global setup: starts a loopback redis-server (server.ts) for the distributed-mode tests and
 * stops it when the run ends. The URL reaches the test files as `provide('redisUrl')`. Without the
 * binary the Redis tests skip with one line on how to install it, except under CI=true, where a
 * missing server fails the run.
 */
import type { TestProject } from 'vitest/node';
import { hasRedisServer, INSTALL_HINT, startRedisServer } from './server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** `redis://127.0.0.1:PORT`, or '' when no redis-server is installed */
    redisUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (!hasRedisServer()) {
    if (process.env.CI === 'true') throw new Error(`${INSTALL_HINT} (CI=true: the distributed-mode tests must run)`);
    process.stdout.write(`\n${INSTALL_HINT} The distributed-mode tests are skipped.\n\n`);
    project.provide('redisUrl', '');
    return async () => {};
  }
  const server = await startRedisServer();
  project.provide('redisUrl', server.url);
  return () => server.stop();
}
