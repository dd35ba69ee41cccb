/**
 * Drafts, then "Upscale approved" (issue 14), in the engine with the local provider (which renders
 * drafts at half size and upscales with sharp) and files on disk: only approved images are sent, the
 * results land in final/, the manifest has both with their costs and the saving against full size.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors.js';
import type { ImagineRequest } from '../../src/core/types.js';
import { gallerySummary, progressView } from '../../src/core/views.js';
import { startFakeFal } from '../fakes/fal.js';
import { buildApp, filesIn, onCleanup, readManifest, rejectionOf, requester } from '../helpers.js';

const DRAFT: ImagineRequest = { prompt: 'a red fox in snow', count: 4, provider: 'local', model: 'local', aspectRatio: '1:1', draft: true };
const ME = { id: 'user-1', name: 'Ada' };
// Priced so that the costs and the saving are known: a draft at full price (the local provider has no draft discount).
const PRICES = JSON.stringify({ local: 0.01, 'local-upscale': 0.002 });

describe('upscale approved', () => {
  it('sends only the approved drafts to the upscaler, keeps the results in final/, and records both with costs', async () => {
    const app = await buildApp({ env: { MODEL_PRICES: PRICES } });
    const job = await app.engine.waitFor((await app.engine.submit(DRAFT, requester())).id);
    expect(job.state).toBe('completed');
    const draft = job.images[0]!;
    // The full-size local image is 768×768; a draft is half of it each way.
    expect([draft.width, draft.height]).toEqual([384, 384]);
    await app.engine.review(job.id, 1, 'approved', ME);
    await app.engine.review(job.id, 3, 'approved', ME);
    await app.engine.review(job.id, 4, 'rejected', ME);

    const reviewed = await app.engine.get(job.id);
    expect(gallerySummary(reviewed!).upscalable).toBe(2);
    const reopened = await app.engine.upscaleApproved(job.id, ME);
    expect(progressView(reopened, app.engine.progress(reopened)).title).toBe('Upscaling 2 approved images');
    const done = await app.engine.waitFor(job.id);

    expect(done.state).toBe('completed');
    expect(done.error).toBeUndefined();
    expect(await filesIn(app, job.id, 'final')).toEqual(['001.png', '003.png']);
    expect(await filesIn(app, job.id, 'approved')).toEqual(['001.png', '003.png']);
    const final = await sharp(`${app.files.jobDir(job.id)}/final/003.png`).metadata();
    expect([final.width, final.height]).toEqual([768, 768]);
    expect(done.images.map((image) => image.final?.file ?? null)).toEqual(['final/001.png', null, 'final/003.png', null]);
    expect(gallerySummary(done).upscalable).toBe(0);
    expect(gallerySummary(done).text).toContain('2 upscaled');

    const manifest = await readManifest(app, job.id);
    expect(manifest.parameters.draft).toBe(true);
    expect(manifest.images.map((image) => image.file)).toEqual(['approved/001.png', 'pending-review/002.png', 'approved/003.png', 'rejected/004.png']);
    expect(manifest.images[0]!.final).toMatchObject({ file: 'final/001.png', width: 768, height: 768, model: 'local-upscale', estimatedCostUsd: 0.002, upscaledBy: 'Ada' });
    expect(manifest.images[1]!.final).toBeNull();
    expect(manifest.batches.filter((b) => b.upscale).map((b) => [b.upscale!.image, b.state])).toEqual([
      [1, 'done'],
      [3, 'done'],
    ]);
    // 4 drafts at $0.01 + 2 upscales at $0.002 = $0.044, against 4 full-size images at $0.01
    expect(manifest.draftCosts).toMatchObject({ draftsUsd: 0.04, upscalesUsd: 0.004, totalUsd: 0.044, fullSizeUsd: 0.04, savedUsd: -0.004 });
    expect(manifest.draftCosts?.summary).toBe('drafts $0.040 + 2 upscales $0.004 = $0.044 vs $0.040 at full size (10% more)');
  });

  it('refuses a job with nothing approved, and one whose approved images are all upscaled, with one line each', async () => {
    const app = await buildApp();
    const job = await app.engine.waitFor((await app.engine.submit({ ...DRAFT, count: 2 }, requester())).id);
    const none = await rejectionOf(app.engine.upscaleApproved(job.id, ME));
    expect(isUserError(none) && none.message).toBe(`Job ${job.id} has no approved images to upscale; approve some first.`);
    await app.engine.review(job.id, 2, 'approved', ME);
    await app.engine.upscaleApproved(job.id, ME);
    await app.engine.waitFor(job.id);
    const again = await rejectionOf(app.engine.upscaleApproved(job.id, ME));
    expect(isUserError(again) && again.message).toBe(`Every approved image of job ${job.id} is upscaled already.`);
    expect(await filesIn(app, job.id, 'final')).toEqual(['002.png']);
  });

  it('counts upscales against the daily cap, and refuses them when it is reached, changing nothing', async () => {
    const app = await buildApp({ env: { TENANT_DAILY_IMAGES: '3' } });
    const job = await app.engine.waitFor((await app.engine.submit({ ...DRAFT, count: 2 }, requester())).id);
    await app.engine.review(job.id, 1, 'approved', ME);
    await app.engine.review(job.id, 2, 'approved', ME);
    const error = await rejectionOf(app.engine.upscaleApproved(job.id, ME));
    expect(isUserError(error) && error.code).toBe('quota');
    const after = await app.engine.get(job.id);
    expect(after!.batches.some((b) => b.upscale)).toBe(false);
    expect(after!.state).toBe('completed');
  });

  it('on fal: drafts asked at a quarter megapixel, and exactly the approved files sent to fal-ai/esrgan, whose results land in final/', async () => {
    const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 2 });
    onCleanup(() => fake.close());
    const app = await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url } });
    const request: ImagineRequest = { ...DRAFT, provider: 'fal', model: 'fal-ai/flux/schnell' };
    const job = await app.engine.waitFor((await app.engine.submit(request, requester())).id);
    expect((fake.submits()[0]!.body as { image_size: unknown }).image_size).toEqual({ width: 512, height: 512 });
    expect(job.images.map((image) => [image.width, image.height])).toEqual(Array(4).fill([512, 512]));
    await app.engine.review(job.id, 2, 'approved', ME);
    await app.engine.review(job.id, 4, 'approved', ME);
    await app.engine.review(job.id, 1, 'rejected', ME);
    const sent = await Promise.all(
      ['approved/002.png', 'approved/004.png'].map(async (file) => createHash('sha256').update(await readFile(`${app.files.jobDir(job.id)}/${file}`)).digest('hex')),
    );
    await app.engine.upscaleApproved(job.id, ME);
    const done = await app.engine.waitFor(job.id);
    // two calls may run at once: compared in a fixed order
    const calls = fake.upscaleCalls().map((call) => [call.model, call.width, call.scale, call.sha256]);
    expect(calls.sort((a, b) => String(a[3]).localeCompare(String(b[3])))).toEqual(
      [...sent].sort().map((sha) => ['fal-ai/esrgan', 512, 2, sha]),
    );
    expect(await filesIn(app, job.id, 'final')).toEqual(['002.png', '004.png']);
    expect(done.images.filter((image) => image.final).map((image) => [image.index, image.final!.width, image.final!.model])).toEqual([
      [2, 1024, 'fal-ai/esrgan'],
      [4, 1024, 'fal-ai/esrgan'],
    ]);
    const manifest = await readManifest(app, job.id);
    expect(manifest.draftCosts?.upscalesUsd).toBeGreaterThan(0);
  });

  it('never serves a draft from the image cache for a full-size request of the same seed, nor the other way', async () => {
    const app = await buildApp();
    const draft = await app.engine.waitFor((await app.engine.submit({ ...DRAFT, count: 1, seed: 5 }, requester())).id);
    const full = await app.engine.waitFor((await app.engine.submit({ ...DRAFT, count: 1, seed: 5, draft: false }, requester())).id);
    expect(full.images[0]!.cached).toBeUndefined();
    expect([draft.images[0]!.width, full.images[0]!.width]).toEqual([384, 768]);
    const again = await app.engine.waitFor((await app.engine.submit({ ...DRAFT, count: 1, seed: 5 }, requester())).id);
    expect(again.images[0]!.cached?.jobId).toBe(draft.id);
  });
});
