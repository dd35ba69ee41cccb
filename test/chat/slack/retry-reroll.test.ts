/**
 * Slack's "Retry N failed" (on the finished progress message) and "Reroll" (on a rejected image):
 * Bolt against the fake Slack Web API, the real @fal-ai/client against the fake fal queue.
 */
import { describe, expect, it } from 'vitest';
import { REFUSAL } from '../../../src/core/actions.js';
import { isJobFinished } from '../../../src/core/engine.js';
import { startFakeFal, type FakeFal } from '../../fakes/fal.js';
import { filesIn, onCleanup } from '../../helpers.js';
import { pollUntil } from '../../fakes/http.js';
import { button, buttonsOf, factsOf, slackHarness, type Harness } from './harness.js';

async function falHarness(): Promise<{ fal: FakeFal; h: Harness }> {
  const fal = await startFakeFal({ key: 'fal-test-key', latencyMs: 5 });
  onCleanup(() => fal.close());
  const h = await slackHarness({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fal.url, FAL_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '1', CACHE: 'off' } });
  return { fal, h };
}

const bodies = (fal: FakeFal) => fal.submits().map((call) => call.body as { num_images: number; seed: number });

/** Resolves once the job has ended with its gallery posted and `check` holds for its image count. */
async function redelivered(h: Harness, jobId: string, check: (imageCount: number) => boolean) {
  return pollUntil(
    () => h.app.engine.get(jobId),
    (job) => job !== undefined && isJobFinished(job) && factsOf(job)?.delivered === true && check(job.images.length),
    { timeoutMs: 10_000, intervalMs: 20 },
  );
}

describe('Slack retry and reroll buttons', () => {
  it('offers "Retry 2 failed", refuses someone else, and asks again for exactly the failed images', async () => {
    const { fal, h } = await falHarness();
    fal.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' }, after: 1 });
    await h.imagine('a red fox --count 6 --provider fal --seed 100');
    const { ts, jobId } = await h.progressPost();
    const { facts } = await h.delivered(jobId);
    const progress = () => h.fake.message(facts.channel, ts)!;
    const retry = button(progress(), 'Retry 2 failed');

    const since = h.fake.lastSeq;
    await h.click(progress(), retry, 'U2');
    const refusal = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === 'U2', { since });
    expect(String(refusal.args.text)).toBe(REFUSAL);
    expect(fal.submits()).toHaveLength(2);

    await h.click(progress(), retry, 'U1');
    await redelivered(h, jobId, (n) => n === 6);
    expect(bodies(fal).map((b) => [b.num_images, b.seed])).toEqual([
      [4, 100],
      [2, 104],
      [2, 104],
    ]);
    await pollUntil(
      async () => buttonsOf(progress()).map((b) => b.text.text),
      (labels) => !labels.some((label) => label.startsWith('Retry')),
      { timeoutMs: 5_000, intervalMs: 20 },
    );
  });

  it('shows Reroll on a rejected image, which makes one new image into its slot and keeps the rejected file', async () => {
    const { fal, h } = await falHarness();
    await h.imagine('a vase --count 2 --provider fal');
    const { jobId } = await h.progressPost();
    const { facts } = await h.delivered(jobId);
    const pageTs = facts.pages[0]!.ts!;
    const page = () => h.fake.message(facts.channel, pageTs)!;
    expect(() => button(page(), 'Reroll', 2)).toThrow();
    await h.click(page(), button(page(), 'Reject', 2), 'U1');
    await pollUntil(async () => page(), (message) => buttonsOf(message).some((b) => b.text.text === 'Reroll'), { timeoutMs: 5_000, intervalMs: 20 });

    await h.click(page(), button(page(), 'Reroll', 2), 'U1');
    // its end: the slot holds the new image, and a new gallery page went out
    const { value: job } = await pollUntil(
      () => h.app.engine.get(jobId),
      (j) => j !== undefined && isJobFinished(j) && j.images[1]?.rerolledFrom !== undefined && factsOf(j)?.delivered === true,
      { timeoutMs: 10_000, intervalMs: 20 },
    );
    expect(factsOf(job!)?.pages[0]?.ts).not.toBe(pageTs);
    expect(bodies(fal).map((b) => b.num_images)).toEqual([2, 1]);
    expect(await filesIn(h.app, jobId, 'rejected')).toEqual(['002.reroll-1.png']);
    expect((await h.app.engine.get(jobId))?.images[1]).toMatchObject({ file: 'pending-review/002.png', review: { status: 'pending' }, seed: bodies(fal)[1]!.seed });
  });
});
