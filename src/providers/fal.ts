/**
 * fal.ai through @fal-ai/client's queue API: submit → (request id persisted by the caller) → watch the
 * status stream (status polls if it fails) → result. `subscribe` is avoided on purpose: it polls for
 * ever on an unknown status and cannot be resumed after a restart.
 *
 * With a webhook (PUBLIC_URL), the submit asks fal to POST the call's end to us (`?fal_webhook=`), and
 * the watch waits for that notice instead of holding a status stream open per call in flight (the
 * point of webhooks for large batches); one status poll every `safetyPollMs` catches a webhook that
 * never comes. The webhook carries the result's payload, kept for result() so it needs no GET.
 */
import { ApiError, createFalClient, type FalClient, type QueueStatus, type RequestMiddleware } from '@fal-ai/client';
import { delay } from '../core/delay.js';
import { untilEnded, type CallNotice, type CallWebhook } from '../core/notices.js';
import { MAX_TIMER_MS, ProviderError, type BatchCall, type CallStatus, type OutputImage, type Provider } from '../core/provider.js';
import { oneLine, textOf } from '../core/text.js';
import type { LoraRef } from '../core/types.js';
import type { Downloader } from './download.js';
import { FAL_DRAFT_SIZES, FAL_SIZES, PROVIDER_FACTS } from './facts.js';
import { strictFetch, type Fetch } from './http.js';

const FAL_HOSTS = ['https://queue.fal.run', 'https://rest.fal.ai', 'https://fal.run'];

/**
 * The largest image sent inline as a data: URI (the replicate SDK's own cap for inline files). Drafts
 * are a quarter megapixel, a few hundred kB, so no upload to fal's storage is needed for them.
 */
export const MAX_INLINE_IMAGE_BYTES = 10_000_000;

export interface FalProviderOptions {
  key: string;
  /** the model "Upscale approved" calls @default 'fal-ai/esrgan' */
  upscaleModel?: string;
  /** where fal's hosts are rewritten to (a proxy or a test fake); unset = fal itself */
  baseUrl?: string;
  fetch?: Fetch;
  /** one HTTP request's time limit @default 30000 */
  requestTimeoutMs?: number;
  /** fetches output images under the download policy (allowed hosts, byte cap) */
  download: Downloader;
  /** learn that a call ended from fal's status stream instead of polling for it @default true */
  statusStream?: boolean;
  /**
   * Waits before each new try of a status stream that dropped before the call ended; the watch rejects
   * (and the runner polls) once they are spent.
   * @default [250, 500, 1000]
   */
  streamRetryMs?: readonly number[];
  /** end calls by webhook (replaces the status stream) */
  webhook?: CallWebhook;
}

export const DEFAULT_STREAM_RETRY_MS: readonly number[] = [250, 500, 1000];
/** Payloads delivered by webhook and not fetched yet (the run that watched them aborted): the oldest go first. */
const MAX_KEPT_PAYLOADS = 256;
/** fal's request ids are UUIDs; anything outside this is not one of its ids. */
const REQUEST_ID = /^[A-Za-z0-9_-]{1,128}$/;

interface FalImage {
  url: string;
  width?: number;
  height?: number;
  content_type?: string;
}

interface FalOutput {
  /** text-to-image models */
  images?: FalImage[];
  /** upscalers (esrgan, clarity-upscaler): one image */
  image?: FalImage;
  seed?: number;
  has_nsfw_concepts?: boolean[];
}

export function falInput(call: BatchCall): Record<string, unknown> {
  if (call.upscale) return falUpscaleInput(call.model, call.upscale);
  return {
    prompt: call.prompt,
    ...(call.negative ? { negative_prompt: call.negative } : {}),
    num_images: call.count,
    // A draft asks for the small size itself: presets are all about a megapixel.
    image_size: call.draft ? FAL_DRAFT_SIZES[call.aspectRatio] : FAL_SIZES[call.aspectRatio],
    seed: call.seed,
    enable_safety_checker: true,
    output_format: falFormat(call),
    // fal's LoRA endpoints take each as { path: a URL or a Hugging Face id, scale }
    ...(call.loras?.length ? { loras: call.loras.map((lora) => ({ path: lora.id, scale: lora.scale })) } : {}),
  };
}

/** fal's endpoints that apply LoRAs (FLUX.1 [dev] with LoRAs, and its variants under …/lora). */
const FAL_LORA_MODEL = /(^|\/)flux-lora(\/|$)|\/lora$/;

