/**
 * Two bot processes on one Redis (two complete apps, each with its own connections and BullMQ
 * workers, as two processes would have) against one fal fake that enforces the account's limits:
 * 10 calls per second and 10 in flight, 429 past either.
 */
import path from 'node:path';
import { expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Job } from '../../src/core/types.js';
import { startFakeFal, type FakeFal } from '../fakes/fal.js';
import { buildApp, onCleanup, requester, tempDir } from '../helpers.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';

const FAL = { provider: 'fal' as const, model: 'fal-ai/flux/schnell', aspectRatio: '1:1' as const };

async function cluster(fal: FakeFal, extra: Record<string, string> = {}) {
  const shared = await tempDir();
  const env = {
    REDIS_URL: redisUrl,
    REDIS_PREFIX: testPrefix(),
    FAL_KEY: 'fal-test-key',
    FAL_BASE_URL: fal.url,
    FAL_RATE_LIMIT: '10/s',
    FAL_CONCURRENCY: '10',
    OUTPUT_DIR: path.join(shared, 'output'),
    MAX_IMAGES_PER_JOB: '1000',
    TENANT_DAILY_IMAGES: '0',
    GLOBAL_DAILY_IMAGES: '0',
    ...extra,
  };
  const a = await buildApp({ env, queueLockMs: 5_000, jobLockMs: 5_000 });
  const b = await buildApp({ env, queueLockMs: 5_000, jobLockMs: 5_000 });
  return { a, b, env };
}

/** Resolves with the job once any process has finished it. */
function finished(app: App, id: string): Promise<Job> {
  return app.engine.waitFor(id);
}

describeRedis('two processes, one provider account', () => {
  it('delivers 400 images for 4 tenants through both processes with no 429 and never more than 10 in flight; a late tenant goes next', async () => {
    const fal = await startFakeFal({ key: 'fal-test-key', latencyMs: 200, rateLimit: { limit: 10, intervalMs: 1000 }, concurrencyLimit: 10 });
    onCleanup(() => fal.close());
    const { a, b } = await cluster(fal);
    const submitsBy = new Map<App, number>([[a, 0], [b, 0]]);
    for (const app of [a, b]) {
      app.engine.on('call', (call) => {
        if (call.operation === 'submit') submitsBy.set(app, submitsBy.get(app)! + 1);
      });
    }

    const submitted: Job[] = [];
    for (let t = 0; t < 4; t += 1) {
      // each tenant's commands land on both processes, alternately
      for (const [k, app] of [a, b, a, b].entries()) {
        submitted.push(await app.engine.submit({ ...FAL, prompt: `tenant ${t} job ${k}`, count: 25 }, requester(`guild-${t}`, `user-${t}`)));
      }
    }
    // the backlog is queued; a newcomer asks for one call's worth
    const acceptedAt = fal.submits().length;
    const late = await b.engine.submit({ ...FAL, prompt: 'a late fox', count: 4 }, requester('guild-late', 'user-late'));
    const lateDone = await finished(a, late.id);
    expect(lateDone.state).toBe('completed');
    const lateCall = fal.submits().findIndex((call) => JSON.stringify(call.body).includes('a late fox'));
    // Its one call went out within the next few of the backlog's, not behind the other 100.
    // Its call joined the round being served: behind at most one call of each of the 4 backlogged
    // tenants and the few already started, not behind the other 100.
    expect(lateCall - acceptedAt).toBeLessThanOrEqual(6);

    const done = await Promise.all(submitted.map((job, i) => finished(i % 2 ? a : b, job.id)));
    expect(done.map((job) => job.state)).toEqual(submitted.map(() => 'completed'));
    expect(done.reduce((sum, job) => sum + job.images.length, 0)).toBe(400);
    expect(fal.limited()).toBe(0);
    expect(fal.calls.filter((call) => call.fault === 'rate-limit')).toEqual([]);
    expect(fal.maxInFlight()).toBeLessThanOrEqual(10);
    // one submit per call: 16 jobs of 25 (7 calls each: 6 of 4 and 1 of 1), and 1 for the newcomer
    expect(fal.submits()).toHaveLength(113);
    const calls = fal.submits().map((c) => JSON.stringify([(c.body as { prompt: string }).prompt, (c.body as { seed: number }).seed]));
    expect(new Set(calls).size).toBe(113);
    expect(done.flatMap((job) => job.batches.map((batch) => batch.attempts))).toEqual(done.flatMap((job) => job.batches.map(() => 1)));
    // both processes ran batches
    expect(submitsBy.get(a)! + submitsBy.get(b)!).toBe(113);
    expect(Math.min(submitsBy.get(a)!, submitsBy.get(b)!)).toBeGreaterThan(10);
  }, 60_000);
});
