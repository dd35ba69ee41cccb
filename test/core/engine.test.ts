import path from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { UserError } from '../../src/core/errors.js';
import type { ProgressEvent } from '../../src/core/types.js';
import { buildApp, filesIn, readManifest, requester } from '../helpers.js';
import { memoryCore, request as memoryRequest, requester as memoryRequester, settle } from './memory-core.js';
import { ScriptedProvider } from './scripted-provider.js';

const request = (count: number, extra: object = {}) => ({
  prompt: 'a red fox in snow',
  count,
  provider: 'local' as const,
  model: 'local',
  aspectRatio: '1:1' as const,
  ...extra,
});

describe('Engine with the local provider, SQLite and the output folder on disk', () => {
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
    // Rendered again, not copied from the image cache.
    const app = await buildApp({ env: { CACHE: 'off' } });
    const a = await app.engine.waitFor((await app.engine.submit(request(2, { seed: 7 }), requester())).id);
    const b = await app.engine.waitFor((await app.engine.submit(request(2, { seed: 7 }), requester())).id);
    const bytes = async (id: string, file: string) => sharp(path.join(app.files.jobDir(id), file)).raw().toBuffer();
    expect((await bytes(a.id, a.images[1]!.file)).equals(await bytes(b.id, b.images[1]!.file))).toBe(true);
  });
});

