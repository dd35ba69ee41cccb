/**
 * For distributed-mode tests: the Redis started by the global setup, and a key prefix of the test
 * file's own, so files running at once never see each other's keys.
 */
import { randomBytes } from 'node:crypto';
import { describe, inject } from 'vitest';

/** `redis://127.0.0.1:PORT`, or '' when no redis-server is installed (the tests skip). */
export const redisUrl: string = inject('redisUrl');

/** A fresh key prefix (`t<hex>`), one per call: use one per test file or per test. */
export function testPrefix(): string {
  return `t${randomBytes(4).toString('hex')}`;
}

/** `describe` that runs only when a Redis server is there (the global setup printed how to install one otherwise). */
export const describeRedis = redisUrl ? describe : describe.skip;