/** Why a fal model cannot take these LoRAs, or undefined when it can. */
export function falLoraSupport(model: string, loras: readonly LoraRef[]): string | undefined {
  if (!FAL_LORA_MODEL.test(model)) return `Model \`${model}\` takes no LoRAs on fal; use \`--model fal-ai/flux-lora\`.`;
  const air = loras.find((lora) => lora.id.startsWith('urn:'));
  if (air) return `fal takes a LoRA by URL or Hugging Face id, not a CivitAI AIR (\`${air.id}\`); use \`--provider civitai\` for CivitAI's.`;
  return undefined;
}

/**
 * An upscaler's input: the image inline as a data: URI (fal takes one wherever it takes a URL), and the
 * factor under the name the model uses (esrgan `scale`, clarity-upscaler `upscale_factor`). Prompt and
 * seed are not sent: the picture is the approved one, only larger.
 */
export function falUpscaleInput(model: string, upscale: NonNullable<BatchCall['upscale']>): Record<string, unknown> {
  const factor = /(^|\/)clarity-upscaler(\/|$)/.test(model) ? 'upscale_factor' : 'scale';
  return { image_url: dataUri(upscale), [factor]: upscale.scale };
}

/** The image as a data: URI; an empty or oversized one is refused here, before anything is paid for. */
export function dataUri(upscale: NonNullable<BatchCall['upscale']>): string {
  const { image, contentType } = upscale;
  if (image.length === 0) throw new ProviderError('invalid', 'the image to upscale is empty');
  if (image.length > MAX_INLINE_IMAGE_BYTES) {
    throw new ProviderError('invalid', `the image to upscale is ${image.length} bytes; at most ${MAX_INLINE_IMAGE_BYTES} are sent inline`);
  }
  if (!/^image\/[a-z0-9.+-]+$/i.test(contentType)) throw new ProviderError('invalid', `the image to upscale has no image type (got "${contentType}")`);
  return `data:${contentType};base64,${image.toString('base64')}`;
}

/**
 * flux on fal makes `jpeg` or `png` and takes no quality: a JPEG at its own quality is asked for as
 * such; WebP, and a JPEG at a chosen quality, come as PNG (lossless) and are converted on saving.
 */
export function falFormat(call: Pick<BatchCall, 'format' | 'quality'>): 'jpeg' | 'png' {
  return call.format === 'jpeg' && call.quality === undefined ? 'jpeg' : 'png';
}

/**
 * For the status stream: the request timeout covers the wait for the response's headers, not the
 * stream's life (a call may run for minutes; the caller bounds the watch with its own signal).
 */
function headersTimeout(base: Fetch, ms: number): Fetch {
  return (async (input: Parameters<Fetch>[0], init?: Parameters<Fetch>[1]) => {
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(new DOMException(`no answer within ${ms} ms`, 'TimeoutError')), ms);
    try {
      return await base(input, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, timeout.signal]) : timeout.signal });
    } finally {
      clearTimeout(timer);
    }
  });
}

/** A status as the batch machine knows it (the queue's enum is closed: failures complete with `error`). */
function callStatusOf(status: QueueStatus): CallStatus {
  const error = (status as { error?: unknown }).error;
  if (status.status === 'COMPLETED') {
    return error ? { state: 'failed', error: textOf(error) } : { state: 'succeeded' };
  }
  if (status.status === 'IN_QUEUE') return { state: 'queued', queuePosition: status.queue_position };
  if (status.status === 'IN_PROGRESS') return { state: 'running' };
  // An unknown status must not be polled for ever: report it so the batch ends with a reason.
  return { state: 'failed', error: `fal reported an unknown status "${String((status as { status: unknown }).status)}"` };
}

export class FalProvider implements Provider {
  readonly name = 'fal' as const;
  readonly maxImagesPerCall = PROVIDER_FACTS.fal.maxPerCall;
  readonly typicalCallMs = PROVIDER_FACTS.fal.typicalCallMs;
  readonly draftPriceFactor = PROVIDER_FACTS.fal.draftPriceFactor;
  readonly upscaleModel: string;
  /** the webhook's notice, else the status stream unless `statusStream: false`: the runner polls only when it fails */
  readonly watch?: (requestId: string, model: string, signal: AbortSignal) => Promise<CallStatus>;
  /** result payloads a webhook delivered, until result() takes them */
  private readonly delivered = new Map<string, unknown>();
  private readonly client: FalClient;
  /** for status streams only: no SDK retries, no whole-response timeout */
  private readonly streamClient: FalClient;
  private readonly fetch: Fetch;

  loraSupport(model: string, loras: readonly LoraRef[]): string | undefined {
    return falLoraSupport(model, loras);
  }

