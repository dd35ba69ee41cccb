import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { Provider } from '../../src/core/provider.js';
import { createProviders } from '../../src/providers/index.js';
import { startFakeFal, type FakeFal } from '../fakes/fal.js';
import { loopbackFetch } from '../fakes/http.js';
import { buildApp, onCleanup, readManifest, requester, untilProgress } from '../helpers.js';

async function fakeFal(latencyMs = 30): Promise<FakeFal> {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs });
  onCleanup(() => fake.close());
  return fake;
}

const falEnv = (fake: FakeFal, extra: Record<string, string> = {}) => ({ FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url, ...extra });

const request = (count: number, extra: object = {}) => ({
  prompt: 'a red fox in snow',
  count,
  provider: 'fal' as const,
  model: 'fal-ai/flux/schnell',
  aspectRatio: '16:9' as const,
  ...extra,
});

describe('fal provider (real @fal-ai/client against the fake queue API)', () => {
  it('makes exactly 3 submits of 4, 4 and 2 images for 10 and saves all 10', async () => {
    const fake = await fakeFal();
    const app = await buildApp({ env: falEnv(fake) });
    const job = await app.engine.submit(request(10, { seed: 100 }), requester());
    const done = await app.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    const submits = fake.submits();
    expect(submits.map((c) => c.path)).toEqual(['/fal-ai/flux/schnell', '/fal-ai/flux/schnell', '/fal-ai/flux/schnell']);
    expect(submits.map((c) => (c.body as { num_images: number }).num_images).sort()).toEqual([2, 4, 4]);
    expect(submits.map((c) => (c.body as { seed: number }).seed).sort()).toEqual([100, 104, 108]);
    expect(submits[0]!.body).toMatchObject({ prompt: 'a red fox in snow', image_size: 'landscape_16_9', output_format: 'png' });
    expect(submits[0]!.headers.authorization).toBe('Key fal-test-key');
    expect(done.images).toHaveLength(10);
    expect(done.images[0]).toMatchObject({ width: 1024, height: 576, contentType: 'image/png' });
    const manifest = await readManifest(app, job.id);
    expect(new Set(manifest.batches.map((b) => b.providerRequestId))).toEqual(new Set(fake.requests.keys()));
    expect(manifest.estimatedCostUsd).toBeCloseTo(0.03, 5);
  });

  it('records the images fal flagged as NSFW', async () => {
    const fake = await fakeFal();
    const app = await buildApp({ env: falEnv(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(2, { prompt: 'NSFW-TEST scene' }), requester())).id);
    expect(done.images.map((i) => i.nsfw)).toEqual([true, true]);
    expect((await readManifest(app, done.id)).batches[0]!.nsfw).toBe(true);
  });

  it('pauses on a 429 for its Retry-After, then recovers and delivers everything', async () => {
    const fake = await fakeFal();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 0.3, where: 'header' } });
    const app = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(8), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(8);
    const [throttled, ...later] = fake.submits();
    expect([throttled, ...later].map((c) => c?.fault ?? 'ok')).toEqual(['rate-limit', 'ok', 'ok']);
    // Nothing was sent to fal while it asked us to wait: held against the wait the fake itself sent
    // and the times it recorded, so a slow machine can only make the gap longer, never fail it.
    expect(throttled!.retryAfterSeconds).toBe(0.3);
    const allowedAt = throttled!.at + throttled!.retryAfterSeconds! * 1000;
    for (const call of later) expect(call.at).toBeGreaterThanOrEqual(allowedAt);
    expect(done.batches[0]).toMatchObject({ attempts: 2, failures: 0, throttled: 1, state: 'done' });
  });

  it('does not fail a batch for being paced: more 429s than the attempt limit are waited out', async () => {
    const fake = await fakeFal();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 0.02 }, times: 4 });
    const app = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '2' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.batches[0]).toMatchObject({ attempts: 5, failures: 0, throttled: 4, state: 'done' });
    expect((await readManifest(app, done.id)).batches[0]).toMatchObject({ rateLimited: 4, attempts: 5 });
  });

  it('keeps what a partial output delivered and asks again only for the rest', async () => {
    const fake = await fakeFal();
    fake.inject({ on: 'submit', fault: { kind: 'partial', images: 1 } });
    const app = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(6, { seed: 1 }), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images.map((i) => i.index)).toEqual([1, 2, 3, 4, 5, 6]);
    const sizes = fake.submits().map((c) => (c.body as { num_images: number }).num_images);
    // the second batch takes the slot once fal is done with the first call (its image is saved
    // meanwhile); the first batch's call for its 3 missing images comes after
    expect(sizes).toEqual([4, 2, 3]);
    expect(done.batches[0]).toMatchObject({ delivered: 4, attempts: 2 });
    expect(done.batches[0]!.requestIds).toHaveLength(2);
  });

  it('waits out a status call that hangs without submitting again', async () => {
    const fake = await fakeFal(50);
    // Through the polling path: the status stream drops, the runner polls, and the first poll hangs.
    fake.dropStatusStreams({ afterEvents: 1 });
    fake.inject({ on: 'status', fault: { kind: 'hang' } });
    const app = await buildApp({ env: falEnv(fake), requestTimeoutMs: 300, falStreamRetryMs: [] });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    expect(fake.submits()).toHaveLength(1);
    expect(fake.calls.filter((c) => c.fault === 'hang')).toHaveLength(1);
  });

  it('downloads again after a failed download, without paying for a second call', async () => {
    const fake = await fakeFal();
    fake.inject({ on: 'file', fault: { kind: 'server-error', status: 503 } });
    const app = await buildApp({ env: falEnv(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.images).toHaveLength(4);
    expect(fake.submits()).toHaveLength(1);
    expect(done.batches[0]).toMatchObject({ attempts: 1, failures: 1 });
  });

  it('fails only the batch that keeps failing; the rest of the job is delivered', async () => {
    const fake = await fakeFal();
    fake.inject({ on: 'submit', fault: { kind: 'server-error' }, times: 3 });
    const app = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '3' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(10), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images.map((i) => i.index)).toEqual([5, 6, 7, 8, 9, 10]);
    expect(done.batches[0]).toMatchObject({ state: 'failed', attempts: 3, error: 'fal answered HTTP 500: Internal Server Error' });
    expect(done.error).toBe('completed with 4 images failed: fal answered HTTP 500: Internal Server Error');
    const manifest = await readManifest(app, done.id);
    expect(manifest.summary).toMatchObject({ delivered: 6, failed: 4 });
    expect(manifest.batches[0]).toMatchObject({ state: 'failed', attempts: 3, error: 'fal answered HTTP 500: Internal Server Error' });
  });

  it('fails the job with the reason when fal refuses the key, without retrying it', async () => {
    const fake = await fakeFal();
    const app = await buildApp({ env: { FAL_KEY: 'wrong-key', FAL_BASE_URL: fake.url } });
    const done = await app.engine.waitFor((await app.engine.submit(request(8), requester())).id);
    expect(done.state).toBe('failed');
    expect(done.error).toBe('all 8 images failed: fal refused the credentials (HTTP 401): check the key or token');
    expect(fake.submits()).toHaveLength(2);
  });

  it('cancels a running call at fal when the job is cancelled', async () => {
    const fake = await fakeFal(2_000);
    const app = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '1' }) });
    const job = await app.engine.submit(request(12), requester());
    await untilProgress(app, (j) => j.id === job.id && j.batches[0]!.requestId !== undefined);
    await app.engine.cancel(job.id, { id: 'user-1' });
    const done = await app.engine.waitFor(job.id);
    expect(done.state).toBe('canceled');
    expect(fake.submits()).toHaveLength(1);
    const cancels = fake.calls.filter((c) => c.method === 'PUT' && c.path.endsWith('/cancel'));
    expect(cancels.map((c) => c.path)).toEqual([`/fal-ai/flux/requests/${done.batches[0]!.requestIds[0]}/cancel`]);
  });

  it('resumes after a restart by polling the calls already submitted, never submitting them again', async () => {
    const fake = await fakeFal(800);
    const first = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '2' }) });
    const job = await first.engine.submit(request(8), requester());
    await untilProgress(first, (j) => j.id === job.id && j.batches.every((b) => b.requestId !== undefined));
    await first.close();
    expect(fake.submits()).toHaveLength(2);

    const second = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '2' }), dir: first.dir });
    expect(await second.engine.resume()).toBe(1);
    const done = await second.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(8);
    expect(fake.submits()).toHaveLength(2);
    expect(done.batches.map((b) => b.attempts)).toEqual([1, 1]);
    expect((await readManifest(second, job.id)).summary.delivered).toBe(8);
  });
});

