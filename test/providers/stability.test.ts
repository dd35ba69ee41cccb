import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { ProviderError, type Provider } from '../../src/core/provider.js';
import { ASPECT_RATIOS } from '../../src/core/types.js';
import { createProviders } from '../../src/providers/index.js';
import { STABILITY_RATE_LIMIT_PAUSE_MS, StabilityProvider, stabilityForm } from '../../src/providers/stability.js';
import { loopbackFetch } from '../fakes/http.js';
import { STABILITY_SIZES, startFakeStability, type FakeStability } from '../fakes/stability.js';
import { buildApp, onCleanup, readManifest, rejectionOf, requester, tempDir, untilProgress } from '../helpers.js';

const KEY = 'sk-stability-test';

async function fakeStability(latencyMs = 20): Promise<FakeStability> {
  const fake = await startFakeStability({ key: KEY, latencyMs });
  onCleanup(() => fake.close());
  return fake;
}

const env = (fake: FakeStability, extra: Record<string, string> = {}) => ({
  STABILITY_API_KEY: KEY,
  STABILITY_BASE_URL: fake.url,
  STABILITY_MODELS: 'stable-image-core,stable-image-ultra,sd3.5-large',
  ...extra,
});

const request = (count: number, extra: object = {}) => ({
  prompt: 'a lighthouse at dusk',
  count,
  provider: 'stability' as const,
  model: 'stable-image-core',
  aspectRatio: '16:9' as const,
  ...extra,
});

/** The provider on its own, holding answers in a fresh folder. */
async function provider(fake: FakeStability, extra: { key?: string; fetch?: typeof fetch } = {}): Promise<StabilityProvider> {
  return new StabilityProvider({ key: extra.key ?? KEY, baseUrl: fake.url, heldDir: path.join(await tempDir(), '.held'), fetch: extra.fetch ?? loopbackFetch, requestTimeoutMs: 2_000 });
}

const call = { prompt: 'a lighthouse', model: 'stable-image-core', aspectRatio: '1:1' as const, count: 1, seed: 7 };

