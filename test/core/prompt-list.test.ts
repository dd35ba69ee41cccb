/**
 * Many prompts in one job (issue 14): the real @fal-ai/client against the fake fal queue, whose submit
 * bodies show which prompt each call drew; files, gallery pages and the manifest show where each went.
 */
import { describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { ImagineRequest, PromptEntry } from '../../src/core/types.js';
import { galleryPage, promptHeading } from '../../src/core/views.js';
import { planJob } from '../../src/core/planner.js';
import { startFakeFal, type FakeFal } from '../fakes/fal.js';
import { buildApp, filesIn, onCleanup, readManifest, requester } from '../helpers.js';

const entry = (prompt: string, count: number, ...lines: [number, number][]): PromptEntry => ({
  prompt,
  count,
  lines: lines.length > 0 ? lines.map(([line, n]) => ({ line, count: n })) : [{ line: 1, count }],
});

function listRequest(prompts: PromptEntry[], extra: Partial<ImagineRequest> = {}): ImagineRequest {
  return {
    prompt: prompts[0]!.prompt,
    count: prompts.reduce((sum, p) => sum + p.count, 0),
    prompts,
    provider: 'fal',
    model: 'fal-ai/flux/schnell',
    aspectRatio: '1:1',
    ...extra,
  };
}

async function falApp(env: Record<string, string> = {}): Promise<{ fake: FakeFal; app: App }> {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 2 });
  onCleanup(() => fake.close());
  const app = await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url, FAL_CONCURRENCY: '1', ...env } });
  return { fake, app };
}

const body = (call: { body: unknown }) => call.body as { prompt: string; num_images: number; seed: number };

describe('a prompt list', () => {
  it('plans each prompt apart: 3 prompts × 4 images are ⌈4/4⌉ = 1 call each, never mixing two prompts', () => {
    const batches = planJob(listRequest([entry('fox', 4), entry('owl', 4), entry('cat', 4)]), 4, 10);
    expect(batches.map((b) => [b.index, b.start, b.size, b.seed, b.prompt])).toEqual([
      [0, 0, 4, 10, 0],
      [1, 4, 4, 14, 1],
      [2, 8, 4, 18, 2],
    ]);
    // 5 + 2 with 4 per call: the second entry starts its own call, it does not fill the first's.
    const uneven = planJob(listRequest([entry('fox', 5), entry('owl', 2)]), 4, 0);
    expect(uneven.map((b) => [b.start, b.size, b.prompt])).toEqual([
      [0, 4, 0],
      [4, 1, 0],
      [5, 2, 1],
    ]);
  });

  it('runs 3 prompts × 4 images as one job: each call draws its prompt, one gallery grouped by prompt, every prompt mapped to its files', async () => {
    const { fake, app } = await falApp();
    const request = listRequest([entry('a red fox', 4), entry('a blue owl', 4, [2, 4]), entry('a green cat', 4, [3, 4])], { seed: 7 });
    const job = await app.engine.waitFor((await app.engine.submit(request, requester())).id);
    expect(job.state).toBe('completed');
    expect(fake.submits().map((call) => [body(call).prompt, body(call).num_images, body(call).seed])).toEqual([
      ['a red fox', 4, 7],
      ['a blue owl', 4, 11],
      ['a green cat', 4, 15],
    ]);
    expect(job.images.map((image) => image.prompt)).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    expect(await filesIn(app, job.id, 'pending-review')).toHaveLength(12);

    // A gallery page of 10 (Discord's limit) still holds one prompt's images only, and names it.
    const pages = [1, 2, 3].map((n) => galleryPage(job, n, 10));
    expect(pages.map((page) => [page.pages, page.images.map((image) => image.index)])).toEqual([
      [3, [1, 2, 3, 4]],
      [3, [5, 6, 7, 8]],
      [3, [9, 10, 11, 12]],
    ]);
    expect(pages[1]!.heading).toBe('Prompt 2/3 · line 2: “a blue owl”');

    const manifest = await readManifest(app, job.id);
    expect(manifest.prompts?.map((p) => [p.line, p.prompt, p.files])).toEqual([
      [1, 'a red fox', ['pending-review/001.png', 'pending-review/002.png', 'pending-review/003.png', 'pending-review/004.png']],
      [2, 'a blue owl', ['pending-review/005.png', 'pending-review/006.png', 'pending-review/007.png', 'pending-review/008.png']],
      [3, 'a green cat', ['pending-review/009.png', 'pending-review/010.png', 'pending-review/011.png', 'pending-review/012.png']],
    ]);
    expect(manifest.images.map((image) => image.prompt)).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
  });

  it('calls identical lines once: both lines map to the one entry’s files, each to as many as it asked for', async () => {
    const { fake, app } = await falApp();
    // lines 1 and 3 were the same prompt (merged by the parser: count = the larger, 3)
    const request = listRequest([entry('a red fox', 3, [1, 3], [3, 2]), entry('a blue owl', 1, [2, 1])]);
    const job = await app.engine.waitFor((await app.engine.submit(request, requester())).id);
    expect(fake.submits().map((call) => body(call).prompt)).toEqual(['a red fox', 'a blue owl']);
    const manifest = await readManifest(app, job.id);
    expect(manifest.prompts?.map((p) => [p.line, p.count, p.files.length])).toEqual([
      [1, 3, 3],
      [2, 1, 1],
      [3, 2, 2],
    ]);
    expect(promptHeading(job.request, 0)).toBe('Prompt 1/2 · lines 1 and 3: “a red fox”');
  });

  it('a retried image of a prompt list is asked again with its own prompt', async () => {
    const { fake, app } = await falApp({ PROVIDER_MAX_ATTEMPTS: '1' });
    // one call at a time, in plan order: the second submit is the owl's
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' }, after: 1 });
    const job = await app.engine.waitFor((await app.engine.submit(listRequest([entry('a red fox', 2), entry('a blue owl', 2)]), requester())).id);
    expect(job.images.map((image) => image.index)).toEqual([1, 2]);
    await app.engine.retryFailed(job.id, { id: 'user-1' });
    const done = await app.engine.waitFor(job.id);
    expect(fake.submits().at(-1) && body(fake.submits().at(-1)!).prompt).toBe('a blue owl');
    expect(done.images.map((image) => [image.index, image.prompt])).toEqual([
      [1, 0],
      [2, 0],
      [3, 1],
      [4, 1],
    ]);
  });

  it('serves a repeated seeded prompt-list job from the cache, each image from its own prompt’s earlier file', async () => {
    const { fake, app } = await falApp();
    const request = listRequest([entry('a red fox', 2), entry('a blue owl', 2)], { seed: 42 });
    await app.engine.waitFor((await app.engine.submit(request, requester())).id);
    const again = await app.engine.waitFor((await app.engine.submit(request, requester())).id);
    expect(fake.submits()).toHaveLength(2);
    expect(again.images.every((image) => image.cached !== undefined)).toBe(true);
    // A different list with the owl first is not the same images: it is called.
    await app.engine.waitFor((await app.engine.submit(listRequest([entry('a blue owl', 2), entry('a red fox', 2)], { seed: 42 }), requester())).id);
    expect(fake.submits().map((call) => body(call).prompt).slice(2)).toEqual(['a blue owl', 'a red fox']);
  });
});
