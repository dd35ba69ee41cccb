/**
 * The one interface every image provider implements, and the error type the scheduler reasons about.
 * A provider call is split into submit → status → result so that the request id can be persisted
 * between submit and polling: a restart polls the same call instead of paying for it twice.
 */
import type { AspectRatio, ProviderName } from './types.js';

export interface BatchCall {
  prompt: string;
  negative?: string;
  model: string;
  aspectRatio: AspectRatio;
  /** images wanted from this call, 1..maxImagesPerCall */
  count: number;
  seed: number;
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
}

export interface Provider {
  readonly name: ProviderName;
  /** the most images one call may ask for */
  readonly maxImagesPerCall: number;
  submit(call: BatchCall, signal?: AbortSignal): Promise<string>;
  status(requestId: string, model: string, signal?: AbortSignal): Promise<CallStatus>;
  result(requestId: string, model: string, signal?: AbortSignal): Promise<OutputImage[]>;
  cancel(requestId: string, model: string): Promise<void>;
  /** the bytes of one output image, streamed */
  download(image: OutputImage, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array> | Buffer>;
  /** time a call usually takes, for ETAs before any call has finished */
  readonly typicalCallMs?: number;
}

export type ProviderErrorKind =
  | 'rate_limited'
  | 'server'
  | 'timeout'
  | 'network'
  | 'auth'
  | 'invalid'
  | 'failed'
  | 'not_found';

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

/** Anything thrown by a provider, as a ProviderError (unknown errors count as network trouble). */
export function asProviderError(error: unknown): ProviderError {
  if (error instanceof ProviderError) return error;
  if (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError')) {
    return new ProviderError('timeout', 'the provider did not answer in time', { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new ProviderError('network', message, { cause: error });
}
