/**
 * Upscale calls (`BatchCall.upscale`): each provider sends the given image — inline, as a data: URI — to
 * its upscaler and gets one image of exactly twice its size back; a bad image is refused as `invalid`,
 * and a 429 is a pause like any other call's. Real @fal-ai/client and replicate clients against the
 * fakes, which decode what they were sent; the local provider resizes with sharp.
 */
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PRICES, DEFAULT_REPLICATE_UPSCALE_MODEL, loadConfig } from '../../src/config.js';
import { ProviderError, UPSCALE_SCALE, type BatchCall, type Provider } from '../../src/core/provider.js';
import { startFakeFal } from '../fakes/fal.js';
import { fakeImage } from '../fakes/png.js';
import { startFakeReplicate } from '../fakes/replicate.js';
import { onCleanup, rejectionOf } from '../helpers.js';
import { providersFor, runCall } from './provider-calls.js';

/** An approved draft: 672×384, as fal's 16:9 draft size. */
const draftPng = () => fakeImage(672, 384, 'png', 'approved draft');

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** The call the runner makes for one approved image (prompt and seed are there, and must not be sent). */
const upscaleCall = (provider: Provider, image: Buffer, contentType = 'image/png'): BatchCall => ({
  prompt: 'a heron at dawn',
  model: provider.upscaleModel!,
  aspectRatio: '16:9',
  count: 1,
  seed: 42,
  upscale: { image, contentType, scale: UPSCALE_SCALE },
});

async function fal(env: Record<string, string> = {}) {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 10 });
  onCleanup(() => fake.close());
  return { fake, provider: providersFor({ FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url, ...env }).fal };
}

async function replicate(env: Record<string, string> = {}) {
  const fake = await startFakeReplicate({ key: 'r8-test-token', latencyMs: 10 });
  onCleanup(() => fake.close());
  return { fake, provider: providersFor({ REPLICATE_API_TOKEN: 'r8-test-token', REPLICATE_BASE_URL: fake.url, ...env }).replicate };
}

async function refusal(promise: Promise<unknown>): Promise<ProviderError> {
  const error = await rejectionOf(promise);
  expect(error).toBeInstanceOf(ProviderError);
  return error as ProviderError;
}

describe('upscaler configuration', () => {
  it('defaults to fal-ai/esrgan, Real-ESRGAN pinned to a version, and local-upscale, all priced and none offered for /imagine', () => {
    const config = loadConfig({ FAL_KEY: 'k', REPLICATE_API_TOKEN: 't' });
    expect(config.fal!.upscaleModel).toBe('fal-ai/esrgan');
    expect(config.replicate!.upscaleModel).toMatch(/^nightmareai\/real-esrgan:[0-9a-f]{64}$/);
    expect(config.replicate!.upscaleModel).toBe(DEFAULT_REPLICATE_UPSCALE_MODEL);
    expect(config.local.upscaleModel).toBe('local-upscale');
    for (const model of ['fal-ai/esrgan', DEFAULT_REPLICATE_UPSCALE_MODEL, 'local-upscale']) expect(config.prices[model]).toBeTypeOf('number');
    expect(DEFAULT_PRICES['fal-ai/esrgan']).toBeGreaterThan(0);
    expect(config.fal!.models).toEqual(['fal-ai/flux/schnell', 'fal-ai/flux/dev', 'fal-ai/flux-pro/v1.1', 'fal-ai/flux-lora']);
    expect(config.replicate!.models).not.toContain(DEFAULT_REPLICATE_UPSCALE_MODEL);
    const providers = providersFor({ FAL_KEY: 'k', REPLICATE_API_TOKEN: 't', FAL_UPSCALE_MODEL: 'fal-ai/clarity-upscaler' });
    expect([providers.fal.upscaleModel, providers.replicate.upscaleModel, providers.local.upscaleModel]).toEqual([
      'fal-ai/clarity-upscaler',
      DEFAULT_REPLICATE_UPSCALE_MODEL,
      'local-upscale',
    ]);
  });

  it('refuses an upscaler id that is not one, naming the variable', () => {
    expect(() => loadConfig({ REPLICATE_API_TOKEN: 't', REPLICATE_UPSCALE_MODEL: 'nightmareai/real-esrgan:latest' })).toThrow(
      'REPLICATE_UPSCALE_MODEL: expected a Replicate model owner/name, or owner/name:VERSION for a community model, got "nightmareai/real-esrgan:latest"',
    );
    expect(() => loadConfig({ FAL_KEY: 'k', FAL_UPSCALE_MODEL: 'https://fal.run/esrgan' })).toThrow(/^FAL_UPSCALE_MODEL: expected a fal model id/);
  });
});

