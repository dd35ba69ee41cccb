import path from 'node:path';
import { readdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { ProviderError, type Provider } from '../../src/core/provider.js';
import { ASPECT_RATIOS } from '../../src/core/types.js';
import { HeldResults } from '../../src/providers/held-results.js';
import { createProviders } from '../../src/providers/index.js';
import { OpenAIProvider, openaiSize } from '../../src/providers/openai.js';
import { loopbackFetch } from '../fakes/http.js';
import { startFakeOpenAI, type FakeOpenAI } from '../fakes/openai.js';
import { buildApp, onCleanup, readManifest, rejectionOf, requester, tempDir, untilProgress } from '../helpers.js';

const KEY = 'sk-test-openai-key';

async function fakeOpenAI(latencyMs = 20): Promise<FakeOpenAI> {
  const fake = await startFakeOpenAI({ key: KEY, latencyMs });
  onCleanup(() => fake.close());
  return fake;
}

const env = (fake: FakeOpenAI, extra: Record<string, string> = {}) => ({ OPENAI_API_KEY: KEY, OPENAI_BASE_URL: fake.url, ...extra });

const request = (count: number, extra: object = {}) => ({
  prompt: 'a lighthouse at dusk',
  count,
  provider: 'openai' as const,
  model: 'gpt-image-1',
  aspectRatio: '16:9' as const,
  ...extra,
});

type Body = Record<string, unknown>;
const bodies = (fake: FakeOpenAI) => fake.submits().map((c) => c.body as Body);

/** The provider as createProviders builds it from `env`, with its held answers in `dir`. */
function providerFor(fake: FakeOpenAI, dir: string): Provider {
  return createProviders(loadConfig({ ...env(fake), OUTPUT_DIR: dir, LOG_LEVEL: 'silent' }), { fetch: loopbackFetch, requestTimeoutMs: 2_000 }).openai!;
}

describe('OpenAI provider: sizes and limits', () => {
  it('maps our 8 aspect ratios to the nearest size each model makes', () => {
    const sizes = (model: string) => Object.fromEntries(ASPECT_RATIOS.map((ratio) => [ratio, openaiSize(model, ratio).join('x')]));
    expect(sizes('gpt-image-1')).toEqual({
      '1:1': '1024x1024', '16:9': '1536x1024', '9:16': '1024x1536', '4:3': '1536x1024',
      '3:4': '1024x1536', '3:2': '1536x1024', '2:3': '1024x1536', '21:9': '1536x1024',
    });
    expect(sizes('dall-e-3')).toEqual({
      '1:1': '1024x1024', '16:9': '1792x1024', '9:16': '1024x1792', '4:3': '1792x1024',
      '3:4': '1024x1792', '3:2': '1792x1024', '2:3': '1024x1792', '21:9': '1792x1024',
    });
  });

  it('allows 10 images a call for gpt-image-1 and 1 for dall-e-3', () => {
    const provider = new OpenAIProvider({ key: KEY, heldDir: '/nonexistent/held' });
    expect([provider.maxImagesFor('gpt-image-1'), provider.maxImagesFor('dall-e-3')]).toEqual([10, 1]);
  });
});

describe('OpenAI provider (real openai client against the fake Images API)', () => {
  it('makes 12 gpt-image-1 images in 2 calls of 10 and 2, at the 16:9 size, without a seed', async () => {
    const fake = await fakeOpenAI();
    const app = await buildApp({ env: env(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(12, { seed: 5 }), requester())).id);
    expect(done.state).toBe('completed');
    expect(bodies(fake).map((b) => b.n).sort()).toEqual([10, 2]);
    for (const body of bodies(fake)) {
      expect(body).toMatchObject({ model: 'gpt-image-1', prompt: 'a lighthouse at dusk', size: '1536x1024', quality: 'medium', output_format: 'png' });
      // OpenAI takes no seed, and the GPT image models refuse response_format.
      expect(body).not.toHaveProperty('seed');
      expect(body).not.toHaveProperty('response_format');
    }
    expect(fake.submits()[0]!.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(fake.submits().map((c) => c.path)).toEqual(Array(2).fill('/v1/images/generations'));
    expect(done.images).toHaveLength(12);
    expect(done.images[0]).toMatchObject({ width: 1536, height: 1024, contentType: 'image/png' });
    // Saved and handed over: nothing is left held.
    expect(await readdir(path.join(app.dir, 'output', '.held')).catch(() => [])).toEqual([]);
  });

  it('asks dall-e-3 for one base64 image a call, at its own 9:16 size', async () => {
    const fake = await fakeOpenAI();
    const app = await buildApp({ env: env(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(3, { model: 'dall-e-3', aspectRatio: '9:16' }), requester())).id);
    expect(done.state).toBe('completed');
    expect(bodies(fake)).toHaveLength(3);
    expect(bodies(fake)[0]).toEqual({ model: 'dall-e-3', prompt: 'a lighthouse at dusk', n: 1, size: '1024x1792', response_format: 'b64_json', quality: 'standard' });
    expect(done.images).toHaveLength(3);
    expect(done.images[0]).toMatchObject({ width: 1024, height: 1792 });
  });

  it('asks gpt-image-1 drafts at low quality and estimates them at its price; dall-e-3 drafts cost what its images do', async () => {
    const fake = await fakeOpenAI();
    const app = await buildApp({ env: env(fake) });
    const drafts = await app.engine.waitFor((await app.engine.submit(request(4, { draft: true }), requester())).id);
    expect(drafts.state).toBe('completed');
    expect(bodies(fake)[0]).toMatchObject({ model: 'gpt-image-1', quality: 'low', n: 4 });
    // 4 × $0.011 (low) against 4 × $0.042 (medium, the built-in price)
    expect([drafts.estimatedCostUsd, drafts.fullSizeCostUsd]).toEqual([0.044, 0.168]);
    const dalle = await app.engine.submit(request(2, { draft: true, model: 'dall-e-3' }), requester());
    expect([dalle.estimatedCostUsd, dalle.fullSizeCostUsd]).toEqual([0.08, 0.08]);
    await app.engine.waitFor(dalle.id);
  });

  it('asks gpt-image-1 for webp at the requested compression, and sends no negative prompt', async () => {
    const fake = await fakeOpenAI();
    const app = await buildApp({ env: env(fake) });
    const done = await app.engine.waitFor(
      (await app.engine.submit(request(2, { format: 'webp', quality: 70, negative: 'blurry', aspectRatio: '3:4' }), requester())).id,
    );
    expect(done.state).toBe('completed');
    expect(bodies(fake)[0]).toMatchObject({ output_format: 'webp', output_compression: 70, size: '1024x1536' });
    expect(JSON.stringify(bodies(fake)[0])).not.toContain('blurry');
    expect(done.images[0]).toMatchObject({ contentType: 'image/webp', width: 1024, height: 1536 });
  });

  it('keeps DALL·E 3 revised prompts per image in the held answer', async () => {
    const fake = await fakeOpenAI();
    const dir = await tempDir();
    const provider = providerFor(fake, dir);
    const id = await provider.submit({ prompt: 'a red fox', model: 'dall-e-3', aspectRatio: '1:1', count: 1, seed: 1 });
    expect(await provider.status(id, 'dall-e-3')).toEqual({ state: 'succeeded' });
    const held = await new HeldResults(path.join(dir, '.held'), 'openai').get(id);
    expect(held?.outputs.map((o) => o.revisedPrompt)).toEqual(['a red fox, shown in rich detail (image 1)']);
    const [image] = await provider.result(id, 'dall-e-3');
    expect(image).toMatchObject({ contentType: 'image/png', width: 1024, height: 1024, nsfw: false, revisedPrompt: 'a red fox, shown in rich detail (image 1)' });
  });

  it('records each image’s revised prompt in the job and its manifest', async () => {
    const fake = await fakeOpenAI();
    const app = await buildApp({ env: env(fake) });
    const job = await app.engine.waitFor((await app.engine.submit(request(2, { model: 'dall-e-3', prompt: 'a red fox' }), requester())).id);
    expect(job.images.map((image) => image.revisedPrompt)).toEqual([
      expect.stringMatching(/^a red fox, shown in rich detail/),
      expect.stringMatching(/^a red fox, shown in rich detail/),
    ]);
    const manifest = await readManifest(app, job.id);
    expect(manifest.images.every((image) => typeof image.revisedPrompt === 'string')).toBe(true);
  });

  it('pauses on a 429 for its Retry-After, then recovers', async () => {
    const fake = await fakeOpenAI();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 0.3, where: 'header' } });
    const app = await buildApp({ env: env(fake, { OPENAI_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    const [throttled, after] = fake.submits();
    // The client's own retries are off: one throttled call, then one after the wait.
    expect(fake.submits().map((c) => c.fault ?? 'ok')).toEqual(['rate-limit', 'ok']);
    expect(after!.at).toBeGreaterThanOrEqual(throttled!.at + 300);
    expect(done.batches[0]).toMatchObject({ throttled: 1, failures: 0 });
  });

  it('reads retry-after-ms before Retry-After', async () => {
    const fake = await fakeOpenAI();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 2.5, where: 'both' } });
    const provider = providerFor(fake, await tempDir());
    const error = (await rejectionOf(provider.submit({ prompt: 'x', model: 'gpt-image-1', aspectRatio: '1:1', count: 1, seed: 1 }))) as ProviderError;
    expect(error).toBeInstanceOf(ProviderError);
    // Retry-After says "2.5" (seconds, which a header reader could truncate); retry-after-ms says 2500 exactly.
    expect(error).toMatchObject({ kind: 'rate_limited', details: { status: 429, retryAfterMs: 2500 } });
    expect(error.message).toContain('Rate limit reached for images per minute');
  });

  it('sends a failed call again and reports the attempt', async () => {
    const fake = await fakeOpenAI();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'image generation failed upstream' } });
    const app = await buildApp({ env: env(fake, { OPENAI_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.batches[0]).toMatchObject({ attempts: 2, failures: 1, state: 'done' });
    expect(fake.generations()).toHaveLength(1);
  });

  it('fails one batch for good and delivers the others', async () => {
    const fake = await fakeOpenAI();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'image generation failed upstream' }, times: 2 });
    const app = await buildApp({ env: env(fake, { OPENAI_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '2' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(12), requester())).id);
    expect(done.batches.map((b) => b.state)).toEqual(['failed', 'done']);
    expect(done.error).toBe('completed with 10 images failed: OpenAI answered HTTP 500: image generation failed upstream');
    expect(done.images).toHaveLength(2);
  });

  it('reports a moderation refusal as the failure of that prompt\'s images, sent once, while the other prompt is delivered', async () => {
    const fake = await fakeOpenAI();
    const app = await buildApp({ env: env(fake, { OPENAI_CONCURRENCY: '1' }) });
    const prompts = [
      { prompt: 'a calm lake', count: 2, lines: [{ line: 1, count: 2 }] },
      { prompt: 'MODERATION-TEST scene', count: 2, lines: [{ line: 2, count: 2 }] },
    ];
    const done = await app.engine.waitFor((await app.engine.submit(request(4, { prompt: 'a calm lake', prompts }), requester())).id);
    expect(done.images).toHaveLength(2);
    expect(done.batches.map((b) => b.state)).toEqual(['done', 'failed']);
    expect(done.batches[1]!.error).toMatch(/^OpenAI's safety system refused the prompt \(moderation_blocked\): Your request was rejected by the safety system/);
    expect(done.error).toContain('completed with 2 images failed: OpenAI\'s safety system refused the prompt (moderation_blocked)');
    // Not retried: the same prompt would be refused again.
    expect(fake.submits().filter((c) => (c.body as Body).prompt === 'MODERATION-TEST scene')).toHaveLength(1);
  });

  it('names DALL·E 3\'s content_policy_violation the same way', async () => {
    const fake = await fakeOpenAI();
    const provider = providerFor(fake, await tempDir());
    const error = await rejectionOf(provider.submit({ prompt: 'MODERATION-TEST', model: 'dall-e-3', aspectRatio: '1:1', count: 1, seed: 1 }));
    expect(error).toMatchObject({ kind: 'refused', retryable: false, details: { status: 400 } });
    expect((error as Error).message).toContain('(content_policy_violation): Your request was rejected as a result of our safety system');
  });

  it('maps a refused request to invalid and a hang to a retryable timeout', async () => {
    const fake = await fakeOpenAI();
    const dir = await tempDir();
    const provider = providerFor(fake, dir);
    const tooMany = await rejectionOf(provider.submit({ prompt: 'x', model: 'dall-e-3', aspectRatio: '1:1', count: 2, seed: 1 }));
    expect(tooMany).toMatchObject({ kind: 'invalid', retryable: false, message: "OpenAI refused the request (HTTP 400, invalid_value): Invalid 'n': dall-e-3 supports n=1 only." });
    fake.inject({ on: 'submit', fault: { kind: 'hang' } });
    const quick = createProviders(loadConfig({ ...env(fake), OUTPUT_DIR: dir }), { fetch: loopbackFetch, requestTimeoutMs: 100 }).openai!;
    expect(await rejectionOf(quick.submit({ prompt: 'x', model: 'gpt-image-1', aspectRatio: '1:1', count: 1, seed: 1 }))).toMatchObject({ kind: 'timeout', retryable: true });
    // Neither left an answer held.
    expect(await readdir(path.join(dir, '.held')).catch(() => [])).toEqual([]);
  });

  it('fails the job when the key is refused, saying so', async () => {
    const fake = await fakeOpenAI();
    const app = await buildApp({ env: { OPENAI_API_KEY: 'sk-wrong', OPENAI_BASE_URL: fake.url } });
    const done = await app.engine.waitFor((await app.engine.submit(request(3), requester())).id);
    expect(done.state).toBe('failed');
    expect(done.error).toContain('OpenAI refused the credentials (HTTP 401)');
    expect(done.error).not.toContain('sk-wrong');
    expect(fake.submits()).toHaveLength(1);
  });

  it('resumes after a restart from the held answer, without a second generation', async () => {
    const fake = await fakeOpenAI();
    const dir = await tempDir();
    // The first process is stopped after OpenAI answered and the request id was saved, before any status:
    // its provider is the real one, with a status that waits until the shutdown aborts it.
    const real = new OpenAIProvider({ key: KEY, baseUrl: fake.url, heldDir: path.join(dir, 'output', '.held'), fetch: loopbackFetch });
    const stalled: Provider = Object.assign(Object.create(real) as OpenAIProvider, {
      status: (_id: string, _model: string, signal?: AbortSignal) =>
        new Promise<never>((_, reject) => signal?.addEventListener('abort', () => reject(new DOMException('stopped', 'AbortError')), { once: true })),
    });
    const first = await buildApp({ dir, env: env(fake), providers: { openai: stalled } });
    const job = await first.engine.submit(request(3), requester());
    await untilProgress(first, (j) => j.batches[0]?.requestId !== undefined);
    await first.close();
    expect(fake.generations()).toHaveLength(1);

    const second = await buildApp({ dir, env: env(fake) });
    expect(await second.engine.resume()).toBe(1);
    const done = await second.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(3);
    expect(fake.generations()).toHaveLength(1);
    expect(fake.submits()).toHaveLength(1);
  });
});
