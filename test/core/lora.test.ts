/**
 * `--lora ID[:scale]` (issue 15): parsed once for every front end, sent to fal's LoRA endpoint as
 * `loras: [{ path, scale }]` (the real @fal-ai/client against the fake fal queue), refused with one
 * line for a model or provider without LoRAs, and recorded in the manifest.
 */
import { describe, expect, it } from 'vitest';
import { parseImagineText, type ImagineLimits } from '../../commands/imagine.js';
import { isUserError } from '../../src/core/errors.js';
import type { ImagineRequest } from '../../src/core/types.js';
import { startFakeFal } from '../fakes/fal.js';
import { buildApp, onCleanup, readManifest, rejectionOf, requester, userErrorOf } from '../helpers.js';

const LIMITS: ImagineLimits = {
  maxImagesPerJob: 100,
  maxLoras: 2,
  providers: ['fal', 'local'],
  defaultProvider: 'fal',
  defaultModels: { fal: 'fal-ai/flux-lora', local: 'local' },
  models: { fal: '*' },
};

describe('--lora', () => {
  it('reads ID[:scale] lists, repeated or comma-separated, URLs and AIRs with colons of their own', () => {
    const request = parseImagineText('a fox --lora https://example.com/a.safetensors:0.7 --lora owner/style,urn:air:sdxl:lora:civitai:123@456:1.5', {
      ...LIMITS,
      maxLoras: 3,
    });
    expect(request.loras).toEqual([
      { id: 'https://example.com/a.safetensors', scale: 0.7 },
      { id: 'owner/style', scale: 1 },
      { id: 'urn:air:sdxl:lora:civitai:123@456', scale: 1.5 },
    ]);
    expect(userErrorOf(() => parseImagineText('a fox --lora a/b,c/d,e/f', LIMITS)).message).toBe('Expected at most 2 LoRAs, got 3.');
    expect(userErrorOf(() => parseImagineText('a fox --lora a/b:9', LIMITS)).message).toBe('Expected the scale of LoRA `a/b` to be from 0 to 4, got `9`.');
    expect(userErrorOf(() => parseImagineText('a fox --lora ../../etc', LIMITS)).message).toMatch(/^Expected `lora` to be an https URL, a Hugging Face owner\/repo or a CivitAI AIR/);
  });

  it('sends the LoRAs to fal-ai/flux-lora, records them in the manifest, and refuses them elsewhere changing nothing', async () => {
    const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 2 });
    onCleanup(() => fake.close());
    const app = await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url } });
    const request: ImagineRequest = {
      prompt: 'a red fox',
      count: 2,
      provider: 'fal',
      model: 'fal-ai/flux-lora',
      aspectRatio: '1:1',
      loras: [{ id: 'https://example.com/style.safetensors', scale: 0.8 }],
    };
    const job = await app.engine.waitFor((await app.engine.submit(request, requester())).id);
    expect(job.state).toBe('completed');
    expect((fake.submits()[0]!.body as { loras: unknown }).loras).toEqual([{ path: 'https://example.com/style.safetensors', scale: 0.8 }]);
    expect((await readManifest(app, job.id)).parameters.loras).toEqual([{ id: 'https://example.com/style.safetensors', scale: 0.8 }]);

    const schnell = await rejectionOf(app.engine.submit({ ...request, model: 'fal-ai/flux/schnell' }, requester()));
    expect(isUserError(schnell) && schnell.message).toBe('Model `fal-ai/flux/schnell` takes no LoRAs on fal; use `--model fal-ai/flux-lora`.');
    const air = await rejectionOf(app.engine.submit({ ...request, loras: [{ id: 'urn:air:sdxl:lora:civitai:1@2', scale: 1 }] }, requester()));
    expect(isUserError(air) && air.message).toMatch(/^fal takes a LoRA by URL or Hugging Face id, not a CivitAI AIR/);
    const local = await rejectionOf(app.engine.submit({ ...request, provider: 'local', model: 'local' }, requester()));
    expect(isUserError(local) && local.message).toBe('Provider `local` takes no LoRAs.');
    expect(fake.submits()).toHaveLength(1);
    expect(await app.jobs.activeIds()).toEqual([]);
  });
});
