import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { UserError } from '../../src/core/errors.js';
import type { Provider } from '../../src/core/provider.js';
import { ASPECT_RATIOS } from '../../src/core/types.js';
import { civitaiLoraSupport } from '../../src/providers/civitai.js';
import { CIVITAI_SIZES } from '../../src/providers/facts.js';
import { createProviders } from '../../src/providers/index.js';
import { startFakeCivitai, type FakeCivitai } from '../fakes/civitai.js';
import { loopbackFetch } from '../fakes/http.js';
import { buildApp, onCleanup, rejectionOf, requester, tempDir, untilProgress } from '../helpers.js';

const TOKEN = 'civitai-test-token';
const MODEL = 'urn:air:sdxl:checkpoint:civitai:101055@128078';
const LORA = 'urn:air:sdxl:lora:civitai:82098@87153';

async function fakeCivitai(latencyMs = 20): Promise<FakeCivitai> {
  const fake = await startFakeCivitai({ key: TOKEN, latencyMs });
  onCleanup(() => fake.close());
  return fake;
}

const env = (fake: FakeCivitai, extra: Record<string, string> = {}) => ({ CIVITAI_API_TOKEN: TOKEN, CIVITAI_BASE_URL: fake.url, ...extra });

const request = (count: number, extra: object = {}) => ({
  prompt: 'a lighthouse at dusk',
  count,
  provider: 'civitai' as const,
  model: MODEL,
  aspectRatio: '16:9' as const,
  ...extra,
});

type Body = { params: Record<string, unknown>; quantity: number; additionalNetworks?: Record<string, unknown> } & Record<string, unknown>;
const bodies = (fake: FakeCivitai) => fake.submits().map((c) => c.body as Body);

function providerFor(fake: FakeCivitai): Provider {
  return createProviders(loadConfig({ ...env(fake), LOG_LEVEL: 'silent' }), { fetch: loopbackFetch, requestTimeoutMs: 2_000 }).civitai!;
}

describe('CivitAI provider: sizes and LoRAs', () => {
  it('maps our 8 aspect ratios to SDXL sizes: multiples of 64, about a megapixel, no side over 1440', () => {
    expect(Object.keys(CIVITAI_SIZES).sort()).toEqual([...ASPECT_RATIOS].sort());
    for (const ratio of ASPECT_RATIOS) {
      const { width, height } = CIVITAI_SIZES[ratio];
      const [w, h] = ratio.split(':').map(Number) as [number, number];
      expect([width % 64, height % 64]).toEqual([0, 0]);
      expect(Math.max(width, height)).toBeLessThanOrEqual(1440);
      expect(width * height).toBeGreaterThan(0.7e6);
      expect(width * height).toBeLessThan(1.2e6);
      expect(Math.abs(width / height - w / h) / (w / h)).toBeLessThan(0.1);
    }
  });

  it('takes LoRAs by AIR only, and names the one it refuses', () => {
    expect(civitaiLoraSupport(MODEL, [{ id: LORA, scale: 0.8 }])).toBeUndefined();
    expect(civitaiLoraSupport(MODEL, [{ id: LORA, scale: 1 }, { id: 'https://example.com/style.safetensors', scale: 1 }])).toBe(
      'CivitAI takes a LoRA only by its AIR (`urn:air:sdxl:lora:civitai:MODEL@VERSION`), not `https://example.com/style.safetensors`; use `--provider fal` for a URL or Hugging Face LoRA.',
    );
    expect(civitaiLoraSupport(MODEL, [{ id: 'owner/some-lora', scale: 1 }])).toContain('not `owner/some-lora`');
    // A checkpoint's AIR is not a LoRA.
    expect(civitaiLoraSupport(MODEL, [{ id: MODEL, scale: 1 }])).toContain(`not \`${MODEL}\``);
  });
});

