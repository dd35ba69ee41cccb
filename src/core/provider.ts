/**
 * The one interface every image provider implements, and the error type the scheduler reasons about.
 * A provider call is split into submit → status → result so that the request id can be persisted
 * between submit and polling: a restart polls the same call instead of paying for it twice.
 */
import type { AspectRatio, LoraRef, OutputFormat, ProviderName } from './types.js';

export interface BatchCall {
  prompt: string;
  negative?: string;
  model: string;
  aspectRatio: AspectRatio;
  /** images wanted from this call, 1..maxImagesPerCall */
  count: number;
  seed: number;
  /** the format the images are kept in: asked of the provider where it can make it, else converted on saving @default 'png' */
  format?: OutputFormat;
  /** 1–100 for jpeg and webp @default the provider's */
  quality?: number;
  /** a draft: asked at the provider's small draft size (fal `image_size`, Replicate `megapixels`) */
  draft?: boolean;
  /** LoRAs to apply (only sent to a model whose provider says it takes them: `loraSupport`) */
  loras?: readonly LoraRef[];
  /**
   * An upscale instead of a generation: `model` is the provider's upscaler, `count` 1, and this image
   * (an approved draft) is sent to it, enlarged `scale` times; prompt and seed are not sent.
   */
  upscale?: { image: Buffer; contentType: string; scale: number };
}

export type CallStatus =
  | { state: 'queued'; queuePosition?: number }
  | { state: 'running' }
  | { state: 'succeeded' }
  | { state: 'failed'; error: string }
  | { state: 'canceled' };

export interface OutputImage {
  /** where to download the bytes (provider URLs expire: download at once) */
  url?: string;
  /** bytes, for providers that make them in process */
  data?: Buffer;
  width?: number;
  height?: number;
  contentType?: string;
  nsfw: boolean;
  seed?: number;
  /** the prompt the provider rewrote ours into for this image (OpenAI's revised_prompt), provider text */
  revisedPrompt?: string;
}

export interface Provider {
  readonly name: ProviderName;
  /** the most images one call may ask for */
  readonly maxImagesPerCall: number;
  /**
   * Whether `model` takes LoRAs: undefined when it does, else the one line telling the user what to do
   * instead (a fal LoRA endpoint, a Replicate fine-tune as the model). Unset: no model of it does.
   */
  loraSupport?(model: string, loras: readonly LoraRef[]): string | undefined;
  /** the most one call of `model` may ask for, where models differ (OpenAI: dall-e-3 1, gpt-image-1 more) @default maxImagesPerCall */
  maxImagesFor?(model: string): number;
  submit(call: BatchCall, signal?: AbortSignal): Promise<string>;
  status(requestId: string, model: string, signal?: AbortSignal): Promise<CallStatus>;
  /**
   * Push instead of polling, where the provider has it (fal's status stream): resolves with the call's
   * final status once it has ended, rejects when the push fails or `signal` aborts it. The runner
   * tries it before polling and polls whenever it rejects, so it never has to retry on its own.
   */
  watch?(requestId: string, model: string, signal: AbortSignal): Promise<CallStatus>;
  result(requestId: string, model: string, signal?: AbortSignal): Promise<OutputImage[]>;
  cancel(requestId: string, model: string): Promise<void>;
  /**
   * The call's images are saved (or refused) and recorded: what the provider keeps for it may go. The
   * synchronous providers hold their answer on disk until then (held-results.ts), so a restart at any
   * moment before it fetches the answer again instead of paying for a second call. Failures are ignored.
   */
  settled?(requestId: string, model: string): Promise<void>;
  /** the bytes of one output image, streamed */
  download(image: OutputImage, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array> | Buffer>;
  /** time a call usually takes, for ETAs before any call has finished */
  readonly typicalCallMs?: number;
  /** a draft's price as a share of a full-size image's (fal bills by the megapixel: 0.25) @default 1 */
  readonly draftPriceFactor?: number;
  /** the same, where models differ (OpenAI: gpt-image-1's low quality against dall-e-3) @default draftPriceFactor */
  draftPriceFactorFor?(model: string): number;
  /** the upscaler model "Upscale approved" calls (`BatchCall.upscale`); unset: this provider cannot upscale */
  readonly upscaleModel?: string;
}

/** The largest call of `model` on this provider: what the planner splits a count by. */
export function maxPerCall(provider: Pick<Provider, 'maxImagesPerCall' | 'maxImagesFor'>, model: string): number {
  return provider.maxImagesFor?.(model) ?? provider.maxImagesPerCall;
}

/** How many times "Upscale approved" enlarges a draft (a quarter-megapixel draft becomes a full one). */
export const UPSCALE_SCALE = 2;

export type ProviderErrorKind =
  | 'rate_limited'
  | 'server'
  | 'timeout'
  | 'network'
  | 'auth'
  | 'invalid'
  | 'failed'
  | 'not_found'
  /** one output refused (host not allowed, too large, not an image): that image fails, nothing is retried */
  | 'refused';

/** The longest any Retry-After (header or body) is honoured: a provider cannot pause us for years. */
export const RETRY_AFTER_CAP_MS = 5 * 60_000;
/** An image host's Retry-After is honoured up to this, like the normal download backoff. */
export const DOWNLOAD_RETRY_CAP_MS = 10_000;
/** setTimeout's largest delay; anything longer fires at once (with a TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const RETRYABLE: ReadonlySet<ProviderErrorKind> = new Set(['rate_limited', 'server', 'timeout', 'network', 'failed']);

export class ProviderError extends Error {
  override name = 'ProviderError';
  readonly retryable: boolean;
  constructor(
    readonly kind: ProviderErrorKind,
    message: string,
    readonly details: { status?: number; retryAfterMs?: number; cause?: unknown } = {},
  ) {
    super(message);
    this.retryable = RETRYABLE.has(kind);
  }
}

/**
 * A failure while fetching or keeping one output image. Never pauses the provider's lane (only the
 * provider's own API may do that): an image host's 429 is a plain retryable error with its
 * Retry-After capped at DOWNLOAD_RETRY_CAP_MS; an unreadable or refused image is `refused`.
 */
export function asImageError(error: unknown): ProviderError {
  if (error instanceof Error && error.name === 'UnreadableImageError') return new ProviderError('refused', error.message);
  const failure = asProviderError(error);
  if (failure.kind !== 'rate_limited') return failure;
  const retryAfterMs = failure.details.retryAfterMs;
  return new ProviderError('server', 'image download failed (HTTP 429)', {
    status: 429,
    ...(retryAfterMs !== undefined ? { retryAfterMs: Math.min(DOWNLOAD_RETRY_CAP_MS, retryAfterMs) } : {}),
  });
}

/** Anything thrown by a provider, as a ProviderError (unknown errors count as network trouble). */
export function asProviderError(error: unknown): ProviderError {
  if (error instanceof ProviderError) return error;
  if (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError')) {
    return new ProviderError('timeout', 'the provider did not answer in time', { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new ProviderError('network', message, { cause: error });
}
