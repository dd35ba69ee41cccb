/**
 * The review page in a real browser (this machine's Chromium, driven by playwright-core): open a signed
 * link, review ten images with the keyboard, bulk-reject a multi-selection, and find the reviews in the
 * manifest, in `engine.get` and — live, over server-sent events — on a second reviewer's page, all under
 * the page's own Content-Security-Policy. A screenshot of the page goes to test-results/review-page.png
 * on every run, and to docs/images/review-page.png (the README's) when SCREENSHOTS=1.
 */
import { mkdir } from 'node:fs/promises';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/core/ports.js';
import { Thumbnails } from '../../src/store/thumbnails.js';
import { reviewRoutes } from '../../src/web/review-page.js';
import { reviewLink } from '../../src/web/review-token.js';
import { startWebServer } from '../../src/web/server.js';
import { sharedBrowser } from '../chat/playground/chromium.js';
import { buildApp, filesIn, onCleanup, readManifest, requester } from '../helpers.js';

const { plan, browser } = sharedBrowser();
const SECRET = 'review-secret-for-the-browser-test-0123456789';

// In CI a missing browser is one failed test saying how to install one, not a silent skip.
it('has a Chromium to drive whenever CI is "true"', () => {
  expect(plan, 'fail' in plan ? plan.fail : undefined).not.toHaveProperty('fail');
});

async function openReview(url: string, errors: string[]): Promise<Page> {
  // its own context: its own cookies, as a second person's browser would have
  const context = await browser().newContext({ viewport: { width: 1280, height: 860 } });
  onCleanup(() => context.close());
  const page = await context.newPage();
  // a step that hangs fails with what it waited for, well before the test's own timeout
  page.setDefaultTimeout(8_000);
  // (the browser's own favicon.ico request is the one 404 the page does not cause)
  page.on('console', (message) => void (message.type() === 'error' && !message.location().url.endsWith('/favicon.ico') && errors.push(message.text())));
  page.on('pageerror', (error) => void errors.push(error.message));
  await page.goto(url);
  await page.locator('body[data-live="true"]').waitFor();
  return page;
}

const tile = (page: Page, n: number) => page.locator(`[data-testid="tile"][data-index="${n}"]`);
const statuses = (page: Page) => page.evaluate(`[...document.querySelectorAll('[data-testid="tile"]')].map((t) => t.dataset.status)`);