describe('Stability provider through the engine (fake v2beta API)', () => {
  it('makes one call per image for 3 images, sending aspect ratio and seed, and saves all 3', async () => {
    const fake = await fakeStability();
    const app = await buildApp({ env: env(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(3, { seed: 42 }), requester())).id);
    expect(done.state).toBe('completed');
    expect(fake.submits().map((c) => c.path)).toEqual(Array(3).fill('/v2beta/stable-image/generate/core'));
    expect(fake.submits().map((c) => fake.fieldsOf(c).seed).sort()).toEqual(['42', '43', '44']);
    for (const submit of fake.submits()) {
      expect(fake.fieldsOf(submit)).toEqual({ prompt: 'a lighthouse at dusk', aspect_ratio: '16:9', seed: expect.any(String) as string, output_format: 'png' });
      expect(submit.headers.authorization).toBe(`Bearer ${KEY}`);
      expect(submit.headers.accept).toBe('image/*');
      expect(submit.headers['content-type']).toMatch(/^multipart\/form-data; boundary=/);
    }
    expect(done.images).toHaveLength(3);
    expect(done.images[0]).toMatchObject({ ...STABILITY_SIZES['16:9'], contentType: 'image/png', nsfw: false });
    // The seed each image carries is the one Stability reported for its call.
    expect(done.images.map((i) => i.seed).sort()).toEqual([42, 43, 44]);
    expect((await readManifest(app, done.id)).summary.delivered).toBe(3);
  });

  it('runs sd3.5 models on /sd3 with `model`, asks 5:4 for 4:3, and converts WebP it cannot make', async () => {
    const fake = await fakeStability();
    const app = await buildApp({ env: env(fake) });
    const job = request(1, { model: 'sd3.5-large', aspectRatio: '4:3', seed: 9, format: 'webp', negative: 'blurry' });
    const done = await app.engine.waitFor((await app.engine.submit(job, requester())).id);
    expect(done.state).toBe('completed');
    expect(fake.submits()[0]!.path).toBe('/v2beta/stable-image/generate/sd3');
    expect(fake.fieldsOf(fake.submits()[0]!)).toMatchObject({ model: 'sd3.5-large', aspect_ratio: '5:4', output_format: 'png', negative_prompt: 'blurry', seed: '9' });
    expect(done.images[0]).toMatchObject({ ...STABILITY_SIZES['5:4'], contentType: 'image/webp' });
  });

  it('pauses for a 429 Retry-After, then sends the call again and finishes', async () => {
    const fake = await fakeStability();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 0.3, where: 'header' } });
    const app = await buildApp({ env: env(fake, { STABILITY_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(2), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(2);
    const [throttled, after] = fake.submits();
    expect([throttled, after].map((c) => c?.fault ?? 'ok')).toEqual(['rate-limit', 'ok']);
    expect(after!.at).toBeGreaterThanOrEqual(throttled!.at + throttled!.retryAfterSeconds! * 1000);
    expect(fake.generations).toHaveLength(2);
  });

  it('sends a call that met a 500 again and reports the attempt', async () => {
    const fake = await fakeStability();
    fake.inject({ on: 'submit', fault: { kind: 'server-error', status: 500 } });
    const app = await buildApp({ env: env(fake, { STABILITY_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(1), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.batches[0]).toMatchObject({ attempts: 2, failures: 1, state: 'done' });
    expect(fake.submits()).toHaveLength(2);
  });

  it('a content-moderation 403 fails that call alone, with its reason, and is not sent again', async () => {
    const fake = await fakeStability();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'Your request was flagged by our content moderation system.' } });
    const app = await buildApp({ env: env(fake, { STABILITY_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(2), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.batches.map((b) => b.state).sort()).toEqual(['done', 'failed']);
    expect(fake.submits()).toHaveLength(2);
    expect(done.error).toContain("Stability's content moderation refused the request");
  });

  it('a batch whose call is refused fails alone, naming the reason, and the job keeps the other images', async () => {
    const fake = await fakeStability();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'Your request was flagged by our content moderation system.' } });
    const app = await buildApp({ env: env(fake, { STABILITY_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(3), requester())).id);
    expect(done.batches.map((b) => b.state).sort()).toEqual(['done', 'done', 'failed']);
    expect(done.images).toHaveLength(2);
    expect(done.error).toContain("Stability's content moderation refused the request: Your request was flagged by our content moderation system.");
  });

  it('fails the job when the key is refused, saying so, without retrying a call', async () => {
    const fake = await fakeStability();
    const app = await buildApp({ env: env(fake, { STABILITY_API_KEY: 'sk-revoked' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(2), requester())).id);
    expect(done.state).toBe('failed');
    expect(done.error).toContain('Stability refused the credentials (HTTP 401)');
    // One request per batch: a refused key is not retried.
    expect(done.batches.map((b) => b.attempts)).toEqual([1, 1]);
    expect(fake.submits()).toHaveLength(2);
  });

  it('flags an image Stability filtered (CONTENT_FILTERED) as nsfw', async () => {
    const fake = await fakeStability();
    const app = await buildApp({ env: env(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(1, { prompt: 'NSFW-TEST scene' }), requester())).id);
    expect(fake.generations[0]!.finishReason).toBe('CONTENT_FILTERED');
    expect(done.images[0]!.nsfw).toBe(true);
  });

  it('resumes after a restart from the held answer, never generating the image again', async () => {
    const fake = await fakeStability();
    const dir = await tempDir();
    const appEnv = env(fake);
    // The first process is stopped after the answer is held and its id saved, before any download:
    // its status() waits until the run is aborted by close().
    const real = createProviders(loadConfig({ ...appEnv, OUTPUT_DIR: path.join(dir, 'output') }), { fetch: loopbackFetch });
    const first = await buildApp({ env: appEnv, dir, providers: { stability: stalledAfterSubmit(real.stability!) } });
    const job = await first.engine.submit(request(1, { seed: 3 }), requester());
    await untilProgress(first, (j) => j.id === job.id && j.batches[0]!.requestId !== undefined);
    await first.close();
    expect(fake.generations).toHaveLength(1);
    const held = path.join(dir, 'output', '.held');
    expect((await readdir(held)).filter((f) => f.endsWith('.json'))).toHaveLength(1);

    const second = await buildApp({ env: appEnv, dir });
    expect(await second.engine.resume()).toBe(1);
    const done = await second.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(1);
    expect(done.batches[0]!.attempts).toBe(1);
    expect(fake.submits()).toHaveLength(1);
    expect(fake.generations).toHaveLength(1);
    // Once its image is saved, the call's held answer goes (the runner tells the provider it has settled).
    await vi.waitFor(async () => expect(await readdir(held)).toEqual([]));
  });
});

/** The provider as it is, except that status() never answers until its signal aborts. */
function stalledAfterSubmit(inner: Provider): Provider {
  return new Proxy(inner, {
    get(target, key) {
      if (key === 'status') {
        return (_id: string, _model: string, signal?: AbortSignal) =>
          new Promise((_, reject) => signal?.addEventListener('abort', () => reject(new ProviderError('timeout', 'stopped')), { once: true }));
      }
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

describe('Stability provider on its own', () => {
  it('maps every one of our aspect ratios to one Stability accepts', () => {
    for (const ratio of ASPECT_RATIOS) {
      const ask = stabilityForm({ ...call, aspectRatio: ratio }).fields.find(([name]) => name === 'aspect_ratio')![1];
      expect(Object.keys(STABILITY_SIZES)).toContain(ask);
    }
  });

  it('keeps the seed inside Stability range and refuses a model it does not have', () => {
    expect(stabilityForm({ ...call, seed: 4_294_967_295 + 5 }).fields).toContainEqual(['seed', '5']);
    expect(() => stabilityForm({ ...call, model: 'dall-e-3' })).toThrow('Stability has no model "dall-e-3"');
  });

  it('a 429 without Retry-After pauses for the 60 s Stability times an account out', async () => {
    const fake = await fakeStability();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 1, where: 'body' } });
    const error = await rejectionOf((await provider(fake)).submit(call));
    expect(error).toBeInstanceOf(ProviderError);
    expect(error).toMatchObject({ kind: 'rate_limited', details: { status: 429, retryAfterMs: STABILITY_RATE_LIMIT_PAUSE_MS } });
  });

  it('refuses a moderated call at submit, with its reason, as not worth sending again', async () => {
    const fake = await fakeStability();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'flagged: violence' } });
    const stability = await provider(fake);
    const error = await rejectionOf(stability.submit(call));
    expect(error).toBeInstanceOf(ProviderError);
    expect(error).toMatchObject({ kind: 'refused', retryable: false, message: "Stability's content moderation refused the request: flagged: violence" });
  });

  it('a 400 is an invalid request carrying Stability errors', async () => {
    const fake = await fakeStability();
    const error = await rejectionOf((await provider(fake)).submit({ ...call, prompt: '' }));
    expect(error).toMatchObject({ kind: 'invalid', message: 'Stability refused the request (HTTP 400): prompt: cannot be empty' });
  });

  it('the fake refuses a value outside Stability enums with its error shape', async () => {
    const fake = await fakeStability();
    const form = new FormData();
    form.append('prompt', 'x');
    form.append('aspect_ratio', '4:3');
    const response = await loopbackFetch(`${fake.url}/v2beta/stable-image/generate/ultra`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, accept: 'image/*' },
      body: form,
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ id: expect.any(String) as string, name: 'bad_request', errors: [expect.stringContaining('aspect_ratio: must be one of')] });
    expect(fake.generations).toHaveLength(0);
  });

  it('reads a base64 JSON answer too, with its seed', async () => {
    const fake = await fakeStability();
    const asJson: typeof fetch = (input, init) => loopbackFetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), accept: 'application/json' } });
    const stability = await provider(fake, { fetch: asJson });
    const id = await stability.submit({ ...call, seed: 11 });
    const [image] = await stability.result(id);
    expect(image).toMatchObject({ seed: 11, nsfw: false });
    expect(image!.data!.subarray(1, 4).toString('latin1')).toBe('PNG');
    expect(fake.submits()[0]!.headers.accept).toBe('application/json');
  });

  it('forgets a held answer on cancel, and says a missing one was lost', async () => {
    const fake = await fakeStability();
    const stability = await provider(fake);
    const id = await stability.submit(call);
    expect(await stability.status(id)).toEqual({ state: 'succeeded' });
    await stability.cancel(id);
    expect(await stability.status(id)).toEqual({ state: 'failed', error: 'the result was lost' });
  });
});
