/**
 * Drafts (`BatchCall.draft`): each provider asks for its small size — fal an explicit `image_size` of
 * about a quarter megapixel, Replicate `megapixels: "0.25"`, local half the width and height — and the
 * images that come back are that small, measured from their bytes. Real @fal-ai/client and replicate
 * clients against the fakes.
 */
import { describe, expect, it } from 'vitest';
import type { BatchCall } from '../../src/core/provider.js';
import { ASPECT_RATIOS } from '../../src/core/types.js';
import { FAL_DRAFT_SIZES, LOCAL_SIZES } from '../../src/providers/facts.js';
import { FAL_IMAGE_SIZES, startFakeFal } from '../fakes/fal.js';
import { FLUX_SCHNELL_SIZES, startFakeReplicate } from '../fakes/replicate.js';
import { onCleanup } from '../helpers.js';
import { providersFor, runCall } from './provider-calls.js';

const call = (extra: Partial<BatchCall> = {}): BatchCall => ({
  prompt: 'a heron at dawn',
  model: 'fal-ai/flux/schnell',
  aspectRatio: '16:9',
  count: 2,
  seed: 7,
  format: 'png',
  ...extra,
});

async function fal() {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 10 });
  onCleanup(() => fake.close());
  return { fake, provider: providersFor({ FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url }).fal };
}

async function replicate() {
  const fake = await startFakeReplicate({ key: 'r8-test-token', latencyMs: 10 });
  onCleanup(() => fake.close());
  return { fake, provider: providersFor({ REPLICATE_API_TOKEN: 'r8-test-token', REPLICATE_BASE_URL: fake.url }).replicate };
}

describe('drafts', () => {
  it('fal: a draft asks image_size {width, height} of about a quarter megapixel and gets images that small', async () => {
    const { fake, provider } = await fal();
    const draft = await runCall(provider, call({ draft: true }));
    const full = await runCall(provider, call());
    const [draftBody, fullBody] = fake.submits().map((c) => c.body as Record<string, unknown>);
    expect(draftBody!.image_size).toEqual({ width: 672, height: 384 });
    expect(fullBody!.image_size).toBe('landscape_16_9');
    expect(draft.images.map((i) => [i.width, i.height])).toEqual([[672, 384], [672, 384]]);
    expect(draft.images[0]!.output).toMatchObject({ width: 672, height: 384 });
    expect(full.images.map((i) => [i.width, i.height])).toEqual([[1024, 576], [1024, 576]]);
    expect(FAL_IMAGE_SIZES.landscape_16_9).toEqual({ width: 1024, height: 576 });
  });

  it('fal: every aspect ratio has a draft size on the 16-pixel grid, within a tenth of a quarter megapixel, at its ratio', () => {
    for (const ratio of ASPECT_RATIOS) {
      const { width, height } = FAL_DRAFT_SIZES[ratio];
      const [w, h] = ratio.split(':').map(Number) as [number, number];
      expect([width % 16, height % 16]).toEqual([0, 0]);
      expect(Math.abs((width * height) / (512 * 512) - 1)).toBeLessThan(0.1);
      expect(Math.abs(width / height / (w / h) - 1)).toBeLessThan(0.06);
    }
    expect(FAL_DRAFT_SIZES['1:1']).toEqual({ width: 512, height: 512 });
  });

  it('Replicate: a draft sends megapixels "0.25" and gets quarter-size images; a full call sends none', async () => {
    const { fake, provider } = await replicate();
    const model = 'black-forest-labs/flux-schnell';
    const draft = await runCall(provider, call({ model, draft: true }));
    const full = await runCall(provider, call({ model }));
    const [draftInput, fullInput] = fake.submits().map((c) => (c.body as { input: Record<string, unknown> }).input);
    expect(draftInput!.megapixels).toBe('0.25');
    expect(fullInput).not.toHaveProperty('megapixels');
    expect(draft.images.map((i) => [i.width, i.height])).toEqual([[672, 384], [672, 384]]);
    expect(full.images.map((i) => [i.width, i.height])).toEqual([[FLUX_SCHNELL_SIZES['16:9'].width, FLUX_SCHNELL_SIZES['16:9'].height], [1344, 768]]);
  });

  it('local: a draft renders at half the width and height', async () => {
    const { local } = providersFor({});
    const draft = await runCall(local, call({ model: 'local', aspectRatio: '1:1', draft: true, count: 1 }));
    const full = await runCall(local, call({ model: 'local', aspectRatio: '1:1', count: 1 }));
    expect(LOCAL_SIZES['1:1']).toEqual({ width: 768, height: 768 });
    expect(draft.images.map((i) => [i.width, i.height, i.output.width, i.output.height])).toEqual([[384, 384, 384, 384]]);
    expect(full.images.map((i) => [i.width, i.height])).toEqual([[768, 768]]);
  });
});