  constructor(private readonly options: FalProviderOptions) {
    this.upscaleModel = options.upscaleModel ?? PROVIDER_FACTS.fal.upscaleModel!;
    const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.fetch = strictFetch({ provider: 'fal', fetch: options.fetch, requestTimeoutMs });
    const baseUrl = options.baseUrl?.replace(/\/+$/, '');
    const requestMiddleware: RequestMiddleware = async (request) => {
      if (!baseUrl) return request;
      const host = FAL_HOSTS.find((h) => request.url.startsWith(h));
      return host ? { ...request, url: baseUrl + request.url.slice(host.length) } : request;
    };
    this.client = createFalClient({ credentials: options.key, fetch: this.fetch, requestMiddleware });
    this.streamClient = createFalClient({
      credentials: options.key,
      fetch: strictFetch({ provider: 'fal', fetch: headersTimeout(options.fetch ?? fetch, requestTimeoutMs), requestTimeoutMs: MAX_TIMER_MS }),
      requestMiddleware,
      // No SDK retries: a dropped stream is opened again by followStream, with its own backoff.
      retry: { maxRetries: 0 },
    });
    if (options.webhook) this.watch = (requestId, model, signal) => this.awaitNotice(options.webhook!, requestId, model, signal);
    else if (options.statusStream !== false) this.watch = (requestId, model, signal) => this.followStream(requestId, model, signal);
  }

  async submit(call: BatchCall, signal?: AbortSignal): Promise<string> {
    const { webhook } = this.options;
    const input = falInput(call);
    const queued = await this.guard(() =>
      this.client.queue.submit(call.model, {
        input,
        ...(webhook ? { webhookUrl: webhook.url } : {}),
        ...(signal ? { abortSignal: signal } : {}),
      }),
    );
    // Paid for now: a board that cannot be written must not fail the submit (that would pay again); its
    // webhook is then refused as unknown, and the safety poll ends the call.
    await webhook?.notices.expect('fal', queued.request_id).catch(() => undefined);
    return queued.request_id;
  }

  /**
   * The call's end from its webhook's notice, or from our own status poll every `safetyPollMs`. A call
   * the board did not know (resumed after a restart: its webhook may have come while we were down) is
   * polled once at once.
   */
  private async awaitNotice(webhook: CallWebhook, requestId: string, model: string, signal: AbortSignal): Promise<CallStatus> {
    const known = await webhook.notices.expect('fal', requestId);
    const notice = await untilEnded(webhook.notices, 'fal', requestId, signal, {
      safetyPollMs: webhook.safetyPollMs,
      pollFirst: !known,
      poll: (pollSignal) => this.status(requestId, model, pollSignal),
    });
    if (notice.output !== undefined) this.keep(requestId, notice.output);
    return notice.status;
  }

  private keep(requestId: string, payload: unknown): void {
    this.delivered.delete(requestId);
    this.delivered.set(requestId, payload);
    if (this.delivered.size > MAX_KEPT_PAYLOADS) this.delivered.delete(this.delivered.keys().next().value!);
  }

