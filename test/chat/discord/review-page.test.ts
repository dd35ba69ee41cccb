/**
 * Issue 16 end to end on Discord: a big job's contact sheet offers "Review in browser", the private
 * link opens the review page (the bot's public server, real Chromium), ten images are reviewed with the
 * keyboard and a selection bulk-rejected there, and the manifest, the Discord summary and the contact
 * sheet's own message all show those reviews — made in the browser, not in Discord.
 */
import { setTimeout } from 'node:timers/promises';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { encodeAction } from '../../../src/core/actions.js';
import { silentLogger } from '../../../src/core/ports.js';
import { Thumbnails } from '../../../src/store/thumbnails.js';
import { reviewRoutes } from '../../../src/web/review-page.js';
import { startWebServer } from '../../../src/web/server.js';
import { filesIn, freePort, onCleanup, readManifest } from '../../helpers.js';
import { sharedBrowser } from '../playground/chromium.js';
import { answerOf, jobIdIn, jobIdOf, progressMessageOf, startBot } from './harness.js';

const { plan, browser } = sharedBrowser();
const SECRET = 'a-review-secret-for-the-discord-browser-test-0123';


describe.skipIf(!('run' in plan))('reviewing a Discord job on the review page', () => {
  it('reviews 10 images with the keyboard and bulk-rejects 3 in the browser; the manifest, the summary and the sheet follow', async () => {
    const port = await freePort();
    const publicUrl = `http://127.0.0.1:${port}`;
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '20', PUBLIC_URL: publicUrl, REVIEW_SECRET: SECRET } });
    const { fake, app } = bot;
    const review = app.config.review!;
    const web = await startWebServer({ port, host: '127.0.0.1', log: silentLogger });
    onCleanup(() => web.stop());
    web.add(...reviewRoutes({ engine: app.engine, files: app.files, thumbnails: new Thumbnails(), access: { kind: 'token', secret: review.secret, publicUrl: review.baseUrl }, now: Date.now, log: silentLogger }));

    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a catalog of chairs', count: 30 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    const sheetsOf = () => fake.messages().filter((m) => m.content.startsWith('**Contact sheet') && jobIdIn(m) === jobId);
    await fake.waitFor((f) => (f.messages().length > 0 && sheetsOf().length === 2) || undefined, { timeoutMs: 30_000, description: 'two contact sheets' });
    for (let delivered = false; !delivered; await setTimeout(10)) {
      delivered = ((await app.engine.get(jobId))?.chat?.['discord'] as { delivered?: boolean } | undefined)?.delivered === true;
    }
    const first = sheetsOf()[0]!;

    const press = fake.pressButton({ customId: encodeAction({ kind: 'browser', jobId }), messageId: first.id });
    const [answer] = await answerOf(fake, press.id);
    const link = /<(http:\/\/127\.0\.0\.1:\d+\/review\/[^>]+)>/.exec(String(answer?.data?.['content']))?.[1];
    expect(link).toBeDefined();

    const context = await browser().newContext({ viewport: { width: 1280, height: 860 } });
    onCleanup(() => context.close());
    const page: Page = await context.newPage();
    page.setDefaultTimeout(8_000);
    await page.goto(link!);
    await page.locator('body[data-live="true"]').waitFor();
    expect(page.url()).toBe(`${publicUrl}/review/${jobId}`);
    expect(await page.locator('[data-testid="tile"]').count()).toBe(30);

    // Ten reviews with the keyboard: each key reviews the focused tile and moves to the next.
    await page.locator('[data-testid="tile"][data-index="1"]').focus();
    for (const key of ['a', 'a', 'r', 'a', 'a', 'r', 'a', 'a', 'a', 'r']) await page.keyboard.press(key);
    // A selection of three bulk-rejected.
    for (const n of [21, 22, 23]) await page.locator(`[data-testid="tile"][data-index="${n}"]`).click({ modifiers: ['Control'] });
    await page.locator('[data-testid="bulk-reject"]').click();

    const approved = [1, 2, 4, 5, 7, 8, 9];
    const rejected = [3, 6, 10, 21, 22, 23];
    const names = (numbers: number[]) => numbers.map((n) => `${String(n).padStart(3, '0')}.png`);
    await expect.poll(() => filesIn(app, jobId, 'rejected'), { timeout: 10_000 }).toEqual(names(rejected));
    expect(await filesIn(app, jobId, 'approved')).toEqual(names(approved));
    const manifest = await readManifest(app, jobId);
    expect(manifest.images.filter((i) => i.review.status === 'approved').map((i) => i.index)).toEqual(approved);
    expect(manifest.images.filter((i) => i.review.status === 'rejected').map((i) => i.index)).toEqual(rejected);
    expect(new Set(manifest.images.filter((i) => i.review.status !== 'pending').map((i) => i.review.reviewedBy))).toEqual(new Set([fake.defaultUser.global_name]));

    // Discord follows: the progress message's summary, and each sheet's own counts and marks.
    await fake.waitFor((f) => f.message(progressId)?.content.includes('✅ 7 approved · ❌ 6 rejected · ⏳ 17 pending') || undefined, {
      description: 'the summary after the browser reviews',
    });
    await fake.waitFor((f) => f.message(first.id)?.content.includes('✅ 1-2, 4-5, 7-9 · ❌ 3, 6, 10, 21-23') || undefined, { description: 'sheet 1 re-rendered' });
  });
});
