// A smoke run of the benchmark's machinery (bench/): one tiny catalog through the real core in a child
// process against the fake. Structural facts only — timings are `npm run bench`'s business.
import { describe, expect, it } from 'vitest';
import { idealMakespan, idealStarts, maxInWindow, percentile } from '../bench/ideal.js';
import { catalog } from '../bench/scenarios.js';
import { startFakeFal } from './fakes/fal.js';
import { noisePng } from './fakes/png.js';

describe('bench: theoretical minimum', () => {
  it('is 145 s for 250 calls of 5 s at 10 concurrent and 100 per minute', () => {
    expect(idealMakespan({ calls: 250, concurrency: 10, callMs: 5_000, limit: 100, windowMs: 60_000 })).toBe(145_000);
  });

  it('is bound by concurrency alone when there is no rate limit', () => {
    expect(idealMakespan({ calls: 25, concurrency: 10, callMs: 100 })).toBe(300);
  });

  it('never starts more than the limit in any window', () => {
    const starts = idealStarts({ calls: 500, concurrency: 50, callMs: 10, limit: 100, windowMs: 1_000 });
    expect(maxInWindow(starts, 1_000)).toBe(100);
  });

  it('takes percentiles by rank', () => {
    expect(percentile([5, 1, 4, 2, 3], 50)).toBe(3);
    expect(percentile(Array.from({ length: 100 }, (_, i) => i + 1), 99)).toBe(99);
  });
});

describe('bench: the fake fal options it relies on', () => {
  it('answers 429 with Retry-After past `rateLimit` submits per window, and serves `pngBytes`', async () => {
    const png = await noisePng(64, 64);
    const fake = await startFakeFal({ latencyMs: 1, rateLimit: { limit: 2, intervalMs: 60_000 }, pngBytes: png });
    try {
      const submit = () =>
        fetch(`${fake.url}/fal-ai/flux/schnell`, { method: 'POST', body: JSON.stringify({ prompt: 'x', output_format: 'png' }) });
      const answers = [await submit(), await submit(), await submit()];
      expect(answers.map((r) => r.status)).toEqual([200, 200, 429]);
      expect(Number(answers[2]!.headers.get('retry-after'))).toBeGreaterThan(59);
      expect(fake.requests.size).toBe(2);
      expect(fake.submits().map((c) => c.fault ?? 'ok')).toEqual(['ok', 'ok', 'rate-limit']);
      const { request_id: id } = (await answers[0]!.json()) as { request_id: string };
      await new Promise((r) => setTimeout(r, 5));
      const file = await fetch(`${fake.url}/files/${id}/0.png`);
      expect(Buffer.from(await file.arrayBuffer()).equals(png)).toBe(true);
    } finally {
      await fake.close();
    }
  });

  it('makes noise that deflate cannot shrink: ~1 MB at 600×600', async () => {
    expect((await noisePng(600, 600)).length).toBeGreaterThan(1_000_000);
  });
});

describe('bench: catalog smoke run', () => {
  it('makes ceil(n/4) calls, delivers every image to disk and reports finite ratios', async () => {
    const figures = await catalog({ speed: 50 }, { images: 40 });
    expect(figures.calls).toBe(10);
    expect(figures.delivered).toBe(40);
    expect(figures.files).toBe(40);
    expect(figures.rateLimited).toBe(0);
    expect(Number.isFinite(figures.ratio)).toBe(true);
    expect(figures.ratio).toBeGreaterThanOrEqual(1);
    expect(figures.store.saves).toBeGreaterThan(0);
    expect(figures.edits!.sends).toBeGreaterThan(0);
    expect(figures.maxRssMb).toBeGreaterThan(0);
  }, 60_000);
});
