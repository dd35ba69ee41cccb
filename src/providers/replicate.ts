/**
 * Replicate through the `replicate` client: predictions.create → (id persisted by the caller) →
 * predictions.get until it ends. `run()` and `wait()` are avoided: `run` returns null when a held
 * create comes back still processing, and `wait` never ends on `aborted`.
 */
import Replicate, { type Prediction } from 'replicate';
import { ProviderError, type BatchCall, type CallStatus, type OutputImage, type Provider } from '../core/provider.js';
import { textOf } from '../core/text.js';
import type { Downloader } from './download.js';
import { oneShot, strictFetch, type Fetch } from './http.js';

export const DEFAULT_REPLICATE_BASE_URL = 'https://api.replicate.com/v1';

export interface ReplicateProviderOptions {
  token: string;
  /** API base including /v1 @default https://api.replicate.com/v1 */
  baseUrl?: string;
  fetch?: Fetch;
  /** one HTTP request's time limit @default 30000 */
  requestTimeoutMs?: number;
  /** fetches output images under the download policy (allowed hosts, byte cap) */
  download: Downloader;
}

export function replicateInput(call: BatchCall): Record<string, unknown> {
  return {
    prompt: call.prompt,
    num_outputs: call.count,
    aspect_ratio: call.aspectRatio,
    seed: call.seed,
    output_format: 'png',
    // flux-schnell has no negative prompt; models that do take `negative_prompt`.
    ...(call.negative ? { negative_prompt: call.negative } : {}),
  };
}

export class ReplicateProvider implements Provider {
  readonly name = 'replicate' as const;
  readonly maxImagesPerCall = 4;
  readonly typicalCallMs = 5_000;
  private readonly fetch: Fetch;
  private readonly outputs = new Map<string, string[]>();

  constructor(private readonly options: ReplicateProviderOptions) {
    this.fetch = strictFetch({ provider: 'Replicate', fetch: options.fetch, requestTimeoutMs: options.requestTimeoutMs ?? 30_000 });
  }

  /** A client per operation, so its built-in retries replay our first failure instead of resending. */
  private client(): Replicate {
    return new Replicate({
      auth: this.options.token,
      baseUrl: this.options.baseUrl ?? DEFAULT_REPLICATE_BASE_URL,
      fetch: oneShot(this.fetch),
      useFileOutput: false,
    });
  }

  async submit(call: BatchCall, signal?: AbortSignal): Promise<string> {
    const prediction = await this.guard(() =>
      this.client().predictions.create({ model: call.model, input: replicateInput(call), ...(signal ? { signal } : {}) }),
    );
    return prediction.id;
  }

  async status(requestId: string, _model: string, signal?: AbortSignal): Promise<CallStatus> {
    const prediction = await this.guard(() => this.client().predictions.get(requestId, signal ? { signal } : {}));
    switch (prediction.status) {
      case 'starting':
        return { state: 'queued' };
      case 'processing':
        return { state: 'running' };
      case 'succeeded':
        this.outputs.set(requestId, outputUrls(prediction));
        return { state: 'succeeded' };
      case 'canceled':
        return { state: 'canceled' };
      case 'failed':
        return { state: 'failed', error: textOf(prediction.error ?? 'the prediction failed') };
      default:
        // `aborted` and anything newer: an end, never something to wait on for ever.
        return { state: 'failed', error: `the prediction ended as "${String(prediction.status)}"` };
    }
  }

  async result(requestId: string, _model: string, signal?: AbortSignal): Promise<OutputImage[]> {
    let urls = this.outputs.get(requestId);
    if (!urls) {
      const prediction = await this.guard(() => this.client().predictions.get(requestId, signal ? { signal } : {}));
      urls = outputUrls(prediction);
    }
    this.outputs.delete(requestId);
    return urls.map((url) => ({ url, nsfw: false, contentType: contentTypeOf(url) }));
  }

  async cancel(requestId: string): Promise<void> {
    await this.guard(() => this.client().predictions.cancel(requestId));
  }

  async download(image: OutputImage, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    if (!image.url) throw new ProviderError('failed', 'Replicate returned an output without a URL');
    return this.options.download(image.url, signal);
  }

  private async guard<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      if (error instanceof ProviderError) throw error;
      const response = (error as { response?: Response }).response;
      if (response) {
        const status = response.status;
        const kind = status === 404 ? 'not_found' : 'invalid';
        throw new ProviderError(kind, `Replicate refused the request (HTTP ${status}): ${(error as Error).message.slice(0, 300)}`, {
          status,
        });
      }
      throw error;
    }
  }
}

function outputUrls(prediction: Prediction): string[] {
  const output = prediction.output as unknown;
  if (Array.isArray(output)) return output.filter((item): item is string => typeof item === 'string');
  return typeof output === 'string' ? [output] : [];
}

function contentTypeOf(url: string): string | undefined {
  const extension = /\.([a-z0-9]+)(?:\?|$)/i.exec(url)?.[1]?.toLowerCase();
  return extension ? { png: 'image/png', webp: 'image/webp', jpg: 'image/jpeg', jpeg: 'image/jpeg' }[extension] : undefined;
}
