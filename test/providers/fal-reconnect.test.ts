// fal's status stream dropped before the call ended is opened again (with backoff) instead of
// falling back to polling: the real @fal-ai/client against the fake, counted at the fake.
import { describe, expect, it } from 'vitest';
import { startFakeFal } from '../fakes/fal.js';
import { buildApp, onCleanup, requester } from '../helpers.js';

const request = { prompt: 'a heron at dawn', count: 4, provider: 'fal' as const, model: 'fal-ai/flux/schnell', aspectRatio: '1:1' as const };

describe('fal status stream reconnect', () => {
  it('reconnects after a drop and finishes the call on the second stream, with no status poll', async () => {
    const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 300 });
    onCleanup(() => fake.close());
    fake.dropStatusStreams({ times: 1, afterEvents: 1 });
    // the default backoff: the first reconnect 250 ms after the drop
    const app = await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url } });
    const done = await app.engine.waitFor((await app.engine.submit(request, requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    expect(fake.statusStreams()).toBe(2);
    expect(fake.statusPolls()).toBe(0);
    expect(fake.submits()).toHaveLength(1);
    expect(done.batches[0]).toMatchObject({ attempts: 1, failures: 0, state: 'done' });
  });

  it('reconnects as often as it drops, up to three times, and still needs no poll', async () => {
    const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 300 });
    onCleanup(() => fake.close());
    fake.dropStatusStreams({ times: 3, afterEvents: 1 });
    const app = await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url }, falStreamRetryMs: [5, 10, 20] });
    const done = await app.engine.waitFor((await app.engine.submit(request, requester())).id);
    expect(done.state).toBe('completed');
    expect(fake.statusStreams()).toBe(4);
    expect(fake.statusPolls()).toBe(0);
  });
});