/** The provider as it is, noting when each submit starts. */
function recordingSubmits(inner: Provider, started: number[]): Provider {
  return new Proxy(inner, {
    get(target, key) {
      if (key === 'submit') {
        return (...args: Parameters<Provider['submit']>) => {
          started.push(Date.now());
          return target.submit(...args);
        };
      }
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

describe('fal provider under the scheduler', () => {
  it('keeps FAL_CONCURRENCY calls in flight at most and FAL_RATE_LIMIT submits per window', async () => {
    const fake = await fakeFal(120);
    const env = falEnv(fake, { FAL_CONCURRENCY: '2', FAL_RATE_LIMIT: '3/s' });
    // The moments the gate let each submit go, taken as the real fal provider is called: arrival times
    // at the fake add each request's trip here, which varies with the machine's load by more than the
    // gate's 1 % margin, so a window check on them could fail a correct scheduler.
    const started: number[] = [];
    const real = createProviders(loadConfig(env), { fetch: loopbackFetch });
    const app = await buildApp({ env, providers: { ...real, fal: recordingSubmits(real.fal!, started) } });
    const done = await app.engine.waitFor((await app.engine.submit(request(28), requester())).id);
    expect(done.images).toHaveLength(28);
    expect(fake.submits()).toHaveLength(7);
    expect(started).toHaveLength(7);
    for (const t of started) expect(started.filter((u) => u >= t && u < t + 1000).length).toBeLessThanOrEqual(3);
    // a call is in flight at fal from its submit to its result request (its images are downloaded
    // from the media host after that, while the slot already serves the next call)
    const spans = [...fake.requests.values()].map((r) => {
      const last = Math.max(...fake.calls.filter((c) => c.path.includes(r.id) && !c.path.startsWith('/files/')).map((c) => c.at));
      return [r.createdAt, last] as const;
    });
    for (const [start] of spans) expect(spans.filter(([s, e]) => s <= start && e > start).length).toBeLessThanOrEqual(2);
  });

  it('lets a second server’s small job through while a first server’s large job is running', async () => {
    const fake = await fakeFal(40);
    const app = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '1' }) });
    const big = await app.engine.submit(request(40, { prompt: 'big job' }), requester('guild-A'));
    await untilProgress(app, (j) => j.id === big.id && j.batches[0]!.requestId !== undefined);
    const small = await app.engine.submit(request(4, { prompt: 'small job' }), requester('guild-B'));
    await app.engine.waitFor(small.id);
    const order = fake.submits().map((c) => (c.body as { prompt: string }).prompt);
    // guild B's only call goes out within two turns, not after guild A's ten calls
    expect(order.indexOf('small job')).toBeLessThanOrEqual(2);
    await app.engine.cancel(big.id, { id: 'test' });
  });
});
