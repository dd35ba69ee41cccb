import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { UserError } from '../../src/core/errors.js';
import type { ProgressEvent } from '../../src/core/types.js';
import { buildApp, filesIn, readManifest, requester, untilProgress } from '../helpers.js';

const request = (count: number, extra: object = {}) => ({
  prompt: 'a red fox in snow',
  count,
  provider: 'local' as const,
  model: 'local',
  aspectRatio: '1:1' as const,
  ...extra,
});

describe('Engine with the local provider', () => {
  it('delivers 10 images from 3 calls (4 + 4 + 2) with a complete manifest', async () => {
    const app = await buildApp();
    const job = await app.engine.submit(request(10, { seed: 42 }), requester());
    expect(job.state).toBe('queued');
    const done = await app.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    expect(done.error).toBeUndefined();

    const files = await filesIn(app, job.id, 'pending-review');
    expect(files).toEqual(['001.png', '002.png', '003.png', '004.png', '005.png', '006.png', '007.png', '008.png', '009.png', '010.png']);
    const manifest = await readManifest(app, job.id);
    expect(manifest).toMatchObject({
      jobId: job.id,
      state: 'completed',
      prompt: 'a red fox in snow',
      provider: 'local',
      model: 'local',
      parameters: { count: 10, aspectRatio: '1:1', seed: 42 },
      requester: { tenant: 'guild-1', userId: 'user-1', platform: 'cli' },
      summary: { requested: 10, delivered: 10, failed: 0, pending: 10 },
    });
    expect(manifest.batches.map((b) => [b.size, b.attempts, b.state])).toEqual([
      [4, 1, 'done'],
      [4, 1, 'done'],
      [2, 1, 'done'],
    ]);
    expect(manifest.batches.every((b) => typeof b.providerRequestId === 'string')).toBe(true);
    expect(manifest.images.map((i) => i.seed)).toEqual([42, 43, 44, 45, 46, 47, 48, 49, 50, 51]);
    expect(manifest.images[0]).toMatchObject({ file: 'pending-review/001.png', width: 768, height: 768, review: { status: 'pending' } });
  });

  it('renders the requested aspect ratio as a real PNG of that size', async () => {
    const app = await buildApp();
    const job = await app.engine.submit(request(1, { aspectRatio: '16:9' }), requester());
    const done = await app.engine.waitFor(job.id);
    const meta = await sharp(path.join(app.files.jobDir(job.id), done.images[0]!.file)).metadata();
    expect(meta).toMatchObject({ format: 'png', width: 1024, height: 576 });
  });

  it('reproduces a job byte for byte from its seed', async () => {
    const app = await buildApp();
    const a = await app.engine.waitFor((await app.engine.submit(request(2, { seed: 7 }), requester())).id);
    const b = await app.engine.waitFor((await app.engine.submit(request(2, { seed: 7 }), requester())).id);
    const bytes = async (id: string, file: string) => sharp(path.join(app.files.jobDir(id), file)).raw().toBuffer();
    expect((await bytes(a.id, a.images[1]!.file)).equals(await bytes(b.id, b.images[1]!.file))).toBe(true);
  });

  it('reports progress: batch i/n, images done/total, then completion', async () => {
    const app = await buildApp();
    const events: ProgressEvent[] = [];
    app.engine.on('progress', (e) => events.push(e));
    const job = await app.engine.submit(request(6), requester());
    await app.engine.waitFor(job.id);
    const mine = events.filter((e) => e.jobId === job.id);
    expect(mine[0]).toMatchObject({ state: 'queued', batchesTotal: 2, imagesTotal: 6, imagesDone: 0 });
    expect(mine.map((e) => e.imagesDone)).toContain(4);
    expect(mine.some((e) => e.currentBatch?.index === 2)).toBe(true);
    expect(mine.at(-1)).toMatchObject({ state: 'completed', imagesDone: 6, batchesDone: 2, failures: [] });
    expect(mine.some((e) => typeof e.etaMs === 'number' && e.etaMs > 0)).toBe(true);
  });

  it('approves and rejects: the file moves and store and manifest follow', async () => {
    const app = await buildApp();
    const job = await app.engine.waitFor((await app.engine.submit(request(3), requester())).id);
    await app.engine.review(job.id, 1, 'approved', { id: 'user-1', name: 'Ada' });
    await app.engine.review(job.id, 2, 'rejected', { id: 'user-2', name: 'Bob' });
    expect(await filesIn(app, job.id, 'approved')).toEqual(['001.png']);
    expect(await filesIn(app, job.id, 'rejected')).toEqual(['002.png']);
    expect(await filesIn(app, job.id, 'pending-review')).toEqual(['003.png']);
    const stored = await app.jobs.get(job.id);
    expect(stored!.images[0]!.review).toMatchObject({ status: 'approved', by: 'Ada' });
    const manifest = await readManifest(app, job.id);
    expect(manifest.summary).toMatchObject({ approved: 1, rejected: 1, pending: 1 });
    expect(manifest.images[1]).toMatchObject({ file: 'rejected/002.png', review: { status: 'rejected', reviewedBy: 'Bob' } });
    expect(manifest.images[1]!.review.reviewedAt).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    // changing one's mind moves it again
    await app.engine.review(job.id, 2, 'approved', { id: 'user-2' });
    expect(await filesIn(app, job.id, 'approved')).toEqual(['001.png', '002.png']);
    expect(await filesIn(app, job.id, 'rejected')).toEqual([]);
  });

  it('answers a review of an unknown image or job with a clear error', async () => {
    const app = await buildApp();
    const job = await app.engine.waitFor((await app.engine.submit(request(1), requester())).id);
    await expect(app.engine.review(job.id, 9, 'approved', { id: 'u' })).rejects.toThrow(`Image 9 is not part of job ${job.id}.`);
    await expect(app.engine.review('20990101-nope', 1, 'approved', { id: 'u' })).rejects.toBeInstanceOf(UserError);
  });

  it('cancels a job: waiting batches are dropped and the job ends canceled', async () => {
    const app = await buildApp({ env: { LOCAL_LATENCY_MS: '200', LOCAL_CONCURRENCY: '1' } });
    const job = await app.engine.submit(request(12), requester());
    await untilProgress(app, (j) => j.id === job.id && j.batches[0]!.requestId !== undefined);
    await app.engine.cancel(job.id, { id: 'user-1', name: 'Ada' });
    const done = await app.engine.waitFor(job.id);
    expect(done.state).toBe('canceled');
    expect(done.batches.map((b) => b.state)).toEqual(['canceled', 'canceled', 'canceled']);
    expect(done.batches[1]!.attempts + done.batches[2]!.attempts).toBe(0);
    expect(done.error).toBe('canceled by Ada with 0 images delivered');
    expect((await readManifest(app, job.id)).state).toBe('canceled');
    await expect(app.engine.cancel(job.id, { id: 'x' })).rejects.toThrow('has already finished');
  });

  it('answers "queue full" past the per-tenant running and waiting limits, and runs the waiting job later', async () => {
    const app = await buildApp({ env: { TENANT_MAX_RUNNING_JOBS: '1', TENANT_MAX_QUEUED_JOBS: '1', LOCAL_LATENCY_MS: '50' } });
    const first = await app.engine.submit(request(2), requester());
    const second = await app.engine.submit(request(2), requester());
    const error = await app.engine.submit(request(2), requester()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).code).toBe('queue_full');
    expect((error as UserError).message).toBe(
      'The queue is full here: 1 job running and 1 waiting (the most allowed is 1 + 1). Try again when one finishes.',
    );
    // another tenant is not affected
    await expect(app.engine.submit(request(1), requester('guild-2'))).resolves.toMatchObject({ state: 'queued' });
    expect((await app.engine.waitFor(first.id)).state).toBe('completed');
    expect((await app.engine.waitFor(second.id)).state).toBe('completed');
  });

  it('lists a tenant’s unfinished jobs with their queue position', async () => {
    const app = await buildApp({ env: { LOCAL_LATENCY_MS: '100', LOCAL_CONCURRENCY: '1' } });
    const a = await app.engine.submit(request(8), requester('g', 'u1'));
    const b = await app.engine.submit(request(4), requester('g', 'u2'));
    const listed = app.engine.listJobs('g');
    expect(listed.map((l) => l.job.id)).toEqual([a.id, b.id]);
    expect(app.engine.listJobs('g', 'u2').map((l) => l.job.id)).toEqual([b.id]);
    expect(listed[1]!.progress.queuePosition).toBeGreaterThanOrEqual(1);
    await app.engine.waitFor(b.id);
    await app.engine.waitFor(a.id);
    expect(app.engine.listJobs('g')).toEqual([]);
  });
});
