/**
 * "Retry N failed" on a finished job's progress message and "Reroll" on a rejected image, on Discord:
 * discord.js against the fake Discord, the real @fal-ai/client against the fake fal queue.
 */
import { describe, expect, it } from 'vitest';
import { decodeAction, encodeAction, REFUSAL } from '../../../src/core/actions.js';
import { startFakeFal, type FakeFal } from '../../fakes/fal.js';
import { filesIn, onCleanup } from '../../helpers.js';
import { PRIVATE, answerOf, customIds, galleryMessages, jobIdOf, progressMessageOf, startBot, waitForContent } from './harness.js';

async function falBot() {
  const fal = await startFakeFal({ key: 'fal-test-key', latencyMs: 5 });
  onCleanup(() => fal.close());
  const bot = await startBot({
    env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fal.url, FAL_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '1', CACHE: 'off' },
  });
  return { fal, ...bot };
}

const bodies = (fal: FakeFal) => fal.submits().map((call) => call.body as { num_images: number; seed: number });
const STRANGER = { id: '222222222222222222', username: 'stranger' };

describe('Discord retry and reroll buttons', () => {
  it('offers "Retry 2 failed" when the job ends, refuses a stranger, and makes exactly the failed images into a new gallery', async () => {
    const { fal, fake, app } = await falBot();
    fal.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' }, after: 1 });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a lighthouse', count: 6, provider: 'fal', seed: 100 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    await waitForContent(fake, progressId, 'Done, with failures: 4 of 6 images');
    const retry = encodeAction({ kind: 'retry', jobId });
    await fake.waitFor((f) => customIds(f.message(progressId)).includes(retry) || undefined, { description: 'the retry button' });
    expect(JSON.stringify(fake.message(progressId)?.components)).toContain('Retry 2 failed');

    const stranger = fake.pressButton({ customId: retry, messageId: progressId, user: STRANGER });
    expect((await answerOf(fake, stranger.id))[0]?.data).toMatchObject({ content: REFUSAL, flags: PRIVATE });
    expect(fal.submits()).toHaveLength(2);

    const press = fake.pressButton({ customId: retry, messageId: progressId });
    expect((await answerOf(fake, press.id))[0]?.type).toBe(6);
    // a second gallery, with all 6 images; the progress message offers no retry any more
    await fake.waitFor((f) => (galleryMessages(f, jobId).some((m) => m.attachments.length === 6) ? true : undefined), { description: 'a new gallery of 6' });
    await waitForContent(fake, progressId, 'Done: 6 images');
    expect(customIds(fake.message(progressId))).not.toContain(retry);
    expect(bodies(fal).map((b) => [b.num_images, b.seed])).toEqual([
      [4, 100],
      [2, 104],
      [2, 104],
    ]);
    expect((await app.engine.get(jobId))?.images.map((image) => [image.index, image.retried?.by ?? null])).toEqual([
      [1, null],
      [2, null],
      [3, null],
      [4, null],
      [5, 'Tester'],
      [6, 'Tester'],
    ]);
  });

  it('turns a rejected image’s second button into Reroll, which makes one new image into its slot and keeps the rejected file', async () => {
    const { fal, fake, app } = await falBot();
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a vase', count: 2, provider: 'fal' } });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    const page = await fake.waitFor((f) => galleryMessages(f, jobId).find((m) => m.attachments.length === 2), { description: 'the gallery' });
    const reject = fake.pressButton({ customId: encodeAction({ kind: 'review', jobId, image: 2, status: 'rejected' }), messageId: page.id });
    expect((await answerOf(fake, reject.id))[0]?.type).toBe(7);
    const reroll = encodeAction({ kind: 'reroll', jobId, image: 2 });
    expect(customIds(fake.message(page.id)).map((id) => decodeAction(id)?.kind)).toEqual(['review', 'review', 'review', 'reroll']);
    expect(customIds(fake.message(page.id))).toContain(reroll);

    const stranger = fake.pressButton({ customId: reroll, messageId: page.id, user: STRANGER });
    expect((await answerOf(fake, stranger.id))[0]?.data).toMatchObject({ content: REFUSAL, flags: PRIVATE });

    const press = fake.pressButton({ customId: reroll, messageId: page.id });
    expect((await answerOf(fake, press.id))[0]?.type).toBe(6);
    await fake.waitFor((f) => (galleryMessages(f, jobId).length === 2 ? true : undefined), { description: 'a new gallery page' });
    const newest = galleryMessages(fake, jobId).at(-1)!;
    expect(newest.attachments.map((a) => a.filename)).toEqual(['001.png', '002.png']);
    expect(newest.content).toContain('`#2` ⏳');
    expect(bodies(fal)).toHaveLength(2);
    expect(bodies(fal)[1]!.num_images).toBe(1);
    expect(await filesIn(app, jobId, 'rejected')).toEqual(['002.reroll-1.png']);
    expect((await app.engine.get(jobId))?.images[1]?.rerolledFrom?.map((old) => old.file)).toEqual(['rejected/002.reroll-1.png']);
  });
});
