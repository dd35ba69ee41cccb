/**
 * Replicate through the `replicate` client: predictions.create → (id persisted by the caller) →
 * predictions.get until it ends. `run()` and `wait()` are avoided: `run` returns null when a held
 * create comes back still processing, and `wait` never ends on `aborted`.
 *
 * With `preferWaitSeconds`, the create asks Replicate to hold its answer (`Prefer: wait=N`) until the
 * prediction ends or N seconds pass. A prediction that ended within the wait is kept here, and the
 * runner's next status() and result() for its id answer from it without any HTTP call; one that did
 * not is polled as before.
 *
 * With a webhook (PUBLIC_URL), each create asks Replicate to POST the prediction when it completes
 * (`webhook` + `webhook_events_filter: ["completed"]`); the watch waits for that notice, and polls once
 * every `safetyPollMs` in case it never comes. The webhook's body is the whole prediction: its outputs
 * are kept like a held create's, so result() needs no GET.
 */
import Replicate, { type Prediction } from 'replicate';
import { untilEnded, type CallNotice, type CallWebhook } from '../core/notices.js';
import { ProviderError, type BatchCall, type CallStatus, type OutputImage, type Provider } from '../core/provider.js';
import { textOf } from '../core/text.js';
import type { Downloader } from './download.js';
import { dataUri } from './fal.js';
import { PROVIDER_FACTS, REPLICATE_UPSCALE_MODEL } from './facts.js';
import { oneShot, strictFetch, type Fetch } from './http.js';

export const DEFAULT_REPLICATE_BASE_URL = 'https://api.replicate.com/v1';

/**
 * Off by default. The runner sends submits one at a time per provider, from the send until the request
 * id is saved (src/core/scheduler.ts's gate, src/distributed/dispatch.ts's `submitting`), so that a
 * kill costs at most the one call whose id was not saved yet. A held create keeps that gate shut for
 * as long as it is held: every other Replicate submit waits behind it, and a prediction that outlasts
 * the wait costs the whole wait. With N seconds, a process starts at most one create every N seconds
 * while predictions run longer than N, far under Replicate's 600 creates/min. Turn it on where calls
 * are few or short, or once submits no longer share one gate for the whole hold.
 */
export const DEFAULT_REPLICATE_PREFER_WAIT_SECONDS = 0;
/** Replicate's own cap on `Prefer: wait`. */
export const MAX_REPLICATE_PREFER_WAIT_SECONDS = 60;
/** Finished predictions kept for a status() that has not come (its run aborted): the oldest go first. */
const MAX_KEPT_PREDICTIONS = 256;

export interface ReplicateProviderOptions {
  token: string;
  /** API base including /v1 @default https://api.replicate.com/v1 */
  baseUrl?: string;
  /** the model "Upscale approved" calls: `owner/name` (official) or `owner/name:version` @default DEFAULT_REPLICATE_UPSCALE_MODEL */
  upscaleModel?: string;
  fetch?: Fetch;
  /** one HTTP request's time limit @default 30000 */
  requestTimeoutMs?: number;
  /** fetches output images under the download policy (allowed hosts, byte cap) */
  download: Downloader;
  /**
   * Seconds a create may be held for the prediction to end (`Prefer: wait=N`), a whole number from
   * 0 (off) to 60, and shorter than `requestTimeoutMs` by at least 5 s. The cost of a longer wait:
   * the request id comes back only with the answer, so it is saved later (a kill during the hold pays
   * for the call again after the restart, like a kill during any submit in flight), and submits queue
   * behind the held one (see DEFAULT_REPLICATE_PREFER_WAIT_SECONDS).
   * @default 0
   */
  preferWaitSeconds?: number;
  /** end calls by webhook: the runner waits for its notice, polling only every `safetyPollMs` */
  webhook?: CallWebhook;
}

/** Replicate's prediction ids: lowercase letters and digits. */
const PREDICTION_ID = /^[a-z0-9]{1,64}$/;

