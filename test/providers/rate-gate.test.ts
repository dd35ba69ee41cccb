/**
 * The rate gate against a provider that enforces its own window, through a network that delays each
 * request and each answer by a random amount: the real @fal-ai/client, the fake fal queue (which
 * counts a submit when it arrives and answers 429 past its limit), and a jittering front between.
 */
import { describe, expect, it } from 'vitest';
import { startFakeFal } from '../fakes/fal.js';
import { startFront } from '../fakes/front.js';
import { mulberry32 } from '../fakes/http.js';
import { buildApp, onCleanup, requester } from '../helpers.js';

const WINDOW_MS = 1_000;
const LIMIT = 10;

/** The most of `times` inside any window of `windowMs`. */
function mostInWindow(times: readonly number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let first = 0, last = 0; last < sorted.length; last += 1) {
    while (sorted[last]! - sorted[first]! >= windowMs) first += 1;
    most = Math.max(most, last - first + 1);
  }
  return most;
}

describe('the rate gate', () => {
  it('never lets the provider see more than its limit in a window, whatever the network jitter', async () => {
    // the images are fetched through the front too (its origin is FAL_BASE_URL's, so allowed)
    const origin = { url: '' };
    const fake = await startFakeFal({
      key: 'fal-test-key',
      latencyMs: 30,
      rateLimit: { limit: LIMIT, intervalMs: WINDOW_MS },
      outputUrl: (url) => url.replace(/^http:\/\/[^/]+/, origin.url),
    });
    onCleanup(() => fake.close());
    // up to 80 ms on the way there and 80 ms on the way back, drawn anew for every request
    const random = mulberry32(13);
    const jitter = () => new Promise<void>((resolve) => setTimeout(resolve, Math.floor(random() * 80)));
    const front = await startFront(() => fake.url, { before: jitter, after: jitter });
    onCleanup(() => front.close());
    origin.url = front.url;
    const app = await buildApp({
      env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: front.url, FAL_RATE_LIMIT: `${LIMIT}/s`, FAL_CONCURRENCY: '30', TENANT_RATE_LIMIT: '1000/s' },
    });
    // 25 calls of 4: more than two windows' worth, all wanting to start at once
    const job = await app.engine.submit(
      { prompt: 'a kite over dunes', count: 100, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' },
      requester(),
    );
    const done = await app.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(100);
    const submits = fake.submits();
    expect(submits.filter((call) => call.fault === 'rate-limit')).toHaveLength(0);
    expect(submits).toHaveLength(25);
    // as the provider counted them: arrival times, after the jitter on the way there
    expect(mostInWindow(submits.map((call) => call.at), WINDOW_MS)).toBeLessThanOrEqual(LIMIT);
  });
});
