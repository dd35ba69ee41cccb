/**
 * Provider fault soak: 20 jobs of 20 images across 5 tenants against a fal fake that fails a fixed,
 * seeded share of calls. Every job must end with its images delivered or its failures named; no job
 * may stall (a watchdog fails the test if a job makes no progress for too long).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import type { Job } from '../../src/core/types.js';
import { startFakeFal } from '../fakes/fal.js';
import { buildApp, onCleanup, readManifest, requester } from '../helpers.js';

describe('provider fault soak', () => {
  it('delivers or explains every image of 20 jobs through 500s, 429s, hangs, partial and failed outputs', async () => {
    const fake = await startFakeFal({ key: 'k', latencyMs: 20, rngSeed: 42 });
    onCleanup(() => fake.close());
    fake.inject({ on: 'submit', fault: { kind: 'server-error' }, probability: 0.2 });
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 0.05 }, probability: 0.1 });
    // Half the calls' status streams drop after their first event: those calls fall back to polling,
    // where 5 % of polls hang.
    fake.dropStatusStreams({ times: 60, afterEvents: 1 });
    fake.inject({ on: 'status', fault: { kind: 'hang' }, probability: 0.05 });
    fake.inject({ on: 'submit', fault: { kind: 'partial', images: 2 }, probability: 0.05 });
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'model crashed' }, probability: 0.02 });

    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    onCleanup(() => void process.off('unhandledRejection', onUnhandled));

    const app = await buildApp({
      env: { FAL_KEY: 'k', FAL_BASE_URL: fake.url, FAL_CONCURRENCY: '6', TENANT_MAX_RUNNING_JOBS: '4', PROVIDER_TIMEOUT: '5' },
      requestTimeoutMs: 150,
      // a dropped stream falls back to polling at once (no reconnect), so the polls' faults are met
      falStreamRetryMs: [],
    });

    // watchdog: while jobs are unfinished, some job must show progress at least every 5 s
    let lastMove = Date.now();
    app.engine.on('progress', () => (lastMove = Date.now()));
    const stalled: string[] = [];
    const watchdog = setInterval(() => {
      const waiting = app.engine.activeJobs();
      if (waiting.length > 0 && Date.now() - lastMove > 5_000) stalled.push(...waiting.map((job) => job.id));
    }, 250);
    onCleanup(() => clearInterval(watchdog));

    const jobs: Job[] = [];
    for (let i = 0; i < 20; i += 1) {
      jobs.push(await app.engine.submit({ prompt: `soak ${i}`, count: 20, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' }, requester(`tenant-${i % 5}`)));
    }
    const done = await Promise.all(jobs.map((job) => app.engine.waitFor(job.id)));
    clearInterval(watchdog);

    expect(stalled).toEqual([]);
    expect(unhandled).toEqual([]);
    const faults = fake.calls.filter((c) => c.fault).map((c) => c.fault);
    for (const kind of ['server-error', 'rate-limit', 'hang']) expect(faults).toContain(kind);
    expect([...fake.requests.values()].some((r) => r.partialImages !== undefined)).toBe(true);

    let delivered = 0;
    for (const job of done) {
      const manifest = await readManifest(app, job.id);
      const failed = manifest.batches.filter((b) => b.state === 'failed');
      const missing = failed.reduce((sum, b) => sum + b.size - b.delivered, 0);
      expect(job.images.length + missing).toBe(20);
      expect(manifest.summary.delivered).toBe(job.images.length);
      for (const batch of failed) expect(batch.error).toMatch(/\w+/);
      if (missing > 0) expect(job.error).toMatch(/^(completed with \d+ images? failed|all 20 images failed): .+/);
      else expect(job.state).toBe('completed');
      delivered += job.images.length;
    }
    // the retries really recover: nearly everything arrives despite the faults
    expect(delivered).toBeGreaterThan(380);
    const count = (kind: string) => faults.filter((f) => f === kind).length;
    await mkdir('test-results', { recursive: true });
    await writeFile(
      'test-results/soak.json',
      JSON.stringify(
        {
          jobs: done.length,
          imagesRequested: 400,
          imagesDelivered: delivered,
          providerRequests: fake.calls.length,
          faults: {
            'server-error': count('server-error'),
            'rate-limit': count('rate-limit'),
            hang: count('hang'),
            partial: [...fake.requests.values()].filter((r) => r.partialImages !== undefined).length,
            failed: [...fake.requests.values()].filter((r) => r.failure !== undefined).length,
          },
        },
        null,
        2,
      ),
    );
  }, 120_000);
});
