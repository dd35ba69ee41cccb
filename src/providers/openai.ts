/**
 * OpenAI Images through the official `openai` client: one `images.generate` per call, answered with the
 * images themselves (base64). There is no request to poll, so the answer is held on disk under an id of
 * our own before submit returns it (held-results.ts): a restart between the answer and the saved images
 * fetches them from there instead of paying for the generation again.
 *
 * The client's own retries are off (`maxRetries: 0`): a 429 must pause the whole provider and a resent
 * generation is paid twice, so retrying is the batch machine's decision.
 */
import OpenAI from 'openai';
import { ProviderError, RETRY_AFTER_CAP_MS, type BatchCall, type CallStatus, type OutputImage, type Provider } from '../core/provider.js';
import type { AspectRatio, OutputFormat } from '../core/types.js';
import { draftPriceFactorOf, maxPerCallOf, OPENAI_SIZES, PROVIDER_FACTS } from './facts.js';
import { HeldResults, type HeldOutput } from './held-results.js';
import { retryAfterMs, type Fetch } from './http.js';

export const DEFAULT_OPENAI_BASE_URL = 'https://api.openai.com/v1';
/** A generation takes tens of seconds (gpt-image-1 at high quality, up to about a minute): the hang bound is generous. */
export const DEFAULT_OPENAI_REQUEST_TIMEOUT_MS = 120_000;

export interface OpenAIProviderOptions {
  key: string;
  /** API base including /v1 @default https://api.openai.com/v1 */
  baseUrl?: string;
  /** where answered calls wait for their images to be saved (`<OUTPUT_DIR>/.held`) */
  heldDir: string;
  fetch?: Fetch;
  /** one generation's time limit; a hang becomes a retryable timeout @default 120000 */
  requestTimeoutMs?: number;
}

/** The sizes a model makes, as width × height; the first is its square. */
type Size = readonly [width: number, height: number];


/** The model's family: what it takes (n, sizes, base64 by default or on request, output_format). */
type Family = 'gpt-image' | 'dall-e-3' | 'dall-e-2';

function familyOf(model: string): Family {
  if (model.startsWith('dall-e-3')) return 'dall-e-3';
  if (model.startsWith('dall-e-2')) return 'dall-e-2';
  // gpt-image-1, gpt-image-1-mini, gpt-image-1.5 and newer GPT image models share one set of inputs.
  return 'gpt-image';
}

const SIZES: Record<Family, readonly Size[]> = OPENAI_SIZES;

/**
 * The model's size nearest our aspect ratio (by the ratio's logarithm, so 2:1 and 1:2 are as far from
 * 1:1). No model makes our exact ratios but 1:1, so the image comes back at the size's own ratio:
 *
 * | ratio | gpt-image-1 | dall-e-3 |
 * | 1:1 | 1024x1024 | 1024x1024 |
 * | 16:9, 21:9, 3:2, 4:3 | 1536x1024 | 1792x1024 |
 * | 9:16, 2:3, 3:4 | 1024x1536 | 1024x1792 |
 */
export function openaiSize(model: string, aspectRatio: AspectRatio): Size {
  const [w, h] = aspectRatio.split(':').map(Number) as [number, number];
  const wanted = Math.log(w / h);
  let best = SIZES[familyOf(model)][0]!;
  for (const size of SIZES[familyOf(model)]) {
    if (Math.abs(Math.log(size[0] / size[1]) - wanted) < Math.abs(Math.log(best[0] / best[1]) - wanted)) best = size;
  }
  return best;
}


const CONTENT_TYPES: Record<OutputFormat, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };

/** The request body of one generation (what `images.generate` sends). Our seed is not sent: OpenAI takes none. */
export function openaiRequest(call: BatchCall): OpenAI.Images.ImageGenerateParamsNonStreaming {
  const family = familyOf(call.model);
  const [width, height] = openaiSize(call.model, call.aspectRatio);
  const base = { model: call.model, prompt: call.prompt, n: call.count, size: `${width}x${height}` };
  // No OpenAI image model takes a negative prompt; it is not sent (nor appended to the prompt).
  if (family === 'gpt-image') {
    const format = call.format ?? 'png';
    return {
      ...base,
      // The built-in price is medium quality's; a draft is low quality (about a quarter of the price).
      quality: call.draft ? 'low' : 'medium',
      output_format: format,
      ...(call.quality !== undefined && format !== 'png' ? { output_compression: call.quality } : {}),
    };
  }
  // DALL·E answers URLs unless asked for base64; it makes PNG only (other formats are converted on saving).
  return { ...base, response_format: 'b64_json', ...(family === 'dall-e-3' ? { quality: 'standard' as const } : {}) };
}

/** What an APIError of the `openai` client carries: the status, headers and OpenAI's `{error: {…}}` body. */
interface StatusError {
  status: number | undefined;
  headers: Headers | undefined;
  code: string | null | undefined;
  error: { message?: unknown } | undefined;
  message: string;
}

/** The error codes of a prompt the safety system refused (gpt-image-1 / DALL·E 3). */
const MODERATION_CODES = new Set(['moderation_blocked', 'content_policy_violation']);

export class OpenAIProvider implements Provider {
  readonly name = 'openai' as const;
  readonly maxImagesPerCall = PROVIDER_FACTS.openai.maxPerCall;
  readonly typicalCallMs = PROVIDER_FACTS.openai.typicalCallMs;
  private readonly client: OpenAI;
  private readonly held: HeldResults;

