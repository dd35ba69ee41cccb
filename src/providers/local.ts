/**
 * The offline provider: no key, no network. It behaves like a hosted queue (submit, then poll, then
 * fetch the result) so that every path of the engine runs on a fresh machine, and it renders real,
 * deterministic pictures: the same prompt and seed always give the same bytes.
 */
import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { ProviderError, type BatchCall, type CallStatus, type OutputImage, type Provider } from '../core/provider.js';
import { MAX_IMAGE_PIXELS } from '../store/files.js';
import { LOCAL_SIZES, LOCAL_UPSCALE_MODEL, PROVIDER_FACTS } from './facts.js';
import { renderLocalImage } from './local-render.js';

export interface LocalProviderOptions {
  /** simulated time from submit to completion @default 0 */
  latencyMs?: number;
  now?: () => number;
}

interface LocalCall {
  call: BatchCall;
  submittedAt: number;
  canceled: boolean;
  /** an upscale's result size, checked at submit */
  upscaled?: { width: number; height: number };
}

/** A draft: half the width and height (a quarter of the pixels). */
export function localSize(call: Pick<BatchCall, 'aspectRatio' | 'draft'>): { width: number; height: number } {
  const { width, height } = LOCAL_SIZES[call.aspectRatio];
  return call.draft ? { width: Math.round(width / 2), height: Math.round(height / 2) } : { width, height };
}

export class LocalProvider implements Provider {
  readonly name = 'local' as const;
  readonly maxImagesPerCall = PROVIDER_FACTS.local.maxPerCall;
  readonly typicalCallMs: number;
  /** resizes the approved image with sharp (lanczos3): bigger, not more detailed, and free */
  readonly upscaleModel = LOCAL_UPSCALE_MODEL;
  private readonly calls = new Map<string, LocalCall>();
  private readonly latencyMs: number;
  private readonly now: () => number;

  constructor(options: LocalProviderOptions = {}) {
    this.latencyMs = options.latencyMs ?? 0;
    this.typicalCallMs = Math.max(this.latencyMs, 50);
    this.now = options.now ?? Date.now;
  }

  async submit(call: BatchCall): Promise<string> {
    // An image that cannot be upscaled is refused now, as a hosted upscaler refuses it at submit.
    const upscaled = call.upscale ? await upscaledSize(call.upscale) : undefined;
    const id = `local-${randomUUID()}`;
    this.calls.set(id, { call, submittedAt: this.now(), canceled: false, ...(upscaled ? { upscaled } : {}) });
    return id;
  }

  private find(requestId: string): LocalCall {
    const found = this.calls.get(requestId);
    // A restart forgets calls in flight; not_found tells the engine to submit again (it costs nothing here).
    if (!found) throw new ProviderError('not_found', `local call ${requestId} is not known (the process restarted)`);
    return found;
  }

  async status(requestId: string): Promise<CallStatus> {
    const found = this.find(requestId);
    if (found.canceled) return { state: 'canceled' };
    const elapsed = this.now() - found.submittedAt;
    if (elapsed >= this.latencyMs) return { state: 'succeeded' };
    return elapsed < this.latencyMs / 4 ? { state: 'queued', queuePosition: 0 } : { state: 'running' };
  }

  async result(requestId: string): Promise<OutputImage[]> {
    const { call, upscaled } = this.find(requestId);
    this.calls.delete(requestId);
    if (call.upscale && upscaled) return [await upscale(call, call.upscale, upscaled)];
    const { width, height } = localSize(call);
    return Promise.all(
      Array.from({ length: call.count }, async (_, index) => {
        const seed = (call.seed + index) >>> 0;
        const format = call.format ?? 'png';
        const quality = call.quality !== undefined ? { quality: call.quality } : {};
        const data = await renderLocalImage({ prompt: call.prompt, seed, width, height, label: `seed ${seed}`, format, ...quality });
        return { data, width, height, contentType: `image/${format}`, nsfw: false, seed };
      }),
    );
  }

  async cancel(requestId: string): Promise<void> {
    const found = this.calls.get(requestId);
    if (found) found.canceled = true;
  }

  async download(image: OutputImage): Promise<Buffer> {
    if (!image.data) throw new ProviderError('failed', 'local image has no data');
    return image.data;
  }
}

/** The size an upscale makes; an unreadable image, or one too large once enlarged, is `invalid`. */
async function upscaledSize(upscale: NonNullable<BatchCall['upscale']>): Promise<{ width: number; height: number }> {
  const { width, height } = await sharp(upscale.image)
    .metadata()
    .catch((error: unknown) => {
      throw new ProviderError('invalid', `the image to upscale cannot be read: ${(error as Error).message}`);
    });
  if (!width || !height) throw new ProviderError('invalid', 'the image to upscale has no size');
  if (!(upscale.scale > 0)) throw new ProviderError('invalid', `Expected \`scale\` to be above 0, got \`${upscale.scale}\``);
  const size = { width: Math.round(width * upscale.scale), height: Math.round(height * upscale.scale) };
  if (size.width * size.height > MAX_IMAGE_PIXELS) {
    throw new ProviderError('invalid', `${width}×${height} upscaled ${upscale.scale}× is ${size.width}×${size.height}, larger than an image is kept`);
  }
  return size;
}

/** The approved image enlarged with lanczos3, in the job's format. */
async function upscale(call: BatchCall, source: NonNullable<BatchCall['upscale']>, size: { width: number; height: number }): Promise<OutputImage> {
  const resized = sharp(source.image).resize(size.width, size.height, { kernel: 'lanczos3', fit: 'fill' });
  const format = call.format ?? 'png';
  const quality = call.quality !== undefined ? { quality: call.quality } : {};
  const data = await (format === 'webp' ? resized.webp(quality) : format === 'jpeg' ? resized.jpeg(quality) : resized.png()).toBuffer();
  return { data, ...size, contentType: `image/${format}`, nsfw: false };
}