describe('CivitAI provider (our HTTP layer against the fake orchestration API)', () => {
  it('makes 6 images in 2 jobs of 4 and 2, at the 16:9 size with the seed, then downloads the blobs', async () => {
    const fake = await fakeCivitai();
    const app = await buildApp({ env: env(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(6, { seed: 1234, negative: 'blurry' }), requester())).id);
    expect(done.state).toBe('completed');
    expect(bodies(fake).map((b) => b.quantity).sort()).toEqual([2, 4]);
    for (const body of bodies(fake)) {
      expect(body).toMatchObject({
        $type: 'textToImage',
        baseModel: 'SDXL',
        model: MODEL,
        params: { prompt: 'a lighthouse at dusk', negativePrompt: 'blurry', width: 1344, height: 768, scheduler: 'EulerA' },
      });
      expect(body).not.toHaveProperty('additionalNetworks');
    }
    // The two calls carry the job's seed and the next one.
    expect(bodies(fake).map((b) => b.params.seed as number).sort((a, b) => a - b)).toEqual([1234, 1234 + 4].sort((a, b) => a - b));
    expect(fake.submits()[0]!.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(fake.submits()[0]!.query).toEqual({ wait: 'false' });
    // Polled by the token each submit answered.
    expect(new Set(fake.polls().map((c) => c.query.token))).toEqual(new Set(fake.generations.map((g) => g.token)));
    expect(done.images).toHaveLength(6);
    expect(done.images[0]).toMatchObject({ width: 1344, height: 768, nsfw: false });
    expect(fake.calls.filter((c) => c.path.startsWith('/blobs/'))).toHaveLength(6);
  });

  it('sends each aspect ratio as its size', async () => {
    const fake = await fakeCivitai();
    const provider = providerFor(fake);
    await provider.submit({ prompt: 'x', model: MODEL, aspectRatio: '2:3', count: 1, seed: 7 });
    await provider.submit({ prompt: 'x', model: MODEL, aspectRatio: '21:9', count: 1, seed: 8 });
    expect(bodies(fake).map((b) => [b.params.width, b.params.height, b.params.seed])).toEqual([
      [832, 1216, 7],
      [1344, 576, 8],
    ]);
  });

  it('sends AIR LoRAs as additionalNetworks with their strength', async () => {
    const fake = await fakeCivitai();
    const app = await buildApp({ env: env(fake) });
    const loras = [
      { id: LORA, scale: 0.65 },
      { id: 'urn:air:sdxl:lycoris:civitai:1234@5678', scale: 1 },
    ];
    const done = await app.engine.waitFor((await app.engine.submit(request(2, { loras }), requester())).id);
    expect(done.state).toBe('completed');
    expect(bodies(fake)[0]!.additionalNetworks).toEqual({
      [LORA]: { type: 'Lora', strength: 0.65 },
      'urn:air:sdxl:lycoris:civitai:1234@5678': { type: 'Lycoris', strength: 1 },
    });
  });

  it('refuses a URL LoRA before anything is sent', async () => {
    const fake = await fakeCivitai();
    const app = await buildApp({ env: env(fake) });
    const error = await rejectionOf(app.engine.submit(request(2, { loras: [{ id: 'https://example.com/x.safetensors', scale: 1 }] }), requester()));
    expect(error).toBeInstanceOf(UserError);
    expect((error as Error).message).toContain('CivitAI takes a LoRA only by its AIR');
    expect(fake.calls).toHaveLength(0);
  });

  it('pauses on a 429 for its Retry-After, then recovers', async () => {
    const fake = await fakeCivitai();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 0.3, where: 'header' } });
    const app = await buildApp({ env: env(fake, { CIVITAI_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    const [throttled, after] = fake.submits();
    expect(fake.submits().map((c) => c.fault ?? 'ok')).toEqual(['rate-limit', 'ok']);
    expect(after!.at).toBeGreaterThanOrEqual(throttled!.at + 300);
    expect(done.batches[0]).toMatchObject({ throttled: 1, failures: 0 });
  });

  it('sends a failed job again and reports the attempt', async () => {
    const fake = await fakeCivitai();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'the worker ran out of memory' } });
    const app = await buildApp({ env: env(fake, { CIVITAI_CONCURRENCY: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.batches[0]).toMatchObject({ attempts: 2, failures: 1, state: 'done' });
    expect(fake.submits()).toHaveLength(2);
    expect(done.images).toHaveLength(4);
  });

  it('fails one batch for good and delivers the others', async () => {
    const fake = await fakeCivitai();
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'the worker ran out of memory' }, times: 2 });
    const app = await buildApp({ env: env(fake, { CIVITAI_CONCURRENCY: '1', PROVIDER_MAX_ATTEMPTS: '2' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(6), requester())).id);
    expect(done.batches.map((b) => b.state)).toEqual(['failed', 'done']);
    expect(done.batches[0]!.error).toMatch(/CivitAI job [0-9a-f-]+ failed: the worker ran out of memory/);
    expect(done.images).toHaveLength(2);
  });

  it('resumes after a restart by polling the saved token, without a second submit', async () => {
    const fake = await fakeCivitai(400);
    const dir = await tempDir();
    const first = await buildApp({ dir, env: env(fake) });
    const job = await first.engine.submit(request(3), requester());
    await untilProgress(first, (j) => j.batches[0]?.requestId !== undefined);
    await first.close();
    expect(fake.submits()).toHaveLength(1);
    const polledBefore = fake.polls().length;

    const second = await buildApp({ dir, env: env(fake) });
    expect(await second.engine.resume()).toBe(1);
    const done = await second.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(3);
    expect(fake.submits()).toHaveLength(1);
    expect(fake.polls().length).toBeGreaterThan(polledBefore);
    expect(fake.polls().at(-1)!.query.token).toBe(fake.generations[0]!.token);
  });

  it('flags an image the result marks NSFW', async () => {
    const fake = await fakeCivitai();
    const app = await buildApp({ env: env(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(1, { prompt: 'NSFW-TEST scene' }), requester())).id);
    expect(done.images.map((i) => i.nsfw)).toEqual([true]);
  });

  it('maps a 400 to invalid with its ProblemDetails, a 5xx to server, a 404 token to not_found', async () => {
    const fake = await fakeCivitai();
    const provider = providerFor(fake);
    const tooMany = await rejectionOf(provider.submit({ prompt: 'x', model: MODEL, aspectRatio: '1:1', count: 5, seed: 1 }));
    expect(tooMany).toMatchObject({ kind: 'invalid', retryable: false, details: { status: 400 } });
    expect((tooMany as Error).message).toBe('CivitAI refused the request (HTTP 400): One or more validation errors occurred.; quantity: Expected an integer from 1 to 4.');
    fake.inject({ on: 'submit', fault: { kind: 'server-error', status: 503 } });
    expect(await rejectionOf(provider.submit({ prompt: 'x', model: MODEL, aspectRatio: '1:1', count: 1, seed: 1 }))).toMatchObject({ kind: 'server', retryable: true });
    expect(await rejectionOf(provider.status('eyJKb2JzIjpbIm5vcGUiXX0', MODEL))).toMatchObject({ kind: 'not_found' });
  });

  it('fails the job when the token is refused, without showing it', async () => {
    const fake = await fakeCivitai();
    const app = await buildApp({ env: { CIVITAI_API_TOKEN: 'wrong-token', CIVITAI_BASE_URL: fake.url } });
    const done = await app.engine.waitFor((await app.engine.submit(request(2), requester())).id);
    expect(done.state).toBe('failed');
    expect(done.error).toContain('CivitAI refused the credentials (HTTP 401)');
    expect(done.error).not.toContain('wrong-token');
    expect(fake.submits()).toHaveLength(1);
  });

  it('cancels by token', async () => {
    const fake = await fakeCivitai(5_000);
    const provider = providerFor(fake);
    const token = await provider.submit({ prompt: 'x', model: MODEL, aspectRatio: '1:1', count: 2, seed: 1 });
    await provider.cancel(token, MODEL);
    const cancel = fake.calls.find((c) => c.method === 'DELETE')!;
    expect(cancel.query).toEqual({ token, force: 'true' });
    expect(await provider.status(token, MODEL)).toMatchObject({ state: 'failed', error: expect.stringContaining('deleted') });
  });
});
