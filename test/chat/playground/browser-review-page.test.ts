/**
 * The playground offers the review page for its own jobs (issue 16, item 4): the card's "Review in
 * browser" opens /review/<job> on the playground's own loopback server, without a token; a review
 * made there reaches the card live. A job of another place is refused there, as everywhere in the
 * playground.
 */
import { describe, expect, it } from 'vitest';
import { startPlayground } from '../../../src/chat/playground/index.js';
import { buildApp, filesIn, onCleanup, requester } from '../../helpers.js';
import { openPlayground, sharedBrowser } from './chromium.js';

const { plan, browser } = sharedBrowser();

describe.skipIf(!('run' in plan))('the playground’s review page in Chromium', () => {
  it('opens the review page from a card, and a review made there reaches the card live', async () => {
    const app = await buildApp();
    const pg = await startPlayground(app, { port: 0 });
    onCleanup(() => pg.stop());
    const page = await openPlayground(browser(), pg.url);
    await page.fill('#command', '/imagine a lighthouse --count 6');
    await page.press('#command', 'Enter');
    await page.locator('.bubble.job[data-state="completed"]').waitFor({ timeout: 20_000 });
    const jobId = (await page.locator('.bubble.job').getAttribute('data-job'))!;
    const link = page.locator('[data-testid="review-link"]');
    expect(await link.getAttribute('href')).toBe(`/review/${jobId}`);

    const [review] = await Promise.all([page.context().waitForEvent('page'), link.click()]);
    await review.locator('body[data-live="true"]').waitFor({ timeout: 10_000 });
    expect(await review.locator('[data-testid="tile"]').count()).toBe(6);
    await review.locator('[data-testid="tile"][data-index="1"]').focus();
    await review.keyboard.press('a');
    await review.keyboard.press('r');

    await expect.poll(() => filesIn(app, jobId, 'approved')).toEqual(['001.png']);
    await expect.poll(() => filesIn(app, jobId, 'rejected')).toEqual(['002.png']);
    // The playground's card follows, through the same engine event as every chat message.
    await page.locator('.card[data-index="1"] .status', { hasText: 'approved' }).waitFor({ timeout: 10_000 });
    await page.locator('.card[data-index="2"] .status', { hasText: 'rejected' }).waitFor({ timeout: 10_000 });
    expect((await app.engine.get(jobId))!.images[0]!.review.by).toBeTruthy();
    await review.close();
  });

  it('refuses the review page of a job that is not the playground’s', async () => {
    const app = await buildApp();
    const pg = await startPlayground(app, { port: 0 });
    onCleanup(() => pg.stop());
    const guildJob = await app.engine.waitFor((await app.engine.submit({ prompt: 'a fox', count: 2, provider: 'local', model: 'local', aspectRatio: '1:1' }, requester())).id);
    const state = await fetch(`${pg.url}/review/${guildJob.id}/state`);
    expect(state.status).toBe(403);
    const review = await fetch(`${pg.url}/review/${guildJob.id}/review`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: pg.url },
      body: JSON.stringify({ images: [1], status: 'approved' }),
    });
    expect(review.status).toBe(403);
    expect(await filesIn(app, guildJob.id, 'approved')).toEqual([]);
  });
});
