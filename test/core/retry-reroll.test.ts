/**
 * "Retry N failed" and "Reroll" (issue 14): the real @fal-ai/client against the fake fal queue, whose
 * submit bodies show exactly what was asked again (num_images, seed); files on disk and the manifest
 * show where every image went and what was kept.
 */
import { describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import { isUserError } from '../../src/core/errors.js';
import type { ImagineRequest, Job } from '../../src/core/types.js';
import { progressView } from '../../src/core/views.js';
import { startFakeFal, type FakeFal } from '../fakes/fal.js';
import { buildApp, filesIn, onCleanup, readManifest, rejectionOf, requester } from '../helpers.js';

const FOX: ImagineRequest = { prompt: 'a red fox in snow', count: 6, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' };
const ME = { id: 'user-1', name: 'Ada' };

async function falApp(env: Record<string, string> = {}): Promise<{ fake: FakeFal; app: App }> {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 5 });
  onCleanup(() => fake.close());
  // One call at a time and one try per batch: the injected failure hits a known batch, for good.
  const app = await buildApp({
    env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url, FAL_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '1', CACHE: 'off', ...env },
  });
  return { fake, app };
}

const body = (call: { body: unknown }) => call.body as { num_images: number; seed: number };

/** A 6-image job (calls of 4 + 2, seeds 100 and 104) whose first call fails: images 1–4 are missing. */
async function halfFailed(fake: FakeFal, app: App, tenant = 'guild-1'): Promise<Job> {
  fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' } });
  const job = await app.engine.waitFor((await app.engine.submit({ ...FOX, seed: 100 }, requester(tenant))).id);
  expect(job.state).toBe('completed');
  expect(job.images.map((image) => image.index)).toEqual([5, 6]);
  return job;
}