  constructor(options: OpenAIProviderOptions) {
    this.client = new OpenAI({
      apiKey: options.key,
      baseURL: options.baseUrl ?? DEFAULT_OPENAI_BASE_URL,
      maxRetries: 0,
      timeout: options.requestTimeoutMs ?? DEFAULT_OPENAI_REQUEST_TIMEOUT_MS,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    this.held = new HeldResults(options.heldDir, 'openai');
    // Answers nobody came back for (a job deleted while held) go after a day.
    void this.held.sweep().catch(() => undefined);
  }

  maxImagesFor(model: string): number {
    return maxPerCallOf('openai', model);
  }

  draftPriceFactorFor(model: string): number {
    return draftPriceFactorOf('openai', model);
  }

  async submit(call: BatchCall, signal?: AbortSignal): Promise<string> {
    if (call.upscale) throw new ProviderError('invalid', 'OpenAI cannot upscale an image');
    const id = this.held.newId();
    const format = familyOf(call.model) === 'gpt-image' ? (call.format ?? 'png') : 'png';
    const [width, height] = openaiSize(call.model, call.aspectRatio);
    let response: OpenAI.Images.ImagesResponse;
    try {
      response = await this.client.images.generate(openaiRequest(call), signal ? { signal } : {});
    } catch (error) {
      throw providerErrorOf(error);
    }
    const outputs: HeldOutput[] = [];
    for (const image of response.data ?? []) {
      if (typeof image.b64_json !== 'string') continue;
      outputs.push({
        data: Buffer.from(image.b64_json, 'base64'),
        contentType: CONTENT_TYPES[response.output_format ?? format],
        width,
        height,
        nsfw: false,
        ...(image.revised_prompt ? { revisedPrompt: image.revised_prompt } : {}),
      });
    }
    // Paid for now: held before the id is returned, so a restart finds the images under it.
    await this.held.hold(id, outputs.length > 0 ? { outputs } : { outputs, failed: 'OpenAI answered without any base64 image' });
    return id;
  }

  status(requestId: string): Promise<CallStatus> {
    return this.held.status(requestId);
  }

  async result(requestId: string): Promise<OutputImage[]> {
    const result = await this.held.get(requestId);
    if (!result) throw new ProviderError('not_found', `OpenAI's answer to call ${requestId} is no longer held`);
    return result.outputs.map((image) => image satisfies OutputImage);
  }

  async cancel(requestId: string): Promise<void> {
    await this.held.drop(requestId);
  }

  /** The call's images are saved: its held answer goes (a failed removal is left to the daily sweep). */
  async settled(requestId: string): Promise<void> {
    await this.held.drop(requestId);
  }

  async download(image: OutputImage): Promise<Buffer> {
    if (!image.data) throw new ProviderError('failed', 'OpenAI returned an output without image data');
    return image.data;
  }
}

/** An error of the `openai` client as a ProviderError the scheduler reasons about. */
export function providerErrorOf(error: unknown): ProviderError {
  if (error instanceof ProviderError) return error;
  if (error instanceof OpenAI.APIUserAbortError) return new ProviderError('network', 'the OpenAI request was aborted', { cause: error });
  if (error instanceof OpenAI.APIConnectionTimeoutError) return new ProviderError('timeout', 'OpenAI did not answer in time', { cause: error });
  if (error instanceof OpenAI.APIConnectionError) {
    return new ProviderError('network', `OpenAI could not be reached: ${(error.cause as Error | undefined)?.message ?? error.message}`, { cause: error });
  }
  if (!(error instanceof OpenAI.APIError)) {
    return new ProviderError('network', error instanceof Error ? error.message : String(error), { cause: error });
  }
  // The SDK's subclasses (RateLimitError, BadRequestError, …) differ only in their status.
  const { status, headers, code, error: body, message } = error as StatusError;
  if (status === undefined) return new ProviderError('network', message, { cause: error });
  const said = oneLine(typeof body?.message === 'string' ? body.message : message);
  if (status === 429) {
    // insufficient_quota is billing, not pacing: waiting does not end it.
    if (code === 'insufficient_quota') return new ProviderError('auth', `OpenAI refused the call: the account's quota is used up (${said})`, { status });
    const wait = headers ? openaiRetryAfterMs(headers) : undefined;
    return new ProviderError('rate_limited', `OpenAI is rate limiting: ${said}`, { status, ...(wait !== undefined ? { retryAfterMs: wait } : {}) });
  }
  if (status === 401 || status === 403) return new ProviderError('auth', `OpenAI refused the credentials (HTTP ${status}): check the key`, { status });
  if (status >= 500) return new ProviderError('server', `OpenAI answered HTTP ${status}: ${said}`, { status });
  if (code && MODERATION_CODES.has(code)) {
    // Sending the same prompt again is refused again (and at 5 calls a minute, costly in time): the
    // call's images fail with the reason, the job's other calls go on.
    return new ProviderError('refused', `OpenAI's safety system refused the prompt (${code}): ${said}`, { status });
  }
  return new ProviderError('invalid', `OpenAI refused the request (HTTP ${status}${code ? `, ${code}` : ''}): ${said}`, { status });
}

/** OpenAI's own `retry-after-ms` (read first by its SDK), else Retry-After; capped like every wait. */
function openaiRetryAfterMs(headers: Headers): number | undefined {
  const ms = Number(headers.get('retry-after-ms') ?? Number.NaN);
  if (Number.isFinite(ms) && ms >= 0) return Math.min(RETRY_AFTER_CAP_MS, ms);
  return retryAfterMs(headers, undefined);
}

const oneLine = (text: string): string => text.replace(/\s+/g, ' ').trim().slice(0, 300);
