import { describe, expect, it } from 'vitest';
import { startFakeReplicate, type FakeReplicate } from '../fakes/replicate.js';
import { buildApp, onCleanup, readManifest, requester } from '../helpers.js';

async function fakeReplicate(latencyMs = 30): Promise<FakeReplicate> {
  const fake = await startFakeReplicate({ key: 'r8-test-token', latencyMs });
  onCleanup(() => fake.close());
  return fake;
}

const env = (fake: FakeReplicate, extra: Record<string, string> = {}) => ({
  REPLICATE_API_TOKEN: 'r8-test-token',
  REPLICATE_BASE_URL: fake.url,
  ...extra,
});

const request = (count: number, extra: object = {}) => ({
  prompt: 'a lighthouse at dusk',
  count,
  provider: 'replicate' as const,
  model: 'black-forest-labs/flux-schnell',
  aspectRatio: '3:2' as const,
  ...extra,
});

const outputs = (fake: FakeReplicate) => fake.submits().map((c) => (c.body as { input: { num_outputs: number } }).input.num_outputs);

describe('Replicate provider (real replicate client against the fake API)', () => {
  it('makes exactly 3 creates of 4, 4 and 2 outputs for 10 and saves all 10', async () => {
    const fake = await fakeReplicate();
    const app = await buildApp({ env: env(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(10, { seed: 5 }), requester())).id);
    expect(done.state).toBe('completed');
    expect(fake.submits().map((c) => c.path)).toEqual(Array(3).fill('/v1/models/black-forest-labs/flux-schnell/predictions'));
    expect(outputs(fake).sort()).toEqual([2, 4, 4]);
    expect(fake.submits()[0]!.body).toMatchObject({ input: { prompt: 'a lighthouse at dusk', aspect_ratio: '3:2', output_format: 'png' } });
    expect(fake.submits()[0]!.headers.authorization).toBe('Bearer r8-test-token');
    expect(done.images).toHaveLength(10);
    expect(done.images[0]).toMatchObject({ width: 1216, height: 832, contentType: 'image/png' });
    expect(new Set((await readManifest(app, done.id)).batches.map((b) => b.providerRequestId))).toEqual(new Set(fake.predictions.keys()));
  });

  it('reads retry_after from a 429 body when there is no Retry-After header, once per throttle', async () => {
    const fake = await fakeReplicate();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 0.3, where: 'body' } });
    const app = await buildApp({ env: env(fake, { REPLICATE_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    const [throttled, after] = fake.submits();
    // the client's own six quick retries never reach the server: one throttled call, then one after the wait
    expect([throttled, after].map((c) => c?.fault ?? 'ok')).toEqual(['rate-limit', 'ok']);
    // The wait came in the body alone (the fault says where: 'body'); held against the fake's own records.
    expect(throttled!.retryAfterSeconds).toBe(0.3);
    expect(after!.at).toBeGreaterThanOrEqual(throttled!.at + throttled!.retryAfterSeconds! * 1000);
  });

  it('sends a failed prediction again and reports the attempt', async () => {
    const fake = await fakeReplicate();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' } });
    const app = await buildApp({ env: env(fake, { REPLICATE_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.batches[0]).toMatchObject({ attempts: 2, failures: 1, state: 'done' });
    expect(done.batches[0]!.requestIds).toHaveLength(2);
    expect(fake.predictions.get(done.batches[0]!.requestIds[0]!)!.status).toBe('failed');
  });

  it('names the reason when a batch fails for good', async () => {
    const fake = await fakeReplicate();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' }, times: 2 });
    const app = await buildApp({ env: env(fake, { REPLICATE_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '2' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(6), requester())).id);
    expect(done.batches.map((b) => b.state)).toEqual(['failed', 'done']);
    expect(done.error).toBe('completed with 4 images failed: the provider reported: CUDA out of memory');
    expect(done.images).toHaveLength(2);
  });

  it('fails the job when the token is refused, saying so', async () => {
    const fake = await fakeReplicate();
    const app = await buildApp({ env: { REPLICATE_API_TOKEN: 'r8-expired', REPLICATE_BASE_URL: fake.url } });
    const done = await app.engine.waitFor((await app.engine.submit(request(3), requester())).id);
    expect(done.state).toBe('failed');
    expect(done.error).toContain('Replicate refused the credentials (HTTP 401)');
    expect(fake.submits()).toHaveLength(1);
  });
});
