import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/core/engine.js';
import type { Job } from '../../src/core/types.js';
import { LocalProvider } from '../../src/providers/local.js';
import { ImageFiles } from '../../src/store/files.js';
import { startHealthServer } from '../../src/health.js';
import { buildApp, onCleanup, requester, tempDir } from '../helpers.js';
import { MemoryJobs } from './memory-jobs.js';

async function engineWith(jobs: MemoryJobs): Promise<Engine> {
  const dir = await tempDir();
  return new Engine({
    jobs,
    files: new ImageFiles(dir),
    providers: { local: new LocalProvider() },
    settings: {
      lanes: { local: { concurrency: 2 } },
      maxAttempts: 3,
      callTimeoutMs: 10_000,
      tenantMaxRunningJobs: 3,
      tenantMaxQueuedJobs: 10,
      prices: { local: 0 },
      retryBaseMs: 5,
      retryMaxMs: 20,
      pollIntervalMs: 5,
    },
  });
}

describe('finishing a job when the store fails', () => {
  it('retries the final save with backoff, reports the job as unsaved meanwhile, and finishes once the store is back', async () => {
    const jobs = new MemoryJobs();
    const engine = await engineWith(jobs);
    const job = await engine.submit({ prompt: 'a fox', count: 2, provider: 'local', model: 'local', aspectRatio: '1:1' }, requester());
    const finished = new Promise<Job>((resolve) => engine.once('finished', resolve));
    // the store breaks as the job ends: its last save (the finish) fails again and again
    jobs.failSaves = { error: new Error('SQLITE_FULL: database or disk is full'), when: (j) => j.state === 'completed' };
    await expect.poll(() => engine.unsavedJobs()[0]?.attempts ?? 0, { timeout: 5_000 }).toBeGreaterThanOrEqual(3);
    expect(engine.unsavedJobs()).toEqual([expect.objectContaining({ jobId: job.id, error: 'SQLITE_FULL: database or disk is full' })]);
    expect(jobs.jobs.get(job.id)!.state).not.toBe('completed');
    // /healthz says so, with the job and its attempts but not the error text
    const app = await buildApp();
    const health = await startHealthServer({ ...app, engine }, () => [], 0);
    onCleanup(() => health.stop());
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
    await engine.stop();
  });
});