describe('upscale calls', () => {
  it('fal: sends the image as image_url with scale 2 (no prompt, no seed) and returns one image of twice its size', async () => {
    const { fake, provider } = await fal();
    const image = await draftPng();
    const { images } = await runCall(provider, upscaleCall(provider, image));
    const body = fake.submits()[0]!;
    expect(body.path).toBe('/fal-ai/esrgan');
    expect(Object.keys(body.body as object).sort()).toEqual(['image_url', 'scale']);
    expect((body.body as { image_url: string }).image_url).toBe(`data:image/png;base64,${image.toString('base64')}`);
    expect(fake.upscaleCalls()).toEqual([expect.objectContaining({ model: 'fal-ai/esrgan', width: 672, height: 384, contentType: 'image/png', sha256: sha256(image), scale: 2 })]);
    expect(images).toHaveLength(1);
    expect(images[0]).toMatchObject({ width: 1344, height: 768, format: 'png' });
    expect(images[0]!.output).toMatchObject({ width: 1344, height: 768, contentType: 'image/png', nsfw: false });
  });

  it('fal: clarity-upscaler gets its factor as upscale_factor, and its output is read the same way', async () => {
    const { fake, provider } = await fal({ FAL_UPSCALE_MODEL: 'fal-ai/clarity-upscaler' });
    const image = await fakeImage(512, 512, 'webp', 'a webp draft');
    const { images } = await runCall(provider, upscaleCall(provider, image, 'image/webp'));
    expect(fake.submits()[0]!.body).toMatchObject({ upscale_factor: 2 });
    expect(fake.submits()[0]!.body).not.toHaveProperty('scale');
    expect(fake.upscaleCalls()[0]).toMatchObject({ model: 'fal-ai/clarity-upscaler', contentType: 'image/webp', width: 512, height: 512 });
    expect(images.map((i) => [i.width, i.height])).toEqual([[1024, 1024]]);
  });

  it('Replicate: runs Real-ESRGAN by version with {image, scale} and reads its single-URL output', async () => {
    const { fake, provider } = await replicate();
    const image = await draftPng();
    const { images } = await runCall(provider, upscaleCall(provider, image));
    const create = fake.submits()[0]!;
    expect(create.path).toBe('/v1/predictions');
    const body = create.body as { version: string; input: Record<string, unknown> };
    expect(body.version).toBe(DEFAULT_REPLICATE_UPSCALE_MODEL);
    expect(body.input).toEqual({ image: `data:image/png;base64,${image.toString('base64')}`, scale: 2 });
    expect(fake.upscaleCalls()).toEqual([expect.objectContaining({ model: DEFAULT_REPLICATE_UPSCALE_MODEL, width: 672, height: 384, sha256: sha256(image), scale: 2 })]);
    const [prediction] = fake.predictions.values();
    expect(typeof prediction!.toJSON(new URL(fake.url).origin).output).toBe('string');
    expect(images).toHaveLength(1);
    expect(images[0]).toMatchObject({ width: 1344, height: 768, format: 'png' });
    expect(images[0]!.output.contentType).toBe('image/png');
  });

  it('Replicate: a community upscaler named without its version is not found (it has no model endpoint of its own)', async () => {
    const { fake, provider } = await replicate({ REPLICATE_UPSCALE_MODEL: 'nightmareai/real-esrgan' });
    const error = await refusal(provider.submit(upscaleCall(provider, await draftPng())));
    expect(error.kind).toBe('not_found');
    expect(fake.submits()[0]!.path).toBe('/v1/models/nightmareai/real-esrgan/predictions');
    expect(fake.upscaleCalls()).toEqual([]);
  });

  it('local: resizes the image twice as large with sharp, in the call’s format', async () => {
    const { local } = providersFor({});
    const image = await fakeImage(384, 216, 'jpg', 'a jpeg draft');
    const { images } = await runCall(local, { ...upscaleCall(local, image, 'image/jpeg'), format: 'webp' });
    expect(local.upscaleModel).toBe('local-upscale');
    expect(images).toHaveLength(1);
    expect(images[0]).toMatchObject({ width: 768, height: 432, format: 'webp' });
    expect(images[0]!.output).toMatchObject({ width: 768, height: 432, contentType: 'image/webp' });
    // the same picture, larger: its corners keep the draft's colours
    const corner = async (bytes: Buffer, size: number) =>
      (await sharp(bytes).extract({ left: 0, top: 0, width: size, height: size }).stats()).channels.slice(0, 3).map((c) => c.mean);
    const [before, after] = [await corner(image, 8), await corner(images[0]!.bytes, 16)];
    for (const [channel, mean] of before.entries()) expect(Math.abs(mean - after[channel]!)).toBeLessThanOrEqual(24);
  });
});