/** The margin a held create keeps under the request timeout, so Replicate answers before we give up. */
const HELD_CREATE_MARGIN_MS = 5_000;

export function replicateInput(call: BatchCall): Record<string, unknown> {
  // An upscaler takes the image inline as a data: URI (drafts are a few hundred kB: no upload through
  // Replicate's files API is needed) and its factor; Real-ESRGAN answers one URL.
  if (call.upscale) return { image: dataUri(call.upscale), scale: call.upscale.scale };
  return {
    prompt: call.prompt,
    num_outputs: call.count,
    aspect_ratio: call.aspectRatio,
    seed: call.seed,
    // flux-schnell and flux-dev make a quarter-megapixel image with `megapixels: "0.25"` (the size
    // follows the aspect ratio); a model without the input ignores it, as Replicate drops unknown inputs.
    ...(call.draft ? { megapixels: '0.25' } : {}),
    // flux-schnell makes all three formats itself (`jpg` for JPEG), at `output_quality` (its default 80).
    output_format: call.format === 'jpeg' ? 'jpg' : (call.format ?? 'png'),
    ...(call.quality !== undefined && call.format !== undefined && call.format !== 'png' ? { output_quality: call.quality } : {}),
    // flux-schnell has no negative prompt; models that do take `negative_prompt`.
    ...(call.negative ? { negative_prompt: call.negative } : {}),
  };
}

export class ReplicateProvider implements Provider {
  readonly name = 'replicate' as const;
  readonly maxImagesPerCall = PROVIDER_FACTS.replicate.maxPerCall;
  readonly typicalCallMs = PROVIDER_FACTS.replicate.typicalCallMs;
  readonly upscaleModel: string;
  private readonly fetch: Fetch;
  private readonly outputs = new Map<string, string[]>();
  /** Predictions a held create returned already ended, until their status() is asked once. */
  private readonly ended = new Map<string, Prediction>();
  private readonly preferWaitSeconds: number;
  /** set with a webhook: the runner waits for the webhook's notice before it polls */
  readonly watch?: (requestId: string, model: string, signal: AbortSignal) => Promise<CallStatus>;

  /** On Replicate a LoRA is trained into a model of its own: it is asked for by that model's id. */
  loraSupport(): string | undefined {
    return 'On Replicate a LoRA is a fine-tuned model of its own: give its id with `--model owner/name` instead of `--lora`.';
  }

  constructor(private readonly options: ReplicateProviderOptions) {
    this.upscaleModel = options.upscaleModel ?? REPLICATE_UPSCALE_MODEL;
    const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.fetch = strictFetch({ provider: 'Replicate', fetch: options.fetch, requestTimeoutMs });
    const wait = options.preferWaitSeconds ?? DEFAULT_REPLICATE_PREFER_WAIT_SECONDS;
    const maxWait = Math.min(MAX_REPLICATE_PREFER_WAIT_SECONDS, Math.floor((requestTimeoutMs - HELD_CREATE_MARGIN_MS) / 1000));
    // A create held past the request timeout would be dropped and sent again: a second paid prediction.
    if (wait !== 0 && !(Number.isInteger(wait) && wait >= 1 && wait <= maxWait)) {
      throw new RangeError(
        `Expected \`preferWaitSeconds\` to be 0 or an integer from 1 to ${maxWait} (60 at most, and 5 s under the ${requestTimeoutMs} ms request timeout), got \`${wait}\``,
      );
    }
    this.preferWaitSeconds = wait;
    if (options.webhook) this.watch = (requestId, model, signal) => this.awaitNotice(options.webhook!, requestId, model, signal);
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
    const wait = this.preferWaitSeconds;
    const { webhook } = this.options;
    // The SDK's `wait: N` sends `Prefer: wait=N`. The id comes back only with the held answer, so the
    // caller saves it up to N s later than without: keep N short (see preferWaitSeconds).
    const input = replicateInput(call);
    const prediction = await this.guard(() =>
      this.client().predictions.create({
        ...modelOrVersion(call.model),
        input,
        ...(webhook ? { webhook: webhook.url, webhook_events_filter: ['completed' as const] } : {}),
        ...(wait > 0 ? { wait } : {}),
        ...(signal ? { signal } : {}),
      }),
    );
    if (wait > 0 && isEnded(prediction)) this.keep(prediction);
    // Paid for now: a board that cannot be written must not fail the create (that would pay again); its
    // webhook is then refused as unknown, and the safety poll ends the call.
    await webhook?.notices.expect('replicate', prediction.id).catch(() => undefined);
    return prediction.id;
  }

