import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { describeRedis, redisUrl, testPrefix } from './redis.js';

describeRedis('the test Redis', () => {
  it('answers on loopback, evicts nothing, and keeps files apart by prefix', async () => {
    expect(redisUrl).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
    const redis = new Redis(redisUrl);
    try {
      const [, policy] = (await redis.config('GET', 'maxmemory-policy')) as [string, string];
      expect(policy).toBe('noeviction');
      const a = testPrefix();
      const b = testPrefix();
      expect(a).not.toBe(b);
      await redis.set(`${a}:k`, '1');
      expect(await redis.get(`${b}:k`)).toBeNull();
    } finally {
      redis.disconnect();
    }
  });
});
