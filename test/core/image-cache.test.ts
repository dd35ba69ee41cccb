/**
 * "Don't pay twice": a seeded request that asks for images already delivered is served from their
 * files, with no provider call (the real @fal-ai/client against the fake fal queue, whose submits are
 * counted), and the manifest says where each copy came from. Unseeded requests and CACHE=off call.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import type { App } from '../../src/app.js';
import { transition, type CachedOutput, type StepContext } from '../../src/core/batch-state.js';
import { planBatches } from '../../src/core/planner.js';
import { loadConfig } from '../../src/config.js';
import type { ImagineRequest, Job } from '../../src/core/types.js';
import { startFakeFal, type FakeFal } from '../fakes/fal.js';
import { buildApp, filesIn, onCleanup, readManifest, requester } from '../helpers.js';

const FOX: ImagineRequest = { prompt: 'a red fox in snow', count: 6, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' };

async function falApp(env: Record<string, string> = {}): Promise<{ fake: FakeFal; app: App }> {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 10 });
  onCleanup(() => fake.close());
  return { fake, app: await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url, ...env } }) };
}

async function run(app: App, request: ImagineRequest): Promise<Job> {
  const done = await app.engine.waitFor((await app.engine.submit(request, requester())).id);
  expect(done.state).toBe('completed');
  return done;
}

const bytesOf = (app: App, jobId: string, file: string) => readFile(path.join(app.files.jobDir(jobId), file));

describe('image cache', () => {
  it('serves a repeated seeded request from the first job’s files with no provider call, marked cached in the manifest', async () => {
    const { fake, app } = await falApp();
    const first = await run(app, { ...FOX, seed: 42 });
    expect(fake.submits()).toHaveLength(2);

    const again = await run(app, { ...FOX, seed: 42 });
    expect(fake.submits()).toHaveLength(2);
    expect(again.images).toHaveLength(6);
    // copies, in the new job's own folder, byte for byte the first job's
    expect(await filesIn(app, again.id, 'pending-review')).toEqual(['001.png', '002.png', '003.png', '004.png', '005.png', '006.png']);
    for (const image of again.images) {
      expect((await bytesOf(app, again.id, image.file)).equals(await bytesOf(app, first.id, image.file))).toBe(true);
    }
    const manifest = await readManifest(app, again.id);
    expect(manifest.summary).toMatchObject({ requested: 6, delivered: 6, cached: 6 });
    expect(manifest.images.map((image) => [image.index, image.cached, image.cachedFrom])).toEqual(
      first.images.map((image) => [image.index, true, { jobId: first.id, file: image.file }]),
    );
    expect(manifest.batches.map((batch) => [batch.cached, batch.attempts, batch.providerRequestId])).toEqual([
      [true, 0, null],
      [true, 0, null],
    ]);
    expect((await readManifest(app, first.id)).images.every((image) => !image.cached)).toBe(true);
  });

  it('finds an image its review moved, and copies it, so reviewing the copy leaves the original where it is', async () => {
    const { fake, app } = await falApp();
    const first = await run(app, { ...FOX, count: 2, seed: 7 });
    await app.engine.review(first.id, 1, 'approved', { id: 'u1' });
    await app.engine.review(first.id, 2, 'rejected', { id: 'u1' });

    const again = await run(app, { ...FOX, count: 2, seed: 7 });
    expect(fake.submits()).toHaveLength(1);
    expect(again.images.map((image) => image.cached)).toEqual([
      { jobId: first.id, file: 'pending-review/001.png' },
      { jobId: first.id, file: 'pending-review/002.png' },
    ]);
    await app.engine.review(again.id, 1, 'rejected', { id: 'u2' });
    expect(await filesIn(app, first.id, 'approved')).toEqual(['001.png']);
    expect(await filesIn(app, again.id, 'rejected')).toEqual(['001.png']);
  });

  it('calls for a batch unless every image of it is cached: another count is another call', async () => {
    const { fake, app } = await falApp();
    await run(app, { ...FOX, count: 4, seed: 9 });
    // images 1–4 are the same call (seed 9, 4 images); images 5–6 are a call never made
    const more = await run(app, { ...FOX, count: 6, seed: 9 });
    expect(fake.submits().map((call) => (call.body as { num_images: number }).num_images)).toEqual([4, 2]);
    expect(more.batches.map((batch) => batch.cached ?? false)).toEqual([true, false]);
    // two images asked of a 4-image call's seed: not the same call, so not the same pictures
    await run(app, { ...FOX, count: 2, seed: 9 });
    expect(fake.submits()).toHaveLength(3);
  });

  it('does not serve an unseeded request, even when its drawn seed matches a cached one', async () => {
    // the engine draws seeds with Math.random: pin it, so the drawn seed is the one cached below
    const random = vi.spyOn(Math, 'random').mockReturnValue(0.25);
    onCleanup(() => random.mockRestore());
    const { fake, app } = await falApp();
    const drawn = Math.floor(0.25 * 2 ** 32);
    await run(app, { ...FOX, count: 2, seed: drawn });
    const unseeded = await run(app, { ...FOX, count: 2 });
    expect(unseeded.request.seed).toBe(drawn);
    expect(fake.submits()).toHaveLength(2);
    expect(unseeded.images.every((image) => image.cached === undefined)).toBe(true);
    expect((await readManifest(app, unseeded.id)).summary.cached).toBe(0);
  });

  it('serves an explicit seed taken from an unseeded job’s manifest (its images were indexed too)', async () => {
    const { fake, app } = await falApp();
    const unseeded = await run(app, { ...FOX, count: 2 });
    const again = await run(app, { ...FOX, count: 2, seed: unseeded.request.seed });
    expect(fake.submits()).toHaveLength(1);
    expect(again.images.map((image) => image.cached?.jobId)).toEqual([unseeded.id, unseeded.id]);
  });

  it('misses on any other parameter: prompt, negative, aspect ratio, format', async () => {
    const { fake, app } = await falApp();
    const base = { ...FOX, count: 1, seed: 5 };
    await run(app, base);
    for (const variant of [{ prompt: 'a grey fox in snow' }, { negative: 'blur' }, { aspectRatio: '16:9' as const }, { format: 'webp' as const }]) {
      await run(app, { ...base, ...variant });
    }
    expect(fake.submits()).toHaveLength(5);
    await run(app, base);
    expect(fake.submits()).toHaveLength(5);
  });

  it('calls the provider again when the cached file is gone', async () => {
    const { fake, app } = await falApp();
    const first = await run(app, { ...FOX, count: 1, seed: 3 });
    await import('node:fs/promises').then(({ rm }) => rm(path.join(app.files.jobDir(first.id), first.images[0]!.file)));
    const again = await run(app, { ...FOX, count: 1, seed: 3 });
    expect(fake.submits()).toHaveLength(2);
    expect(again.images[0]!.cached).toBeUndefined();
  });

  it('CACHE=off makes the call every time', async () => {
    const { fake, app } = await falApp({ CACHE: 'off' });
    await run(app, { ...FOX, count: 2, seed: 42 });
    const again = await run(app, { ...FOX, count: 2, seed: 42 });
    expect(fake.submits()).toHaveLength(2);
    expect((await readManifest(app, again.id)).summary.cached).toBe(0);
  });
});

describe('the batch machine, served from the cache', () => {
  const T0 = Date.parse('2026-11-27T12:00:00.000Z');
  const context = (extra: Partial<StepContext> = {}): StepContext => ({ now: T0, settings: { maxAttempts: 3, callTimeoutMs: 60_000 }, ...extra });
  const copies = (n: number, first = 5): CachedOutput[] =>
    Array.from({ length: n }, (_, output) => ({
      file: `pending-review/00${first + output}.png`,
      width: 64,
      height: 64,
      contentType: 'image/png',
      nsfw: false,
      seed: 46,
      output,
      index: first + output,
      from: { jobId: 'earlier', file: `approved/00${first + output}.png` },
    }));
  /** the second batch of an 8-image job (images 5…8), as the machine leaves it when it decides to submit */
  const aboutToSend = () => transition(planBatches(8, 4, 42)[1]!, { type: 'start' }, context()).batch;

  it('ends the batch done with the copies, giving back the try it counted for the call', () => {
    const step = transition(aboutToSend(), { type: 'cached', images: copies(4) }, context());
    expect(step.decision).toEqual({ kind: 'done' });
    expect(step.batch).toMatchObject({ state: 'done', delivered: 4, attempts: 0, cached: true, requestIds: [] });
    expect(step.batch).not.toHaveProperty('submittedAt');
    expect(step.images?.map((image) => [image.index, image.output, image.cached?.file])).toEqual([
      [5, 0, 'approved/005.png'],
      [6, 1, 'approved/006.png'],
      [7, 2, 'approved/007.png'],
      [8, 3, 'approved/008.png'],
    ]);
  });

  it('sends the call after all when the copies do not cover every image it was about to ask for', () => {
    const step = transition(aboutToSend(), { type: 'cached', images: copies(3) }, context());
    expect(step.decision).toEqual({ kind: 'submit', count: 4, seed: 46 });
    expect(step.images).toBeUndefined();
  });

  it('is cancelled like any batch when its job was', () => {
    const step = transition(aboutToSend(), { type: 'cached', images: copies(4) }, context({ canceled: true }));
    expect(step.batch.state).toBe('canceled');
    expect(step.decision).toEqual({ kind: 'cancel' });
  });
});

describe('CACHE', () => {
  it('is on unless set off, and refuses anything else in one line', () => {
    expect(loadConfig({}).cache).toBe(true);
    expect(loadConfig({ CACHE: 'off' }).cache).toBe(false);
    expect(() => loadConfig({ CACHE: 'maybe' })).toThrow('CACHE: expected on or off, got "maybe"');
  });
});