describe.skipIf(!('run' in plan))('review page in Chromium', () => {
  it('reviews 10 images with the keyboard, bulk-rejects a selection, and a second page follows live', async () => {
    const app = await buildApp();
    const job = await app.engine.waitFor((await app.engine.submit({ prompt: 'a lighthouse at dusk, oil painting', count: 12, provider: 'local', model: 'local', aspectRatio: '1:1' }, requester('guild-1', 'owner'))).id);
    const server = await startWebServer({ port: 0, host: '127.0.0.1', log: silentLogger });
    onCleanup(() => server.stop());
    server.add(...reviewRoutes({ engine: app.engine, files: app.files, thumbnails: new Thumbnails(), access: { kind: 'token', secret: SECRET, publicUrl: server.url }, now: Date.now, log: silentLogger }));
    const config = { baseUrl: server.url, secret: SECRET, linkMs: 3_600_000 };
    const errors: string[] = [];

    const page = await openReview(reviewLink(config, job.id, { tenant: 'guild-1', userId: 'owner', name: 'Olive', moderator: false }, Date.now()).url, errors);
    // the token left the address bar (and the history) at once
    expect(page.url()).toBe(`${server.url}/review/${job.id}`);
    const other = await openReview(reviewLink(config, job.id, { tenant: 'guild-1', userId: 'mod', name: 'Mo', moderator: true }, Date.now()).url, errors);

    expect(await page.locator('[data-testid="tile"]').count()).toBe(12);
    // Page-side code is written as strings (the tests are type-checked without the DOM library), and
    // polled from here: the page's CSP forbids the string eval that waitForFunction would do in it.
    await expect.poll(() => page.evaluate(`(() => {
      const imgs = [...document.querySelectorAll('[data-testid="tile"] img')];
      return imgs.length === 12 && imgs.every((img) => img.complete && img.naturalWidth > 0);
    })()`), { timeout: 10_000 }).toBe(true);
    expect(await page.locator('[data-testid="title"]').textContent()).toBe('“a lighthouse at dusk, oil painting” · 12 images');

    // Space opens the full image, Escape closes it
    await tile(page, 1).focus();
    await page.keyboard.press('Space');
    await page.locator('[data-testid="viewer"][open]').waitFor();
    await expect.poll(() => page.evaluate(`document.querySelector('[data-testid="viewer-image"]').naturalWidth`)).toBe(768);
    await page.keyboard.press('Escape');
    await page.locator('[data-testid="viewer"][open]').waitFor({ state: 'detached' });

    // A and R review the focused image and move on; arrows move; U undoes
    for (const key of ['a', 'r', 'a', 'a', 'r']) await page.keyboard.press(key); // 1–5, focus on 6
    await page.keyboard.press('ArrowRight'); // 7
    await page.keyboard.press('a'); // 7, focus 8
    await page.keyboard.press('a'); // 8, focus 9
    for (let i = 0; i < 3; i += 1) await page.keyboard.press('ArrowLeft'); // 6
    await page.keyboard.press('a'); // 6, focus 7
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('ArrowRight'); // 9
    await page.keyboard.press('r'); // 9, focus 10
    await page.keyboard.press('a'); // 10, focus 11
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('u'); // 10 back to pending
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('r'); // 10 rejected after all
    await tile(page, 10).and(page.locator('[data-status="rejected"]')).waitFor();
    expect(await statuses(page)).toEqual(['approved', 'rejected', 'approved', 'approved', 'rejected', 'approved', 'approved', 'approved', 'rejected', 'rejected', 'pending', 'pending']);
    // up and down move by a row of the grid
    expect(await page.evaluate('document.activeElement.dataset.index')).toBe('11');
    await page.keyboard.press('ArrowUp');
    expect(Number(await page.evaluate('document.activeElement.dataset.index'))).toBeLessThan(11);
    await page.keyboard.press('ArrowDown');
    expect(await page.evaluate('document.activeElement.dataset.index')).toBe('11');

    // multi-select: Ctrl-click 11, Shift-click 12, then "Reject selected"
    await tile(page, 11).click({ modifiers: ['Control'] });
    await tile(page, 12).click({ modifiers: ['Shift'] });
    expect(await page.locator('[data-testid="selection"]').textContent()).toBe('2 selected');
    expect(await page.locator('[data-testid="tile"][data-selected="true"]').count()).toBe(2);
    await page.locator('[data-testid="bulk-reject"]').click();
    await tile(page, 12).and(page.locator('[data-status="rejected"]')).waitFor();
    expect(await page.locator('[data-testid="counts"] span').allTextContents()).toEqual(['0 pending', '6 approved', '6 rejected', '0 flagged']);

    // the record: engine, manifest and files
    const approved = [1, 3, 4, 6, 7, 8];
    const stored = (await app.engine.get(job.id))!;
    expect(stored.images.filter((i) => i.review.status === 'approved').map((i) => i.index)).toEqual(approved);
    expect(stored.images.every((i) => i.review.by === 'Olive')).toBe(true);
    const manifest = await readManifest(app, job.id);
    expect(manifest.images.filter((i) => i.review.status === 'rejected').map((i) => i.index)).toEqual([2, 5, 9, 10, 11, 12]);
    expect(await filesIn(app, job.id, 'approved')).toEqual(approved.map((n) => `${String(n).padStart(3, '0')}.png`));
    expect(await filesIn(app, job.id, 'pending-review')).toEqual([]);

    // the second page saw it all without reloading, and filters
    await tile(other, 12).and(other.locator('[data-status="rejected"]')).waitFor();
    expect(await statuses(other)).toEqual(await statuses(page));
    expect(await other.locator('[data-testid="counts"] span').allTextContents()).toEqual(['0 pending', '6 approved', '6 rejected', '0 flagged']);
    await other.locator('[data-testid="filter-rejected"]').click();
    expect(await other.locator('[data-testid="tile"]:visible').count()).toBe(6);
    // and what it does, the first page sees
    await tile(other, 2).focus();
    await other.keyboard.press('a');
    await tile(page, 2).and(page.locator('[data-status="approved"]')).waitFor();
    expect((await app.engine.get(job.id))!.images[1]!.review).toMatchObject({ status: 'approved', by: 'Mo' });

    expect(errors).toEqual([]);
    await tile(page, 5).click({ modifiers: ['Control'] });
    await tile(page, 9).click({ modifiers: ['Control'] });
    await mkdir('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/review-page.png', fullPage: true });
    if (process.env.SCREENSHOTS === '1') {
      await mkdir('docs/images', { recursive: true });
      await page.screenshot({ path: 'docs/images/review-page.png', fullPage: true });
    }
  });
});
