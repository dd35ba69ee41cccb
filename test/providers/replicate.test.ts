import { describe, expect, it } from 'vitest';
import { createDownloader, REPLICATE_MEDIA_HOSTS } from '../../src/providers/download.js';
import { ReplicateProvider } from '../../src/providers/replicate.js';
import { startFakeReplicate, type FakeReplicate } from '../fakes/replicate.js';
import { loopbackFetch } from '../fakes/http.js';
import { buildApp, onCleanup, readManifest, requester } from '../helpers.js';

/** One second of `Prefer: wait` lasts this long in the fake. */
const WAIT_UNIT_MS = 20;

async function fakeReplicate(latencyMs = 30): Promise<FakeReplicate> {
  const fake = await startFakeReplicate({ key: 'r8-test-token', latencyMs, preferWaitUnitMs: WAIT_UNIT_MS });
  onCleanup(() => fake.close());
  return fake;
}

/** The provider as the app builds it, with a held create of `preferWaitSeconds` (scaled by the fake). */
const heldProvider = (fake: FakeReplicate, preferWaitSeconds = 5) =>
  new ReplicateProvider({
    token: 'r8-test-token',
    baseUrl: fake.url,
    fetch: loopbackFetch,
    preferWaitSeconds,
    download: createDownloader({ mediaHosts: REPLICATE_MEDIA_HOSTS, trustedOrigins: [new URL(fake.url).origin], extraHosts: [], maxBytes: 50_000_000 }),
  });

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

describe('Replicate provider with Prefer: wait on create', () => {
  const call = { prompt: 'a lighthouse', model: 'black-forest-labs/flux-schnell', aspectRatio: '1:1' as const, count: 2, seed: 1 };

  it('sends no Prefer header by default', async () => {
    const fake = await fakeReplicate();
    const provider = new ReplicateProvider({ token: 'r8-test-token', baseUrl: fake.url, fetch: loopbackFetch, download: createDownloader({ mediaHosts: [], trustedOrigins: [], extraHosts: [], maxBytes: 1 }) });
    await provider.submit(call);
    expect(fake.submits()[0]!.headers.prefer).toBeUndefined();
  });

  it('a prediction finishing within the wait is delivered with zero GET /predictions/{id}', async () => {
    const fake = await fakeReplicate(30);
    const app = await buildApp({ env: env(fake), providers: { replicate: heldProvider(fake) } });
    const done = await app.engine.waitFor((await app.engine.submit(request(6, { seed: 5 }), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(6);
    expect(fake.submits().map((c) => c.headers.prefer)).toEqual(['wait=5', 'wait=5']);
    expect(fake.gets()).toHaveLength(0);
  });

  it('status() and result() answer from the held prediction once, then forget it', async () => {
    const fake = await fakeReplicate(30);
    const provider = heldProvider(fake);
    const id = await provider.submit(call);
    expect(await provider.status(id, call.model)).toEqual({ state: 'succeeded' });
    expect((await provider.result(id, call.model)).map((o) => o.url)).toEqual([0, 1].map((n) => `${new URL(fake.url).origin}/files/${id}/${n}.png`));
    expect(fake.gets()).toHaveLength(0);
    // Forgotten: asked again, it is asked of Replicate.
    expect(await provider.status(id, call.model)).toEqual({ state: 'succeeded' });
    expect(fake.gets(id)).toHaveLength(1);
  });

  it('a prediction outlasting the wait comes back running and is polled as before', async () => {
    const fake = await fakeReplicate(1_000);
    // 1 s of wait = 20 ms in the fake: the 1 s prediction outlasts it.
    const app = await buildApp({ env: env(fake), providers: { replicate: heldProvider(fake, 1) } });
    const done = await app.engine.waitFor((await app.engine.submit(request(3), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(3);
    expect(fake.submits()[0]!.headers.prefer).toBe('wait=1');
    const id = done.batches[0]!.requestIds[0]!;
    // The runner stops polling at the first ended status, so more than one poll means the first saw it
    // still running: the create was not held to the end.
    expect(fake.gets(id).length).toBeGreaterThan(1);
  });

  it('a failed prediction returned by the held create is a failure, and the batch tries again', async () => {
    const fake = await fakeReplicate(30);
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'CUDA out of memory' } });
    const app = await buildApp({ env: env(fake, { REPLICATE_CONCURRENCY: '1' }), providers: { replicate: heldProvider(fake) } });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.batches[0]).toMatchObject({ attempts: 2, failures: 1, state: 'done' });
    const [failed] = done.batches[0]!.requestIds;
    expect(fake.predictions.get(failed!)!.status).toBe('failed');
    expect(fake.gets()).toHaveLength(0);
  });

  it('refuses a wait that the request timeout would cut short, naming the range', () => {
    const download = createDownloader({ mediaHosts: [], trustedOrigins: [], extraHosts: [], maxBytes: 1 });
    expect(() => new ReplicateProvider({ token: 't', download, requestTimeoutMs: 10_000, preferWaitSeconds: 6 })).toThrow(
      'Expected `preferWaitSeconds` to be 0 or an integer from 1 to 5 (60 at most, and 5 s under the 10000 ms request timeout), got `6`',
    );
    expect(() => new ReplicateProvider({ token: 't', download, preferWaitSeconds: 1.5 })).toThrow('got `1.5`');
  });
});
