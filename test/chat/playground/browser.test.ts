/**
 * The playground in a real browser (a Chromium on this machine driven by playwright-core): type a
 * command, watch the gallery fill, review, reload, and find the reviews and the moved files still
 * there — all under the page's own Content-Security-Policy and the server's Host/Origin guard.
 */
import { mkdir } from 'node:fs/promises';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { startPlayground } from '../../../src/chat/playground/index.js';
import { buildApp, filesIn, onCleanup } from '../../helpers.js';
import { openPlayground, sharedBrowser } from './chromium.js';

const { plan, browser } = sharedBrowser();

async function playground(env: Record<string, string> = {}) {
  const app = await buildApp({ env: { LOCAL_LATENCY_MS: '150', LOCAL_CONCURRENCY: '2', ...env } });
  const pg = await startPlayground(app, { port: 0 });
  onCleanup(() => pg.stop());
  const page = await openPlayground(browser(), pg.url);
  return { app, pg, page };
}

async function send(page: Page, text: string): Promise<void> {
  await page.fill('#command', text);
  await page.press('#command', 'Enter');
}

// In CI a missing browser is one failed test saying how to install one, not five silent skips.
it('has a Chromium to drive whenever CI is "true"', () => {
  expect(plan, 'fail' in plan ? plan.fail : undefined).not.toHaveProperty('fail');
});

describe.skipIf(!('run' in plan))('playground in Chromium', () => {
  it('makes a gallery of 6, keeps reviews across a reload, and moves the files', async () => {
    const { app, page } = await playground();
    await send(page, '/imagine a lighthouse at dusk --count 6');
    const bubble = page.locator('.bubble.job');
    await bubble.and(page.locator('[data-state="completed"]')).waitFor({ timeout: 20_000 });
    const jobId = (await bubble.getAttribute('data-job'))!;

    // Page-side code is written as strings (the tests are type-checked without the DOM library), and
    // polled from here: the page's CSP forbids the string eval that waitForFunction would do in it.
    await expect.poll(() => page.evaluate(`(() => {
      const imgs = [...document.querySelectorAll('.card img')];
      return imgs.length === 6 && imgs.every((img) => img.complete && img.naturalWidth > 0);
    })()`), { timeout: 10_000 }).toBe(true);
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

  it('lays out for a phone width: every card shows its Approve and Reject buttons whole', async () => {
    const { page } = await playground();
    await page.setViewportSize({ width: 390, height: 800 });
    await send(page, '/imagine a red fox --count 4');
    await page.locator('.bubble.job[data-state="completed"]').waitFor({ timeout: 20_000 });
    expect(await page.evaluate(`document.documentElement.scrollWidth <= window.innerWidth`)).toBe(true);
    // The feed scrolls on its own, so a card wider than its column is clipped without the page
    // scrolling: measure the buttons against their card and the viewport instead.
    const boxes = await page.evaluate<{ card: Box; approve: Box; reject: Box }[]>(`[...document.querySelectorAll('.card')].map((card) => {
      const box = (el) => { const r = el.getBoundingClientRect(); return { left: r.left, right: r.right, top: r.top, bottom: r.bottom }; };
      return { card: box(card), approve: box(card.querySelector('.approve')), reject: box(card.querySelector('.reject')) };
    })`);
    expect(boxes).toHaveLength(4);
    const problems = boxes.flatMap(({ card, approve, reject }, i) =>
      Object.entries({ approve, reject }).flatMap(([name, button]) => {
        const where = `card ${i + 1} ${name}`;
        return [
          ...(inside(button, card) ? [] : [`${where} ${JSON.stringify(button)} is outside its card ${JSON.stringify(card)}`]),
          ...(button.left >= 0 && button.right <= 390 ? [] : [`${where} ${JSON.stringify(button)} is outside the 390-px viewport`]),
          ...(button.right - button.left > 0 ? [] : [`${where} has no width`]),
        ];
      }),
    );
    expect(problems).toEqual([]);
    await mkdir('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/playground-phone.png' });
  });

  it('serves the page under a Content-Security-Policy that allows only its own resources', async () => {
    const { pg, page } = await playground();
    const response = await page.request.get(pg.url);
    const policy = response.headers()['content-security-policy'] ?? '';
    expect(policy).toContain("script-src 'self'");
    expect(policy).toContain("frame-ancestors 'none'");
    expect(response.headers()['x-frame-options']).toBe('DENY');
    // the page still works under it: the composer posts JSON and gets an answer
    await send(page, '/jobs');
    expect(await page.locator('pre.reply').textContent()).toBe('You have no queued or running jobs here.');
  });
});

interface Box {
  left: number;
  right: number;
  top: number;
  bottom: number;
}

/** Whether `inner` lies entirely within `outer` (half a pixel of rounding allowed). */
function inside(inner: Box, outer: Box): boolean {
  const slack = 0.5;
  return inner.left >= outer.left - slack && inner.right <= outer.right + slack && inner.top >= outer.top - slack && inner.bottom <= outer.bottom + slack;
}
