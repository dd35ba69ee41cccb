/**
 * Which Chromium the browser test drives, and what it does when there is none. No browser can be
 * downloaded here, so the test uses one already on the machine; on a developer's machine without
 * one it steps aside with a line saying how to get one, but in CI a missing browser is a failure,
 * never a silent pass.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { onCleanup } from '../../helpers.js';
import { afterAll, beforeAll } from 'vitest';

export const INSTALL_HINT = 'set CHROMIUM_PATH, or apt-get install -y chromium';

/** The places to look, in order: CHROMIUM_PATH, Debian's package, Playwright's own browser cache. */
export function chromiumCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const candidates = [env.CHROMIUM_PATH, '/usr/bin/chromium'];
  try {
    candidates.push(chromium.executablePath());
  } catch {
    // playwright-core knows no browser build for this platform: nothing to look for there
  }
  return candidates.filter((candidate): candidate is string => Boolean(candidate));
}

/** The first candidate that exists; a CHROMIUM_PATH pointing nowhere falls through to the rest. */
export function findChromium(candidates: readonly string[], exists: (file: string) => boolean = existsSync): string | undefined {
  return candidates.find((candidate) => exists(candidate));
}

export type BrowserPlan = { run: string } | { skip: string } | { fail: string };

/** Run with the browser found; without one, fail in CI and skip elsewhere, saying why either way. */
export function browserPlan(found: string | undefined, env: NodeJS.ProcessEnv = process.env): BrowserPlan {
  if (found) return { run: found };
  if (env.CI === 'true') return { fail: `No Chromium found for the browser test (${INSTALL_HINT}; .ci/run installs it)` };
  return { skip: `browser test skipped: no Chromium found (${INSTALL_HINT})` };
}

/**
 * For a browser test file: this machine's Chromium plan (a skip is printed with how to install it) and
 * one headless browser for the file's tests, launched before them and closed after.
 */
export function sharedBrowser(): { plan: BrowserPlan; browser: () => Browser } {
  const plan = browserPlan(findChromium(chromiumCandidates()));
  if ('skip' in plan) console.warn(plan.skip);
  let browser: Browser | undefined;
  beforeAll(async () => {
    if (!('run' in plan)) return;
    browser = await chromium.launch({
      executablePath: plan.run,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  afterAll(async () => {
    await browser?.close();
  });
  return { plan, browser: () => browser! };
}

/** A page of the browser on the playground at `url`, closed after the test, once its live updates run. */
export async function openPlayground(browser: Browser, url: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  onCleanup(() => page.close());
  await page.goto(url);
  await page.locator('body[data-live="true"]').waitFor();
  return page;
}
