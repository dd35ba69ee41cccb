import Keyv from 'keyv';
import { describe, expect, it } from 'vitest';
import type { Job } from '../../src/core/types.js';
import { startHealthServer } from '../../src/health.js';
import { memoryCore, request, requester } from './memory-core.js';

describe('finishing a job when the store fails', () => {
  it('retries the final save with backoff, reports the job as unsaved meanwhile, and finishes once the store is back', async () => {
    const { engine, jobs, provider } = memoryCore({ settings: { retryBaseMs: 5, retryMaxMs: 20 } });
    const job = await engine.submit(request(2), requester());
    const finished = new Promise<Job>((resolve) => engine.once('finished', resolve));
    // the store breaks as the job ends: its last save (the finish) fails again and again
    jobs.failSaves = { error: new Error('SQLITE_FULL: database or disk is full'), when: (j) => j.state === 'completed' };
    await expect.poll(() => engine.unsavedJobs()[0]?.attempts ?? 0, { timeout: 5_000 }).toBeGreaterThanOrEqual(3);
    expect(engine.unsavedJobs()).toEqual([expect.objectContaining({ jobId: job.id, error: 'SQLITE_FULL: database or disk is full' })]);
    expect(jobs.jobs.get(job.id)!.state).not.toBe('completed');
    // /healthz says so, with the job and its attempts but not the error text
    const health = await startHealthServer({ engine, keyv: new Keyv(), providers: { fal: provider } }, () => [], 0);
    try {
      const answer = await fetch(`${health.url}/healthz`);
      expect(answer.status).toBe(503);
      const body = (await answer.json()) as { status: string; unsavedJobs: { jobId: string; attempts: number }[] };
      expect(body.status).toBe('degraded');
      expect(body.unsavedJobs.map((u) => u.jobId)).toEqual([job.id]);
      expect(JSON.stringify(body)).not.toContain('SQLITE_FULL');
      jobs.failSaves = undefined;
      const done = await finished;
      expect(done.state).toBe('completed');
      expect(jobs.jobs.get(job.id)!.state).toBe('completed');
      expect(engine.unsavedJobs()).toEqual([]);
      expect((await fetch(`${health.url}/healthz`)).status).toBe(200);
    } finally {
      await health.stop();
      await engine.stop();
    }
  });
});