  /**
   * The prediction's end from its webhook's notice, or from our own poll every `safetyPollMs`; one a held
   * create returned ended is answered at once. A prediction the board did not know (resumed after a
   * restart: its webhook may have come while we were down) is polled once at once.
   */
  private async awaitNotice(webhook: CallWebhook, requestId: string, model: string, signal: AbortSignal): Promise<CallStatus> {
    if (this.ended.has(requestId)) return this.status(requestId, model, signal);
    const known = await webhook.notices.expect('replicate', requestId);
    const notice = await untilEnded(webhook.notices, 'replicate', requestId, signal, {
      safetyPollMs: webhook.safetyPollMs,
      pollFirst: !known,
      poll: (pollSignal) => this.status(requestId, model, pollSignal),
    });
    if (notice.status.state === 'succeeded' && Array.isArray(notice.output)) {
      this.outputs.set(requestId, notice.output.filter((url): url is string => typeof url === 'string'));
    }
    return notice.status;
  }

  async status(requestId: string, _model: string, signal?: AbortSignal): Promise<CallStatus> {
    const kept = this.ended.get(requestId);
    this.ended.delete(requestId);
    const prediction = kept ?? (await this.guard(() => this.client().predictions.get(requestId, signal ? { signal } : {})));
    const status = statusOf(prediction);
    if (status.state === 'succeeded') this.outputs.set(requestId, outputUrls(prediction));
    return status;
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

  /** Keeps an ended prediction for the status() that follows its submit, the oldest dropped past the cap. */
  private keep(prediction: Prediction): void {
    this.ended.set(prediction.id, prediction);
    if (this.ended.size > MAX_KEPT_PREDICTIONS) this.ended.delete(this.ended.keys().next().value!);
  }

  async cancel(requestId: string): Promise<void> {
    this.ended.delete(requestId);
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

/**
 * `owner/name:version` is run by version (`POST /predictions`, the only way to run a community model);
 * `owner/name` through the official model's own endpoint, which always runs its latest version.
 */
function modelOrVersion(model: string): { model: string } | { version: string } {
  return model.includes(':') ? { version: model } : { model };
}

/** A prediction's status as the batch machine knows it. */
function statusOf(prediction: Pick<Prediction, 'status' | 'error'>): CallStatus {
  switch (prediction.status) {
    case 'starting':
      return { state: 'queued' };
    case 'processing':
      return { state: 'running' };
    case 'succeeded':
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

/**
 * A Replicate webhook body (the prediction) as a notice, its output URLs kept for result(); a prediction
 * that has not ended yet (an event other than "completed") as its id alone; anything else undefined.
 */
export function replicateNoticeOf(body: unknown): CallNotice | { requestId: string; ended: false } | undefined {
  if (!body || typeof body !== 'object') return undefined;
  const prediction = body as Prediction;
  if (typeof prediction.id !== 'string' || !PREDICTION_ID.test(prediction.id) || typeof prediction.status !== 'string') return undefined;
  if (!isEnded(prediction)) return { requestId: prediction.id, ended: false };
  const status = statusOf(prediction);
  return { provider: 'replicate', requestId: prediction.id, status, ...(status.state === 'succeeded' ? { output: outputUrls(prediction) } : {}) };
}

/** Whether a prediction has ended: anything but `starting` and `processing` (`aborted` and newer ends too). */
function isEnded(prediction: Prediction): boolean {
  return prediction.status !== 'starting' && prediction.status !== 'processing';
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
