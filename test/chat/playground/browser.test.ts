/**
 * The playground in a real browser (Debian's Chromium driven by playwright-core): type a command,
 * watch the gallery fill, review, reload, and find the reviews and the moved files still there.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlayground } from '../../../src/chat/playground/index.js';
import { buildApp, filesIn, onCleanup } from '../../helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium (.ci/run does)`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
afterAll(async () => {
  await browser?.close();
});

async function playground(env: Record<string, string> = {}) {
  const app = await buildApp({ env: { LOCAL_LATENCY_MS: '150', LOCAL_CONCURRENCY: '2', ...env } });
  const pg = await startPlayground(app, { port: 0 });
  onCleanup(() => pg.stop());
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  onCleanup(() => page.close());
  await page.goto(pg.url);
  // Page-side code is written as strings: the tests are type-checked without the DOM library.
  await page.waitForFunction(`document.body.dataset.live === 'true'`);
  return { app, pg, page };
}

async function send(page: Page, text: string): Promise<void> {
  await page.fill('#command', text);
  await page.press('#command', 'Enter');
}

describe('playground in Chromium', () => {
  it('makes a gallery of 6, keeps reviews across a reload, and moves the files', async () => {
    const { app, page } = await playground();
    await send(page, '/imagine a lighthouse at dusk --count 6');
    const bubble = page.locator('.bubble.job');
    await bubble.and(page.locator('[data-state="completed"]')).waitFor({ timeout: 20_000 });
    const jobId = (await bubble.getAttribute('data-job'))!;

    await page.waitForFunction(`(() => {
      const imgs = [...document.querySelectorAll('.card img')];
      return imgs.length === 6 && imgs.every((img) => img.complete && img.naturalWidth > 0);
    })()`);
    expect(await page.evaluate(`[...document.querySelectorAll('.card img')].map((img) => img.naturalWidth)`)).toEqual(Array(6).fill(768));
    expect(await page.locator('.card img').first().getAttribute('alt')).toContain('a lighthouse at dusk');
    expect(await page.locator('.job-title').textContent()).toBe('Done: 6 images');

    await page.getByRole('button', { name: 'Approve image 1' }).click();
    await page.locator('.card[data-index="1"][data-status="approved"]').waitFor();
    // keyboard works too: focus Reject on image 2 and press Enter
    await page.getByRole('button', { name: 'Reject image 2' }).focus();
    await page.keyboard.press('Enter');
    await page.locator('.card[data-index="2"][data-status="rejected"]').waitFor();
    expect(await page.locator('.summary').textContent()).toBe('✅ 1 approved · ❌ 1 rejected · ⏳ 4 pending');

    await mkdir('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/playground-gallery.png', fullPage: true });

    await page.reload();
    await page.locator('.card[data-index="1"][data-status="approved"]').waitFor();
    expect(await page.locator('.card[data-index="2"]').getAttribute('data-status')).toBe('rejected');
    expect(await page.locator('.card').count()).toBe(6);

    expect(await filesIn(app, jobId, 'approved')).toEqual(['001.png']);
    expect(await filesIn(app, jobId, 'rejected')).toEqual(['002.png']);
    expect(await filesIn(app, jobId, 'pending-review')).toHaveLength(4);
  });

  it('shows a bad command’s error, naming the option, its range and the value', async () => {
    const { page } = await playground();
    await send(page, '/imagine a fox --count 0');
    const alert = page.getByRole('alert');
    await alert.waitFor();
    expect(await alert.locator('pre').textContent()).toBe('Expected `count` to be an integer from 1 to 100, got `0`.');
    expect(await page.locator('.bubble.job').count()).toBe(0);
  });

  it('cancels a running job from its Cancel button', async () => {
    const { page } = await playground({ LOCAL_LATENCY_MS: '1500', LOCAL_CONCURRENCY: '1' });
    await send(page, '/imagine slow clouds --count 12');
    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('.bubble.job[data-state="canceled"]').waitFor({ timeout: 20_000 });
    expect(await page.locator('.job-title').textContent()).toMatch(/^Canceled: \d+ of 12 images$/);
  });

  it('lays out for a phone width without horizontal scrolling', async () => {
    const { page } = await playground();
    await page.setViewportSize({ width: 390, height: 800 });
    await send(page, '/imagine a red fox --count 4');
    await page.locator('.bubble.job[data-state="completed"]').waitFor({ timeout: 20_000 });
    expect(await page.evaluate(`document.documentElement.scrollWidth <= window.innerWidth`)).toBe(true);
    await page.screenshot({ path: 'test-results/playground-phone.png' });
  });
});
