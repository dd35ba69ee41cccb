/**
 * The playground's "Retry N failed" and "Reroll": its HTTP API against the real engine, with the real
 * @fal-ai/client against the fake fal queue.
 */
import { describe, expect, it } from 'vitest';
import { startPlayground } from '../../../src/chat/playground/index.js';
import { startFakeFal } from '../../fakes/fal.js';
import { buildApp, filesIn, onCleanup, requester } from '../../helpers.js';

const JSON_TYPE = { 'content-type': 'application/json' };

async function playground() {
  const fal = await startFakeFal({ key: 'fal-test-key', latencyMs: 5 });
  onCleanup(() => fal.close());
  const app = await buildApp({
    env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fal.url, FAL_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '1', CACHE: 'off' },
  });
  const pg = await startPlayground(app, { port: 0 });
  onCleanup(() => pg.stop());
  const post = async (path: string, body: unknown = {}) => {
    const response = await fetch(`${pg.url}${path}`, { method: 'POST', headers: JSON_TYPE, body: JSON.stringify(body) });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };
  return { fal, app, pg, post };
}

const bodies = (fal: Awaited<ReturnType<typeof startFakeFal>>) => fal.submits().map((call) => call.body as { num_images: number; seed: number });

describe('playground retry and reroll', () => {
  it('retries exactly the failed images, and refuses another platform’s job', async () => {
    const { fal, app, post } = await playground();
    fal.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' } });
    const { body } = await post('/api/command', { text: '/imagine a red fox --count 6 --provider fal --seed 100' });
    const first = await app.engine.waitFor(body.job.id);
    expect(first.images.map((image) => image.index)).toEqual([5, 6]);

    // a guild's job in the same store: not the page's to retry
    const foreign = await app.engine.waitFor((await app.engine.submit({ ...first.request, count: 1 }, requester('guild-9'))).id);
    const calls = fal.submits().length;
    const refused = await post(`/api/jobs/${foreign.id}/retry`);
    expect(refused.status).toBe(403);
    expect(refused.body.error).toBe(`Forbidden: job ${foreign.id} is not a playground job; it can only be reviewed where it was made.`);
    expect(fal.submits()).toHaveLength(calls);

    const retried = await post(`/api/jobs/${first.id}/retry`);
    expect(retried.status).toBe(200);
    expect(retried.body.job.summary.retryable).toBe(4);
    const done = await app.engine.waitFor(first.id);
    expect(done.images.map((image) => image.index)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(bodies(fal).slice(calls).map((b) => [b.num_images, b.seed])).toEqual([[4, 100]]);
    // nothing left to retry: one clear line
    expect(await post(`/api/jobs/${first.id}/retry`)).toEqual({ status: 404, body: { error: `Job ${first.id} has no failed images to retry.` } });
  });

  it('rerolls a rejected image into its slot with a new seed, under a new URL, the rejected file kept', async () => {
    const { fal, app, pg, post } = await playground();
    const { body } = await post('/api/command', { text: '/imagine a vase --count 2 --provider fal' });
    await app.engine.waitFor(body.job.id);
    expect(await post(`/api/jobs/${body.job.id}/images/1/reroll`)).toEqual({
      status: 409,
      body: { error: 'Image 1 is not rejected; only a rejected image can be rerolled.' },
    });
    expect((await post(`/api/jobs/${body.job.id}/images/1/review`, { status: 'rejected' })).status).toBe(200);
    expect((await post(`/api/jobs/${body.job.id}/images/1/reroll`)).status).toBe(200);
    const done = await app.engine.waitFor(body.job.id);

    expect(bodies(fal).map((b) => b.num_images)).toEqual([2, 1]);
    expect(done.images[0]).toMatchObject({ index: 1, file: 'pending-review/001.png', seed: bodies(fal)[1]!.seed, review: { status: 'pending' } });
    expect(await filesIn(app, body.job.id, 'rejected')).toEqual(['001.reroll-1.png']);
    const state = (await (await fetch(`${pg.url}/api/state`)).json()) as { entries: { job: { images: { url: string; rerolls: number }[] } }[] };
    const image = state.entries.at(-1)!.job.images[0]!;
    expect(image).toMatchObject({ url: `/images/${body.job.id}/pending-review/001.png?v=1`, rerolls: 1 });
    const served = await fetch(`${pg.url}${image.url}`);
    expect(served.headers.get('content-type')).toBe('image/png');
    const kept = await fetch(`${pg.url}/images/${body.job.id}/rejected/001.reroll-1.png`);
    expect(kept.status).toBe(200);
  });
});
