/**
 * The playground's "Retry N failed" and "Reroll" buttons in a real browser (Chromium driven by
 * playwright-core), with the real @fal-ai/client against the fake fal queue behind the server.
 */
import { describe, expect, it } from 'vitest';
import { startPlayground } from '../../../src/chat/playground/index.js';
import { startFakeFal } from '../../fakes/fal.js';
import { buildApp, filesIn, onCleanup } from '../../helpers.js';
import { openPlayground, sharedBrowser } from './chromium.js';

const { plan, browser } = sharedBrowser();

async function playground() {
  const fal = await startFakeFal({ key: 'fal-test-key', latencyMs: 20 });
  onCleanup(() => fal.close());
  const app = await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fal.url, FAL_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '1', CACHE: 'off' } });
  const pg = await startPlayground(app, { port: 0 });
  onCleanup(() => pg.stop());
  const page = await openPlayground(browser(), pg.url);
  return { fal, app, page };
}

describe.skipIf(!('run' in plan))('playground retry and reroll in Chromium', () => {
  it('retries the failed images from the card, then rerolls a rejected one into its slot', async () => {
    const { fal, app, page } = await playground();
    fal.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' }, after: 1 });
    await page.fill('#command', '/imagine a lighthouse --count 6 --provider fal --seed 100');
    await page.press('#command', 'Enter');
    const retry = page.getByRole('button', { name: 'Retry 2 failed' });
    await retry.waitFor({ timeout: 20_000 });
    const jobId = (await page.locator('.bubble.job').getAttribute('data-job'))!;
    expect(await page.locator('.card').count()).toBe(4);

    await retry.click();
    await expect.poll(() => page.locator('.card').count(), { timeout: 10_000 }).toBe(6);
    await page.locator('.bubble.job[data-state="completed"]').waitFor();
    expect(await retry.isHidden()).toBe(true);
    expect(fal.submits().map((call) => (call.body as { num_images: number }).num_images)).toEqual([4, 2, 2]);

    // Reroll shows on a rejected image only
    expect(await page.getByRole('button', { name: 'Reroll image 3' }).isHidden()).toBe(true);
    await page.getByRole('button', { name: 'Reject image 3' }).click();
    await page.locator('.card[data-index="3"][data-status="rejected"]').waitFor();
    await page.getByRole('button', { name: 'Reroll image 3' }).click();
    await page.locator('.card[data-index="3"][data-status="pending"]').waitFor({ timeout: 10_000 });
    // the new image, under a new URL, loaded
    await expect.poll(() => page.evaluate(`(() => {
      const img = document.querySelector('.card[data-index="3"] img');
      return img.getAttribute('src').endsWith('?v=1') && img.complete && img.naturalWidth > 0;
    })()`), { timeout: 10_000 }).toBe(true);
    expect(fal.submits()).toHaveLength(4);
    expect(await filesIn(app, jobId, 'rejected')).toEqual(['003.reroll-1.png']);
  });
});