describe('retry failed', () => {
  it('asks again for exactly the failed images, with their seeds, into their slots, and never for delivered ones', async () => {
    const { fake, app } = await falApp();
    const first = await halfFailed(fake, app);
    expect(fake.submits().map((call) => [body(call).num_images, body(call).seed])).toEqual([
      [4, 100],
      [2, 104],
    ]);
    const delivered = await filesIn(app, first.id, 'pending-review');

    const reopened = await app.engine.retryFailed(first.id, ME);
    expect(reopened.state).not.toBe('completed');
    expect(progressView(reopened, app.engine.progress(reopened)).title).toBe('Retrying 4 failed images');
    const done = await app.engine.waitFor(first.id);

    // one new call: the 4 missing images at the seed their batch had; images 5–6 are not asked again
    expect(fake.submits().slice(2).map((call) => [body(call).num_images, body(call).seed])).toEqual([[4, 100]]);
    expect(done.state).toBe('completed');
    expect(done.error).toBeUndefined();
    expect(done.images.map((image) => image.index)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await filesIn(app, first.id, 'pending-review')).toEqual(['001.png', '002.png', '003.png', '004.png', '005.png', '006.png']);
    expect(delivered).toEqual(['005.png', '006.png']);

    const manifest = await readManifest(app, first.id);
    expect(manifest.state).toBe('completed');
    expect(manifest.summary).toMatchObject({ requested: 6, delivered: 6, failed: 0 });
    expect(manifest.images.map((image) => image.retried?.by ?? null)).toEqual(['Ada', 'Ada', 'Ada', 'Ada', null, null]);
    expect(manifest.batches.map((b) => [b.state, b.seed, b.retried?.by ?? null, b.retryOf?.batch ?? null])).toEqual([
      ['failed', 100, 'Ada', null],
      ['done', 104, null, null],
      ['done', 100, null, 0],
    ]);
  });

  it('refuses a job with nothing failed, and a job still running, with one line each', async () => {
    const { app } = await falApp();
    const whole = await app.engine.waitFor((await app.engine.submit({ ...FOX, count: 2 }, requester())).id);
    const error = await rejectionOf(app.engine.retryFailed(whole.id, ME));
    expect(isUserError(error) && error.message).toBe(`Job ${whole.id} has no failed images to retry.`);
    const running = await app.engine.submit({ ...FOX, count: 2 }, requester());
    const busy = await rejectionOf(app.engine.retryFailed(running.id, ME));
    expect(isUserError(busy) && busy.message).toMatch(/is still running; try again when it has finished\.$/);
    await app.engine.waitFor(running.id);
  });

  it('is refused by the daily cap when the failed images do not fit, and changes nothing', async () => {
    const { fake, app } = await falApp({ TENANT_DAILY_IMAGES: '6' });
    const first = await halfFailed(fake, app);
    // 2 made (the 4 failed were given back), then 3 more: 1 of 6 left, and the retry needs 4
    await app.engine.waitFor((await app.engine.submit({ ...FOX, count: 3 }, requester())).id);
    const calls = fake.submits().length;
    const before = await readManifest(app, first.id);

    const error = await rejectionOf(app.engine.retryFailed(first.id, ME));
    expect(isUserError(error) && error.code).toBe('quota');
    expect((error as Error).message).toMatch(/^This job asks for 4 images, but only 1 of today's 6 are left here\./);
    expect(fake.submits()).toHaveLength(calls);
    const after = await app.engine.get(first.id);
    expect(after).toMatchObject({ state: 'completed', batches: first.batches, images: first.images });
    expect(await readManifest(app, first.id)).toEqual(before);
  });
});

describe('reroll', () => {
  it('makes one call with a new seed for a rejected image, into its slot, keeping the rejected file', async () => {
    const { fake, app } = await falApp();
    const job = await app.engine.waitFor((await app.engine.submit({ ...FOX, count: 3, seed: 7 }, requester())).id);
    await app.engine.review(job.id, 2, 'rejected', ME);
    const oldSeed = job.images[1]!.seed;

    const rerolling = await app.engine.reroll(job.id, 2, ME);
    expect(progressView(rerolling, app.engine.progress(rerolling)).title).toBe('Rerolling image 2');
    const done = await app.engine.waitFor(job.id);

    const calls = fake.submits();
    expect(calls).toHaveLength(2);
    const call = body(calls[1]!);
    expect(call.num_images).toBe(1);
    expect(call.seed).not.toBe(8);
    expect(done.state).toBe('completed');
    expect(done.images.map((image) => [image.index, image.review.status, image.file])).toEqual([
      [1, 'pending', 'pending-review/001.png'],
      [2, 'pending', 'pending-review/002.png'],
      [3, 'pending', 'pending-review/003.png'],
    ]);
    expect(done.images[1]!.seed).toBe(call.seed);
    expect(await filesIn(app, job.id, 'rejected')).toEqual(['002.reroll-1.png']);

    const manifest = await readManifest(app, job.id);
    expect(manifest.summary).toMatchObject({ requested: 3, delivered: 3, failed: 0, rejected: 0, pending: 3 });
    expect(manifest.batches[1]).toMatchObject({ seed: call.seed, size: 1, state: 'done', reroll: { image: 2, by: 'Ada' } });
    expect(manifest.images[1]!.rerolledFrom).toEqual([
      expect.objectContaining({ file: 'rejected/002.reroll-1.png', seed: oldSeed, review: expect.objectContaining({ status: 'rejected', reviewedBy: 'Ada' }), rerolledBy: 'Ada' }),
    ]);

    // rejected again and rerolled again: both rejected files are kept
    await app.engine.review(job.id, 2, 'rejected', ME);
    await app.engine.reroll(job.id, 2, ME);
    const twice = await app.engine.waitFor(job.id);
    expect(fake.submits()).toHaveLength(3);
    expect(await filesIn(app, job.id, 'rejected')).toEqual(['002.reroll-1.png', '002.reroll-2.png']);
    expect(twice.images[1]!.rerolledFrom?.map((old) => old.file)).toEqual(['rejected/002.reroll-1.png', 'rejected/002.reroll-2.png']);
  });

  it('refuses an image that is not rejected, and one over the daily cap, making no call', async () => {
    const { fake, app } = await falApp({ TENANT_DAILY_IMAGES: '2' });
    const job = await app.engine.waitFor((await app.engine.submit({ ...FOX, count: 2 }, requester())).id);
    const pending = await rejectionOf(app.engine.reroll(job.id, 1, ME));
    expect(isUserError(pending) && pending.message).toBe('Image 1 is not rejected; only a rejected image can be rerolled.');
    await app.engine.review(job.id, 1, 'rejected', ME);
    const capped = await rejectionOf(app.engine.reroll(job.id, 1, ME));
    expect(isUserError(capped) && capped.code).toBe('quota');
    expect(fake.submits()).toHaveLength(1);
    expect(await filesIn(app, job.id, 'rejected')).toEqual(['001.png']);
    expect((await app.engine.get(job.id))?.state).toBe('completed');
  });
});
