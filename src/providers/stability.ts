/**
 * Stability AI's REST v2beta stable-image API: one synchronous multipart POST per image
 * (`/v2beta/stable-image/generate/{ultra|core|sd3}`), answered with the image's bytes. There is no
 * request id to poll, so the answer is held on disk under an id of our own (HeldResults) before
 * submit returns it: a restart between "paid for" and "saved" fetches the held image instead of
 * generating it again. Facts and sources: docs/providers/stability.md.
 */
import { ProviderError, asProviderError, type BatchCall, type CallStatus, type OutputImage, type Provider } from '../core/provider.js';
import { oneLine, textOf } from '../core/text.js';
import type { OutputFormat } from '../core/types.js';
import { PROVIDER_FACTS, STABILITY_ASPECT_RATIOS } from './facts.js';
import { HeldResults, type HeldOutput } from './held-results.js';
import { strictFetch, type Fetch } from './http.js';

export const DEFAULT_STABILITY_BASE_URL = 'https://api.stability.ai';

/** Our model ids → the endpoint that runs them (sd3.5 models share `/sd3` and are named in `model`). */
export const STABILITY_ENDPOINTS: Readonly<Record<string, 'ultra' | 'core' | 'sd3'>> = {
  'stable-image-ultra': 'ultra',
  'stable-image-core': 'core',
  'sd3.5-large': 'sd3',
  'sd3.5-large-turbo': 'sd3',
  'sd3.5-medium': 'sd3',
};

/** Stability's seed range is 0–4294967294, and 0 means "pick one at random". */
const SEED_SPACE = 4_294_967_295;

/** The SD3 endpoint makes JPEG and PNG only; WebP is asked as PNG there and converted on saving. */
function outputFormat(endpoint: 'ultra' | 'core' | 'sd3', format: OutputFormat | undefined): 'png' | 'jpeg' | 'webp' {
  if (format === 'webp' && endpoint === 'sd3') return 'png';
  return format ?? 'png';
}

/**
 * Stability times an account out for 60 s after it passes its 150 requests per 10 s, and its 429 need
 * not say so in a Retry-After: without one, the lane is paused for those 60 s.
 */
export const STABILITY_RATE_LIMIT_PAUSE_MS = 60_000;

export interface StabilityProviderOptions {
  key: string;
  /** the API's origin @default DEFAULT_STABILITY_BASE_URL */
  baseUrl?: string;
  /** where answers are held until their images are saved (`<OUTPUT_DIR>/.held`) */
  heldDir: string;
  fetch?: Fetch;
  /** one generation's time limit: the image comes back in the same request @default 120000 */
  requestTimeoutMs?: number;
  /** largest image accepted @default 26214400 */
  maxImageBytes?: number;
}

/** The fields of a multipart generate request, in the order they are sent. */
export function stabilityForm(call: BatchCall): { endpoint: 'ultra' | 'core' | 'sd3'; fields: [string, string][] } {
  const endpoint = STABILITY_ENDPOINTS[call.model];
  if (!endpoint) {
    throw new ProviderError('invalid', `Stability has no model "${oneLine(call.model, 80)}": expected one of ${Object.keys(STABILITY_ENDPOINTS).join(', ')}`);
  }
  const fields: [string, string][] = [['prompt', call.prompt]];
  if (endpoint === 'sd3') fields.push(['model', call.model]);
  if (call.negative) fields.push(['negative_prompt', call.negative]);
  fields.push(['aspect_ratio', STABILITY_ASPECT_RATIOS[call.aspectRatio]]);
  fields.push(['seed', String(call.seed % SEED_SPACE)]);
  fields.push(['output_format', outputFormat(endpoint, call.format)]);
  return { endpoint, fields };
}

/** `{ id, name, errors: [...] }` (or a `message`) as one line. */
function errorText(body: unknown): string | undefined {
  if (!body || typeof body !== 'object') return undefined;
  const { errors, message, name } = body as { errors?: unknown; message?: unknown; name?: unknown };
  const text = Array.isArray(errors) && errors.length > 0 ? errors.map(textOf).join('; ') : typeof message === 'string' ? message : undefined;
  if (text === undefined) return typeof name === 'string' ? oneLine(name) : undefined;
  return oneLine(text);
}

async function jsonOf(response: Response): Promise<unknown> {
  try {
    return JSON.parse(await response.text()) as unknown;
  } catch {
    return undefined;
  }
}

/** The reason of a content-moderation 403 (`name: "content_moderation"`), else undefined. */
function moderationReason(body: unknown): string | undefined {
  if (!body || typeof body !== 'object' || (body as { name?: unknown }).name !== 'content_moderation') return undefined;
  return errorText(body) ?? 'the request was flagged by content moderation';
}

const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/webp']);

export class StabilityProvider implements Provider {
  readonly name = 'stability' as const;
  /** One image per request: every endpoint answers with a single image. */
  readonly maxImagesPerCall = PROVIDER_FACTS.stability.maxPerCall;
  readonly typicalCallMs = PROVIDER_FACTS.stability.typicalCallMs;
  private readonly held: HeldResults;
  private readonly baseUrl: string;
  private readonly requestTimeoutMs: number;
  private readonly maxImageBytes: number;

  constructor(private readonly options: StabilityProviderOptions) {
    this.held = new HeldResults(options.heldDir, 'stability');
    this.baseUrl = (options.baseUrl ?? DEFAULT_STABILITY_BASE_URL).replace(/\/+$/, '');
    this.requestTimeoutMs = options.requestTimeoutMs ?? 120_000;
    this.maxImageBytes = options.maxImageBytes ?? 25 * 1024 * 1024;
    // Answers nobody came back for (a job deleted while its call ran) go after a day.
    void this.held.sweep().catch(() => undefined);
  }

