import { describe, expect, it } from 'vitest';
import { browserPlan, chromiumCandidates, findChromium } from './chromium.js';

describe('finding a Chromium for the browser test', () => {
  it('looks at CHROMIUM_PATH first, then Debian’s chromium, then Playwright’s cache', () => {
    const candidates = chromiumCandidates({ CHROMIUM_PATH: '/opt/my/chrome' });
    expect(candidates.slice(0, 2)).toEqual(['/opt/my/chrome', '/usr/bin/chromium']);
    expect(candidates.slice(2).every((candidate) => candidate.includes('ms-playwright'))).toBe(true);
  });

  it('leaves out an unset CHROMIUM_PATH', () => {
    expect(chromiumCandidates({})[0]).toBe('/usr/bin/chromium');
  });

  it('falls through a CHROMIUM_PATH that points at nothing to the next browser that exists', () => {
    const present = new Set(['/usr/bin/chromium']);
    expect(findChromium(['/nonexistent', '/usr/bin/chromium', '/cache/chrome'], (file) => present.has(file))).toBe('/usr/bin/chromium');
  });

  it('finds nothing when no candidate exists', () => {
    expect(findChromium([])).toBeUndefined();
    expect(findChromium(['/nonexistent/chromium', '/nonexistent/chrome'])).toBeUndefined();
  });

  it('runs with the browser it found, in CI or not', () => {
    expect(browserPlan('/usr/bin/chromium', { CI: 'true' })).toEqual({ run: '/usr/bin/chromium' });
  });

  it('skips without a browser outside CI, with one line saying how to get one', () => {
    expect(browserPlan(undefined, {})).toEqual({
      skip: 'browser test skipped: no Chromium found (set CHROMIUM_PATH, or apt-get install -y chromium)',
    });
    expect(browserPlan(undefined, { CI: 'false' })).toHaveProperty('skip');
  });

  it('fails without a browser in CI, saying how to install one', () => {
    const plan = browserPlan(undefined, { CI: 'true' });
    expect(plan).toHaveProperty('fail');
    expect((plan as { fail: string }).fail).toContain('apt-get install -y chromium');
    expect((plan as { fail: string }).fail).toContain('CHROMIUM_PATH');
  });
});
