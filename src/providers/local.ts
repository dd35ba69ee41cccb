/**
 * The offline provider: no key, no network. It behaves like a hosted queue (submit, then poll, then
 * fetch the result) so that every path of the engine runs on a fresh machine, and it renders real,
 * deterministic pictures: the same prompt and seed always give the same bytes.
 */
import { randomUUID } from 'node:crypto';
import { ProviderError, type BatchCall, type CallStatus, type OutputImage, type Provider } from '../core/provider.js';
import type { AspectRatio } from '../core/types.js';
import { renderLocalImage } from './local-render.js';

/** About 0.6 megapixel: big enough to look at, small enough to render in tens of milliseconds. */
export const LOCAL_SIZES: Record<AspectRatio, { width: number; height: number }> = {
  '1:1': { width: 768, height: 768 },
  '16:9': { width: 1024, height: 576 },
  '9:16': { width: 576, height: 1024 },
  '4:3': { width: 896, height: 672 },
  '3:4': { width: 672, height: 896 },
  '3:2': { width: 960, height: 640 },
  '2:3': { width: 640, height: 960 },
  '21:9': { width: 1176, height: 504 },
};

export interface LocalProviderOptions {
  /** simulated time from submit to completion @default 0 */
  latencyMs?: number;
  now?: () => number;
}

interface LocalCall {
  call: BatchCall;
  submittedAt: number;
  canceled: boolean;
}

export class LocalProvider implements Provider {
  readonly name = 'local' as const;
  readonly maxImagesPerCall = 4;
  readonly typicalCallMs: number;
  private readonly calls = new Map<string, LocalCall>();
  private readonly latencyMs: number;
  private readonly now: () => number;

  constructor(options: LocalProviderOptions = {}) {
    this.latencyMs = options.latencyMs ?? 0;
    this.typicalCallMs = Math.max(this.latencyMs, 50);
    this.now = options.now ?? Date.now;
  }

  async submit(call: BatchCall): Promise<string> {
    const id = `local-${randomUUID()}`;
    this.calls.set(id, { call, submittedAt: this.now(), canceled: false });
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
    const { call } = this.find(requestId);
    this.calls.delete(requestId);
    const { width, height } = LOCAL_SIZES[call.aspectRatio];
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