  async submit(call: BatchCall, signal?: AbortSignal): Promise<string> {
    if (call.upscale) throw new ProviderError('invalid', 'Stability upscaling is not supported here');
    const { endpoint, fields } = stabilityForm(call);
    const form = new FormData();
    for (const [name, value] of fields) form.append(name, value);

    // A 403 is either a refused key or content moderation, told apart by the body's `name`; strictFetch
    // turns every 403 into `auth` (which stops the whole provider), so the reason is noted on the way.
    let moderated: string | undefined;
    const base = this.options.fetch ?? fetch;
    const send = strictFetch({
      provider: 'Stability',
      requestTimeoutMs: this.requestTimeoutMs,
      fetch: async (input, init) => {
        const response = await base(input, init);
        if (response.status === 403) moderated = moderationReason(await jsonOf(response.clone()));
        return response;
      },
    });

    const id = this.held.newId();
    let response: Response;
    try {
      response = await send(`${this.baseUrl}/v2beta/stable-image/generate/${endpoint}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.options.key}`, accept: 'image/*' },
        body: form,
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      if (moderated !== undefined) {
        // Not charged, and the same prompt would be refused again: this call's images fail with the
        // reason (not retried, as OpenAI's refusals), the job's other calls go on.
        throw new ProviderError('refused', `Stability's content moderation refused the request: ${moderated}`, { status: 403 });
      }
      throw withRateLimitPause(error);
    }
    if (!response.ok) {
      const reason = errorText(await jsonOf(response)) ?? 'no reason given';
      const kind = response.status === 404 ? 'not_found' : 'invalid';
      throw new ProviderError(kind, `Stability refused the request (HTTP ${response.status}): ${reason}`, { status: response.status });
    }
    const output = await this.readImage(response);
    await this.held.hold(id, { outputs: [output] });
    return id;
  }

  /** The answer's image: bytes (`Accept: image/*`) or base64 JSON, with its finish reason and seed. */
  private async readImage(response: Response): Promise<HeldOutput> {
    const contentType = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    const declared = Number(response.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > this.maxImageBytes * (contentType === 'application/json' ? 1.4 : 1)) {
      throw new ProviderError('failed', `Stability sent an image of ${declared} bytes, more than the ${this.maxImageBytes} allowed`);
    }
    let data: Buffer;
    let finishReason = response.headers.get('finish-reason') ?? undefined;
    let seedText = response.headers.get('seed') ?? undefined;
    let type = contentType;
    try {
      if (contentType === 'application/json') {
        const body = (await response.json()) as { image?: unknown; finish_reason?: unknown; seed?: unknown };
        if (typeof body.image !== 'string') throw new ProviderError('failed', 'Stability answered without an image');
        data = Buffer.from(body.image, 'base64');
        if (typeof body.finish_reason === 'string') finishReason = body.finish_reason;
        if (typeof body.seed === 'number' || typeof body.seed === 'string') seedText = String(body.seed);
        type = '';
      } else {
        data = Buffer.from(await response.arrayBuffer());
      }
    } catch (error) {
      throw asProviderError(error);
    }
    if (data.length === 0) throw new ProviderError('failed', 'Stability answered with an empty image');
    if (data.length > this.maxImageBytes) throw new ProviderError('failed', `Stability sent an image of ${data.length} bytes, more than the ${this.maxImageBytes} allowed`);
    const seed = Number(seedText);
    return {
      data,
      // The saved file is decoded and checked whatever this says; a type we do not know is left out.
      ...(IMAGE_TYPES.has(type) ? { contentType: type } : {}),
      // CONTENT_FILTERED: the image came back blurred by Stability's filter; it is kept, flagged.
      nsfw: finishReason === 'CONTENT_FILTERED',
      ...(seedText !== undefined && Number.isInteger(seed) && seed >= 0 ? { seed } : {}),
    };
  }

  status(requestId: string): Promise<CallStatus> {
    return this.held.status(requestId);
  }

  async result(requestId: string): Promise<OutputImage[]> {
    const held = await this.held.get(requestId);
    if (!held) throw new ProviderError('failed', 'the result was lost');
    return held.outputs.map((output) => ({
      data: output.data,
      nsfw: output.nsfw,
      ...(output.contentType !== undefined ? { contentType: output.contentType } : {}),
      ...(output.width !== undefined ? { width: output.width } : {}),
      ...(output.height !== undefined ? { height: output.height } : {}),
      ...(output.seed !== undefined ? { seed: output.seed } : {}),
    }));
  }

  /** A sync call cannot be stopped at Stability once sent: cancelling forgets its held answer. */
  async cancel(requestId: string): Promise<void> {
    await this.held.drop(requestId);
  }

  /** The call's image is saved: its held answer goes (a failed removal is left to the daily sweep). */
  async settled(requestId: string): Promise<void> {
    await this.held.drop(requestId);
  }

  async download(image: OutputImage): Promise<Buffer> {
    if (!image.data) throw new ProviderError('failed', 'Stability returned an output without its bytes');
    return image.data;
  }
}

/** A 429 without a Retry-After pauses for Stability's documented 60-s timeout. */
function withRateLimitPause(error: unknown): unknown {
  if (!(error instanceof ProviderError) || error.kind !== 'rate_limited' || error.details.retryAfterMs !== undefined) return error;
  return new ProviderError('rate_limited', error.message, { ...error.details, retryAfterMs: STABILITY_RATE_LIMIT_PAUSE_MS });
}
