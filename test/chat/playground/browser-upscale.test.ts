/**
 * The playground's drafts, "Upscale approved" and prompt-list gallery in a real browser (Chromium
 * driven by playwright-core), with the offline local provider behind the server.
 */
import { describe, expect, it } from 'vitest';
import { startPlayground } from '../../../src/chat/playground/index.js';
import { buildApp, filesIn, onCleanup } from '../../helpers.js';
import { openPlayground, sharedBrowser } from './chromium.js';

const { plan, browser } = sharedBrowser();

async function playground() {
  const app = await buildApp();
  const pg = await startPlayground(app, { port: 0 });
  onCleanup(() => pg.stop());
  const page = await openPlayground(browser(), pg.url);
  return { app, page };
}

describe.skipIf(!('run' in plan))('playground drafts and prompt lists in Chromium', () => {
  it('makes drafts, upscales the approved one from the card, and shows its final image in place', async () => {
    const { app, page } = await playground();
    await page.fill('#command', '/imagine a lighthouse --count 2 --draft');
    await page.press('#command', 'Enter');
    await page.locator('.bubble.job[data-state="completed"]').waitFor({ timeout: 20_000 });
    const jobId = (await page.locator('.bubble.job').getAttribute('data-job'))!;
    const upscale = page.locator('button.upscale');
    expect(await upscale.isHidden()).toBe(true);

    await page.getByRole('button', { name: 'Approve image 2' }).click();
    await page.getByRole('button', { name: 'Upscale 1 approved' }).click();
    await page.locator('.card[data-index="2"] .status', { hasText: 'upscaled' }).waitFor({ timeout: 10_000 });
    await expect
      .poll(() => page.evaluate(`(() => {
        const img = document.querySelector('.card[data-index="2"] img');
        return img.getAttribute('src').includes('/final/') && img.complete ? img.naturalWidth : 0;
      })()`), { timeout: 10_000 })
      .toBe(768);
    expect(await filesIn(app, jobId, 'final')).toEqual(['002.png']);
    expect(await upscale.isHidden()).toBe(true);
  });

  it('groups a prompt list typed on several lines under one heading per prompt', async () => {
    const { page } = await playground();
    await page.fill('#command', '/imagine --count 2\na red fox\na blue owl --count 1');
    await page.press('#command', 'Enter');
    await page.locator('.bubble.job[data-state="completed"]').waitFor({ timeout: 20_000 });
    const order = await page.evaluate(`[...document.querySelectorAll('.grid > *')].map((n) => n.classList.contains('group-heading') ? n.textContent : '#' + n.dataset.index)`);
    expect(order).toEqual(['Prompt 1/2 · line 2: “a red fox”', '#1', '#2', 'Prompt 2/2 · line 3: “a blue owl”', '#3']);
  });
});