describe('bad images', () => {
  const garbage = Buffer.from('this is not a picture at all');

  it('fal refuses bytes that are no image as invalid, saying which field and why', async () => {
    const { fake, provider } = await fal();
    const error = await refusal(provider.submit(upscaleCall(provider, garbage)));
    expect(error.kind).toBe('invalid');
    expect(error.retryable).toBe(false);
    expect(error.message).toBe(
      'fal refused the request (HTTP 422): image_url: Failed to load the image. Please ensure the image file is not corrupted and is in a supported format.',
    );
    expect(fake.requests.size).toBe(0);
  });

  it('Replicate refuses bytes that are no image as invalid', async () => {
    const { fake, provider } = await replicate();
    const error = await refusal(provider.submit(upscaleCall(provider, garbage)));
    expect(error.kind).toBe('invalid');
    expect(error.message).toMatch(/^Replicate refused the request \(HTTP 422\): .*input\.image: cannot identify image file/);
    expect(fake.predictions.size).toBe(0);
  });

  it('local refuses bytes that are no image as invalid at submit', async () => {
    const { local } = providersFor({});
    const error = await refusal(local.submit(upscaleCall(local, garbage)));
    expect(error.kind).toBe('invalid');
    expect(error.message).toMatch(/^the image to upscale cannot be read: /);
  });

  it('an empty image, or one without an image type, is refused before anything is sent', async () => {
    const { fake: falFake, provider: falProvider } = await fal();
    const { fake: replicateFake, provider: replicateProvider } = await replicate();
    const image = await draftPng();
    for (const provider of [falProvider, replicateProvider]) {
      expect(await refusal(provider.submit(upscaleCall(provider, Buffer.alloc(0))))).toMatchObject({ kind: 'invalid', message: 'the image to upscale is empty' });
      expect(await refusal(provider.submit(upscaleCall(provider, image, 'text/html')))).toMatchObject({
        kind: 'invalid',
        message: 'the image to upscale has no image type (got "text/html")',
      });
    }
    expect([falFake.submits(), replicateFake.submits()]).toEqual([[], []]);
  });
});

describe('rate limits on upscale calls', () => {
  it('fal: a 429 on the upscale submit is a rate_limited error carrying Retry-After; the next submit goes through', async () => {
    const { fake, provider } = await fal();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 0.3, where: 'header' } });
    const image = await draftPng();
    const error = await refusal(provider.submit(upscaleCall(provider, image)));
    expect(error).toMatchObject({ kind: 'rate_limited', retryable: true, details: { status: 429, retryAfterMs: 300 } });
    const { images } = await runCall(provider, upscaleCall(provider, image));
    expect(images.map((i) => [i.width, i.height])).toEqual([[1344, 768]]);
    expect(fake.submits().map((c) => c.fault ?? 'ok')).toEqual(['rate-limit', 'ok']);
    expect(fake.upscaleCalls()).toHaveLength(1);
  });

  it('Replicate: a 429 with retry_after in the body is a rate_limited error carrying it; the next create goes through', async () => {
    const { fake, provider } = await replicate();
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 2, where: 'body' } });
    const image = await draftPng();
    const error = await refusal(provider.submit(upscaleCall(provider, image)));
    expect(error).toMatchObject({ kind: 'rate_limited', retryable: true, details: { status: 429, retryAfterMs: 2000 } });
    const { images } = await runCall(provider, upscaleCall(provider, image));
    expect(images.map((i) => [i.width, i.height])).toEqual([[1344, 768]]);
    expect(fake.submits().map((c) => c.fault ?? 'ok')).toEqual(['rate-limit', 'ok']);
    expect(fake.upscaleCalls()).toHaveLength(1);
  });
});