describe('Engine on in-memory ports', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('reports progress: batch i/n, images done/total, then completion', async () => {
    const { engine } = memoryCore({ provider: new ScriptedProvider({ calls: [{ takesMs: 5_000 }, { takesMs: 5_000 }] }) });
    const events: ProgressEvent[] = [];
    engine.on('progress', (e) => events.push(e));
    const job = await engine.submit(memoryRequest(6), memoryRequester());
    await settle(engine.waitFor(job.id));
    const mine = events.filter((e) => e.jobId === job.id);
    expect(mine[0]).toMatchObject({ state: 'queued', batchesTotal: 2, imagesTotal: 6, imagesDone: 0 });
    expect(mine.map((e) => e.imagesDone)).toContain(4);
    expect(mine.some((e) => e.currentBatch?.index === 2)).toBe(true);
    expect(mine.at(-1)).toMatchObject({ state: 'completed', imagesDone: 6, batchesDone: 2, failures: [] });
    expect(mine.some((e) => typeof e.etaMs === 'number' && e.etaMs > 0)).toBe(true);
  });

  it('approves and rejects: the file moves and store and manifest follow', async () => {
    const { engine, files, jobs } = memoryCore();
    const job = await settle(engine.waitFor((await engine.submit(memoryRequest(3), memoryRequester())).id));
    await engine.review(job.id, 1, 'approved', { id: 'user-1', name: 'Ada' });
    await engine.review(job.id, 2, 'rejected', { id: 'user-2', name: 'Bob' });
    expect(files.list(job.id, 'approved')).toEqual(['001.png']);
    expect(files.list(job.id, 'rejected')).toEqual(['002.png']);
    expect(files.list(job.id, 'pending-review')).toEqual(['003.png']);
    expect(jobs.jobs.get(job.id)!.images[0]!.review).toMatchObject({ status: 'approved', by: 'Ada' });
    const manifest = files.manifests.get(job.id) as { summary: object; images: { file: string; review: object }[] };
    expect(manifest.summary).toMatchObject({ approved: 1, rejected: 1, pending: 1 });
    expect(manifest.images[1]).toMatchObject({ file: 'rejected/002.png', review: { status: 'rejected', reviewedBy: 'Bob', reviewedAt: '1970-01-01T00:00:00.000Z' } });
    // changing one's mind moves it again
    await engine.review(job.id, 2, 'approved', { id: 'user-2' });
    expect(files.list(job.id, 'approved')).toEqual(['001.png', '002.png']);
    expect(files.list(job.id, 'rejected')).toEqual([]);
  });

  it('answers a review of an unknown image or job with a clear error, leaving no review mark open', async () => {
    const { engine, jobs } = memoryCore();
    const job = await settle(engine.waitFor((await engine.submit(memoryRequest(1), memoryRequester())).id));
    await expect(engine.review(job.id, 9, 'approved', { id: 'u' })).rejects.toThrow(`Image 9 is not part of job ${job.id}.`);
    expect(await jobs.openReviews()).toEqual([]);
    await expect(engine.review('20990101-nope', 1, 'approved', { id: 'u' })).rejects.toBeInstanceOf(UserError);
  });

  it('cancels a job: waiting batches are dropped and the job ends canceled', async () => {
    const provider = new ScriptedProvider({ calls: [{ takesMs: 2_000 }] });
    const { engine, files } = memoryCore({ provider, settings: { lanes: { fal: { concurrency: 1 } } } });
    const job = await engine.submit(memoryRequest(12), memoryRequester());
    await vi.advanceTimersByTimeAsync(500);
    await engine.cancel(job.id, { id: 'user-1', name: 'Ada' });
    const done = await settle(engine.waitFor(job.id));
    expect(done.state).toBe('canceled');
    expect(done.batches.map((b) => b.state)).toEqual(['canceled', 'canceled', 'canceled']);
    expect(done.batches.map((b) => b.attempts)).toEqual([1, 0, 0]);
    expect(done.error).toBe('canceled by Ada with 0 images delivered');
    expect(files.manifests.get(job.id)).toMatchObject({ state: 'canceled' });
    await expect(engine.cancel(job.id, { id: 'x' })).rejects.toThrow('has already finished');
  });

  it('answers "queue full" past the per-tenant running and waiting limits, and runs the waiting job later', async () => {
    const { engine } = memoryCore({ settings: { tenantMaxRunningJobs: 1, tenantMaxQueuedJobs: 1 } });
    const first = await engine.submit(memoryRequest(2), memoryRequester());
    const second = await engine.submit(memoryRequest(2), memoryRequester());
    const error = await engine.submit(memoryRequest(2), memoryRequester()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).code).toBe('queue_full');
    expect((error as UserError).message).toBe(
      'The queue is full here: 1 job running and 1 waiting (the most allowed is 1 + 1). Try again when one finishes.',
    );
    // another tenant is not affected
    await expect(engine.submit(memoryRequest(1), memoryRequester('guild-2'))).resolves.toMatchObject({ state: 'queued' });
    expect((await settle(engine.waitFor(first.id))).state).toBe('completed');
    expect((await settle(engine.waitFor(second.id))).state).toBe('completed');
  });

  it('lists a tenant’s unfinished jobs with their exact queue position, which moves up as calls start', async () => {
    const provider = new ScriptedProvider({ calls: [{ takesMs: 1_000 }, { takesMs: 1_000 }, { takesMs: 1_000 }] });
    const { engine } = memoryCore({ provider, settings: { lanes: { fal: { concurrency: 1 } } } });
    const a = await engine.submit(memoryRequest(8), memoryRequester('g', 'u1'));
    const b = await engine.submit(memoryRequest(4), memoryRequester('g', 'u2'));
    const listed = (await engine.listJobs('g'));
    expect(listed.map((l) => l.job.id)).toEqual([a.id, b.id]);
    expect((await engine.listJobs('g', 'u2')).map((l) => l.job.id)).toEqual([b.id]);
    // a's first call runs; a's second waits before b's only one
    expect(listed[1]!.progress.queuePosition).toBe(2);
    await vi.advanceTimersByTimeAsync(1_000);
    expect((await engine.listJobs('g', 'u2'))[0]!.progress.queuePosition).toBe(1);
    await vi.advanceTimersByTimeAsync(1_000);
    expect((await engine.listJobs('g', 'u2'))[0]!.progress).toMatchObject({ state: 'running' });
    expect((await engine.listJobs('g', 'u2'))[0]!.progress.queuePosition).toBeUndefined();
    await settle(Promise.all([engine.waitFor(a.id), engine.waitFor(b.id)]));
    expect(await engine.listJobs('g')).toEqual([]);
  });
});