  /**
   * The status stream, opened again after a drop (waiting `streamRetryMs` before each new try) until the
   * call ends; rejects once the tries are spent, or at once for an answer another try would not change.
   */
  private async followStream(requestId: string, model: string, signal: AbortSignal): Promise<CallStatus> {
    const waits = this.options.streamRetryMs ?? DEFAULT_STREAM_RETRY_MS;
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.streamStatus(requestId, model, signal);
      } catch (error) {
        const wait = waits[attempt];
        if (signal.aborted || wait === undefined || !worthReconnecting(error)) throw error;
        await delay(wait, signal);
      }
    }
  }

  async status(requestId: string, model: string, signal?: AbortSignal): Promise<CallStatus> {
    const status = await this.guard(() =>
      this.client.queue.status(model, { requestId, logs: false, ...(signal ? { abortSignal: signal } : {}) }),
    );
    return callStatusOf(status);
  }

  /**
   * Follows the call on fal's status stream until it ends, and answers its final status. Rejects when
   * the stream fails, ends before the call did, or `signal` aborts it: the caller polls instead.
   */
  private async streamStatus(requestId: string, model: string, signal: AbortSignal): Promise<CallStatus> {
    signal.throwIfAborted();
    const stream = await this.streamClient.queue.streamStatus(model, { requestId, logs: false });
    const stop = () => stream.abort();
    signal.addEventListener('abort', stop, { once: true });
    let last: QueueStatus | undefined;
    try {
      // done() answers the last event; an abort also resolves it, with whatever came before.
      last = await stream.done();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new ProviderError('network', `fal's status stream failed: ${message}`, { cause: error });
    } finally {
      signal.removeEventListener('abort', stop);
    }
    signal.throwIfAborted();
    const status = last && typeof last === 'object' && 'status' in last ? callStatusOf(last) : undefined;
    if (!status || status.state === 'queued' || status.state === 'running') {
      throw new ProviderError('network', `fal's status stream ended before call ${requestId} did`);
    }
    return status;
  }

  async result(requestId: string, model: string, signal?: AbortSignal): Promise<OutputImage[]> {
    const delivered = this.delivered.get(requestId);
    this.delivered.delete(requestId);
    const data: unknown =
      delivered ??
      (await this.guard(() => this.client.queue.result(model, { requestId, ...(signal ? { abortSignal: signal } : {}) }))).data;
    const output = (data ?? {}) as FalOutput;
    const nsfw = output.has_nsfw_concepts ?? [];
    const images = Array.isArray(output.images) ? output.images : output.image && typeof output.image === 'object' ? [output.image] : [];
    return images.map((image, index) => ({
      url: image.url,
      width: image.width,
      height: image.height,
      contentType: image.content_type,
      nsfw: nsfw[index] === true,
      seed: output.seed,
    }));
  }

  async cancel(requestId: string, model: string): Promise<void> {
    this.delivered.delete(requestId);
    await this.guard(() => this.client.queue.cancel(model, { requestId }));
  }

  async download(image: OutputImage, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    if (!image.url) throw new ProviderError('failed', 'fal returned an image without a URL');
    return this.options.download(image.url, signal);
  }

  /** fal's own errors (422 validation, 4xx) become ProviderErrors the scheduler understands. */
  private async guard<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      if (error instanceof ApiError) {
        const body = error.body as { detail?: unknown } | undefined;
        const detail = falDetail(body?.detail) ?? JSON.stringify(body?.detail ?? error.message).slice(0, 300);
        const kind = error.status === 404 ? 'not_found' : error.status >= 500 ? 'server' : 'invalid';
        throw new ProviderError(kind, `fal refused the request (HTTP ${error.status}): ${detail}`, { status: error.status });
      }
      throw error;
    }
  }
}

/**
 * fal's error detail in one line: a string as it is; a validation list (`[{loc: ['body', 'image_url'],
 * msg}]`) as `image_url: msg; …` — without the inputs it echoes, which may be a whole image.
 */
function falDetail(detail: unknown): string | undefined {
  if (typeof detail === 'string') return oneLine(detail, 300);
  if (!Array.isArray(detail) || detail.length === 0) return undefined;
  const parts = detail.map((item: unknown) => {
    const { loc, msg } = (item ?? {}) as { loc?: unknown; msg?: unknown };
    if (typeof msg !== 'string') return undefined;
    const field = Array.isArray(loc) ? loc.filter((part) => part !== 'body').join('.') : '';
    return field ? `${field}: ${msg}` : msg;
  });
  return parts.every((part) => part !== undefined) ? oneLine(parts.join('; '), 300) : undefined;
}

/** A stream failure another try may get past: a drop, a network error, a 5xx or 429; not auth, not a 4xx. */
function worthReconnecting(error: unknown): boolean {
  const cause = error instanceof ProviderError ? (error.details.cause ?? error) : error;
  if (cause instanceof ApiError) return cause.status === 429 || cause.status >= 500;
  if (cause instanceof ProviderError) return cause.kind !== 'auth' && cause.kind !== 'invalid' && cause.kind !== 'not_found';
  return true;
}

/**
 * A fal webhook body (`{request_id, gateway_request_id, status: "OK" | "ERROR", payload, error?}`) as a
 * notice: OK → succeeded, with the payload (the result's data) kept for result(); a payload that fal
 * could not serialise comes as null, and result() fetches it. ERROR → failed, with fal's error.
 */
export function falNoticeOf(body: unknown): CallNotice | undefined {
  if (!body || typeof body !== 'object') return undefined;
  const { request_id: requestId, status, payload, error } = body as Record<string, unknown>;
  if (typeof requestId !== 'string' || !REQUEST_ID.test(requestId)) return undefined;
  if (status === 'OK') {
    return { provider: 'fal', requestId, status: { state: 'succeeded' }, ...(payload && typeof payload === 'object' ? { output: payload } : {}) };
  }
  if (status === 'ERROR') {
    const detail = payload && typeof payload === 'object' && 'detail' in payload ? `: ${textOf(payload.detail)}` : '';
    return { provider: 'fal', requestId, status: { state: 'failed', error: oneLine(`${textOf(error ?? 'fal reported an error')}${detail}`) } };
  }
  return undefined;
}
