// A fake of fal.ai's queue API (queue.fal.run) serving flux-style output.
//
// Point the real @fal-ai/client at it with a requestMiddleware that rewrites
// https://queue.fal.run to `fake.url`. Wire format, as the client and fal's docs
// have it:
//   POST /{owner}/{app}[/{path}]              submit → 200 {request_id, response_url, status_url, cancel_url, status, queue_position}
//   GET  /{owner}/{app}/requests/{id}/status  202 IN_QUEUE / IN_PROGRESS, 200 COMPLETED (always a `logs` key)
//   GET  /{owner}/{app}/requests/{id}/status/stream
//                                             text/event-stream: `data: {status json}\n\n` now and at each
//                                             change, `: keep-alive` comments between, closed after COMPLETED
//   GET  /{owner}/{app}/requests/{id}         result (x-fal-request-id header)
//   PUT  /{owner}/{app}/requests/{id}/cancel  202 {status: 'CANCELLATION_REQUESTED'}
//   GET  /files/{id}/{n}.{png|jpg}            the image bytes (public, no auth, like fal.media)
//   GET  /.well-known/jwks.json                the ED25519 public key its webhooks are signed with
// A submit with `?fal_webhook=<url>` gets a signed POST to that URL when the request completes (or is
// cancelled), as fal sends them: body {request_id, gateway_request_id, status: OK | ERROR, payload,
// error?}, headers X-Fal-Webhook-Request-Id / -User-Id / -Timestamp / -Signature (hex ED25519 over
// request id, user id, timestamp and the body's SHA-256 hex, one per line). `injectWebhook` adds faults.
// Upscalers (`upscaleModels`, default fal-ai/esrgan and fal-ai/clarity-upscaler) are served on the same
// queue paths: input {image_url: data: URI, scale (esrgan, 1–8) | upscale_factor (clarity, 1–4)}, output
// {image: {url, width, height, content_type, file_name, file_size}} of exactly scale × the input's size
// (clarity adds seed and timings). A missing, non-data: or undecodable image_url is refused 422 in
// fal's shape (`file_download_error` / `image_load_error`); `upscaleCalls()` lists what was sent.
// Status/result/cancel use only owner/app (fal-ai/flux, not fal-ai/flux/schnell);
// a request id asked for under another app path gets 404 here, which catches
// callers that build those URLs with the full endpoint id.
import type { ServerResponse } from 'node:http';
import { createHash, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import sharp from 'sharp';
import {
  type ErrorDialect,
  type FakeCommon,
  type FakeCore,
  type FakeOptions,
  type ParsedRequest,
  type RecordedCall,
  type WebhookDelivery,
  type WebhookFault,
  WebhookOutbox,
  isGenerationFault,
  isHttpFault,
  mulberry32,
  RollingLimit,
  plainObject,
  sendBytes,
  sendJson,
  startCore,
} from './http.js';
import { CONTENT_TYPES, type FakeImageFormat, fakeImage, solidImage } from './png.js';

export type { FakeOptions, Fault, FaultRule, FaultTarget, RecordedCall, WebhookDelivery, WebhookFault } from './http.js';

/** The user id the fake's webhooks carry (X-Fal-Webhook-User-Id). */
export const FAKE_FAL_USER_ID = 'fake-fal-user';

export type FalQueueState = 'IN_QUEUE' | 'IN_PROGRESS' | 'COMPLETED';

// Sizes of fal's image_size presets for flux.
export const FAL_IMAGE_SIZES = {
  square_hd: { width: 1024, height: 1024 },
  square: { width: 512, height: 512 },
  portrait_4_3: { width: 768, height: 1024 },
  portrait_16_9: { width: 576, height: 1024 },
  landscape_4_3: { width: 1024, height: 768 },
  landscape_16_9: { width: 1024, height: 576 },
} as const;

type OutputFormat = 'jpeg' | 'png';

/** The upscalers the fake serves by default (full endpoint ids). */
export const FAKE_FAL_UPSCALERS = ['fal-ai/esrgan', 'fal-ai/clarity-upscaler'] as const;

/** One accepted upscale, as the fake received it. */
export interface UpscaleCall {
  requestId: string;
  model: string;
  /** the image sent: its size, type and the SHA-256 (hex) of its bytes */
  width: number;
  height: number;
  contentType: string;
  sha256: string;
  scale: number;
}

/**
 * An image sent inline (`data:<type>;base64,<bytes>`), decoded and measured with sharp; anything else
 * (a missing value, an http URL the fake cannot fetch, bytes that are no image) is the reason why not.
 */
export async function readDataUri(value: unknown): Promise<{ width: number; height: number; contentType: string; bytes: Buffer } | { error: 'missing' | 'not-data' | 'unreadable'; reason: string }> {
  if (value === undefined || value === null) return { error: 'missing', reason: 'Field required' };
  if (typeof value !== 'string') return { error: 'not-data', reason: 'Input should be a valid string' };
  const match = /^data:([a-z]+\/[a-z0-9.+-]+);base64,([A-Za-z0-9+/=]*)$/i.exec(value);
  if (!match) return { error: 'not-data', reason: 'Failed to download the file. Please check if the URL is accessible.' };
  const bytes = Buffer.from(match[2]!, 'base64');
  const meta = await sharp(bytes).metadata().catch(() => undefined);
  if (!meta?.width || !meta.height) {
    return { error: 'unreadable', reason: 'Failed to load the image. Please ensure the image file is not corrupted and is in a supported format.' };
  }
  return { width: meta.width, height: meta.height, contentType: match[1]!.toLowerCase(), bytes };
}

/** One queued request, as the fake sees it. `state` is derived from the clock. */
export class FalRequest {
  cancelled = false;
  /** Message of a 'failed' fault: the request completes with an error. */
  failure: string | undefined;
  /** Image count of a 'partial' fault. */
  partialImages: number | undefined;
  /** Set once a result was served: later 'result' faults no longer rewrite it. */
  resultServed = false;
  /** Where its end is POSTed (`?fal_webhook=` of the submit), and whether it was. */
  webhookUrl: string | undefined;
  webhookSent = false;
  /** Set for an upscaler's request: what it was sent (its result is one image of width × height). */
  upscale: UpscaleCall | undefined;

  constructor(
    readonly id: string,
    /** Full endpoint id as submitted, e.g. 'fal-ai/flux/schnell'. */
    readonly endpoint: string,
    /** owner/app part used by status/result/cancel, e.g. 'fal-ai/flux'. */
    readonly appPath: string,
    readonly input: Record<string, unknown>,
    readonly createdAt: number,
    readonly latencyMs: number,
    readonly seed: number,
    readonly width: number,
    readonly height: number,
    readonly numImages: number,
    readonly outputFormat: OutputFormat,
    readonly nsfw: boolean,
  ) {}

  get state(): FalQueueState {
    if (this.cancelled) return 'COMPLETED';
    const elapsed = Date.now() - this.createdAt;
    if (elapsed >= this.latencyMs) return 'COMPLETED';
    // First third in the queue, the rest running: both states show up in polls.
    return elapsed < this.latencyMs / 3 ? 'IN_QUEUE' : 'IN_PROGRESS';
  }

  /** Epoch ms at which the provider finishes it (its state turns COMPLETED; a cancel, not recorded, ends it sooner). */
  get completedAt(): number {
    return this.createdAt + this.latencyMs;
  }

  /** How many images the result carries (after a 'partial' fault). */
  get imageCount(): number {
    return this.partialImages === undefined ? this.numImages : Math.min(this.numImages, this.partialImages);
  }

  get ext(): 'jpg' | 'png' {
    return this.outputFormat === 'png' ? 'png' : 'jpg';
  }
}

export interface FakeFalOptions extends FakeOptions {
  /** Time between keep-alive comments on a status stream, as fal sends them @default 15000 */
  streamKeepAliveMs?: number;
  /**
   * fal's own rate limit: a submit past `limit` in any rolling `intervalMs` is answered 429 with
   * Retry-After (header and body) for when the oldest counted submit leaves the window. The seconds
   * carry milliseconds, since benchmarks scale time. Unset = no limit (the default).
   */
  rateLimit?: { limit: number; intervalMs: number };
  /**
   * fal's concurrency limit: a submit while this many accepted requests have not completed is
   * answered 429 (the account's requests in flight). Unset = no limit.
   */
  concurrencyLimit?: number;
  /** Bytes served for every PNG file instead of the generated picture (e.g. `noisePng` for ~1 MB images). */
  pngBytes?: Buffer;
  /** Endpoint ids served as upscalers @default FAKE_FAL_UPSCALERS */
  upscaleModels?: readonly string[];
  /** Rewrites the image URLs a result carries (a model can return any URL). */
  outputUrl?: (fileUrl: string, requestId: string, index: number) => string;
  /** Serves this answer for a file instead of the picture (a hostile or broken output, a redirect). */
  fileBody?: (requestId: string, index: number) => { bytes: Buffer; contentType: string; status?: number; headers?: Record<string, string> } | undefined;
}

/** What the next status streams do instead of running to COMPLETED (see `FakeFal.dropStatusStreams`). */
export interface StreamDrop {
  /** streams this applies to, in the order they connect @default 1 */
  times?: number;
  /** events sent before the socket is destroyed @default 1 */
  afterEvents?: number;
}

export interface FakeFal extends FakeCommon {
  /** Every accepted submit by request id. */
  requests: Map<string, FalRequest>;
  /** The most accepted requests ever running at once (submitted, not yet completed). */
  maxInFlight(): number;
  /** Submits answered 429 by the rate or concurrency limit (not injected faults). */
  limited(): number;
  /** The next status streams send `afterEvents` events, then their socket is destroyed mid-stream. */
  dropStatusStreams(drop?: StreamDrop): void;
  /** Status polls (`GET …/status`) and status streams (`GET …/status/stream`) received so far. */
  statusPolls(): number;
  statusStreams(): number;
  /** Every accepted upscale, in order: which image was sent and at what scale. */
  upscaleCalls(): UpscaleCall[];
  /** Where the fake serves the JWKS its webhooks are signed with (for FAL_JWKS_URL). */
  jwksUrl: string;
  /** The next `times` webhook deliveries get `fault`. */
  injectWebhook(fault: WebhookFault, times?: number): void;
  /** Every webhook delivery made or dropped, with the answer it got. */
  webhookDeliveries(): WebhookDelivery[];
}

// fal's error bodies carry `detail`; the client builds ApiError{status, body}.
const falErrors: ErrorDialect = {
  rateLimited(seconds, where) {
    const headers: Record<string, string> = where === 'body' ? {} : { 'retry-after': String(seconds) };
    const body =
      where === 'header'
        ? { detail: 'Rate limit exceeded' }
        : { detail: `Rate limit exceeded. Retry after ${seconds} seconds.`, retry_after: seconds };
    return { body, headers };
  },
  // What queue.fal.run answers for a key it does not know.
  unauthorized: () => ({ detail: 'No user found for Key ID and Secret' }),
  serverError: (status) => ({ detail: status === 500 ? 'Internal Server Error' : `Upstream error (${status})` }),
};

// Pydantic-v2-shaped 422, which the client turns into a ValidationError.
interface FieldError {
  loc: (string | number)[];
  msg: string;
  type: string;
  input?: unknown;
  ctx?: Record<string, unknown>;
}

function validate(input: Record<string, unknown>): FieldError[] {
  const errors: FieldError[] = [];
  const { prompt, num_images, image_size, output_format, seed } = input;
  if (prompt === undefined) {
    errors.push({ loc: ['body', 'prompt'], msg: 'Field required', type: 'missing', input });
  } else if (typeof prompt !== 'string') {
    errors.push({ loc: ['body', 'prompt'], msg: 'Input should be a valid string', type: 'string_type', input: prompt });
  } else if (prompt.trim().length === 0) {
    errors.push({
      loc: ['body', 'prompt'],
      msg: 'String should have at least 1 character',
      type: 'string_too_short',
      input: prompt,
      ctx: { min_length: 1 },
    });
  }
  if (num_images !== undefined) {
    if (typeof num_images !== 'number' || !Number.isInteger(num_images)) {
      errors.push({ loc: ['body', 'num_images'], msg: 'Input should be a valid integer', type: 'int_type', input: num_images });
    } else if (num_images < 1) {
      errors.push({ loc: ['body', 'num_images'], msg: 'Input should be greater than or equal to 1', type: 'greater_than_equal', input: num_images, ctx: { ge: 1 } });
    } else if (num_images > 4) {
      errors.push({ loc: ['body', 'num_images'], msg: 'Input should be less than or equal to 4', type: 'less_than_equal', input: num_images, ctx: { le: 4 } });
    }
  }
  if (image_size !== undefined) {
    const custom = plainObject(image_size);
    if (typeof image_size === 'string') {
      if (!(image_size in FAL_IMAGE_SIZES)) {
        errors.push({
          loc: ['body', 'image_size'],
          msg: `Input should be ${Object.keys(FAL_IMAGE_SIZES).map((k) => `'${k}'`).join(', ')}`,
          type: 'enum',
          input: image_size,
        });
      }
    } else if (custom) {
      for (const side of ['width', 'height'] as const) {
        const v = custom[side] ?? 512; // fal's ImageSize defaults each side to 512
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 8192) {
          errors.push({ loc: ['body', 'image_size', side], msg: 'Input should be an integer in 1..8192 (fake limit)', type: 'value_error', input: v });
        }
      }
    } else {
      errors.push({ loc: ['body', 'image_size'], msg: 'Input should be a valid dictionary or enum', type: 'model_type', input: image_size });
    }
  }
  if (output_format !== undefined && output_format !== 'jpeg' && output_format !== 'png') {
    errors.push({ loc: ['body', 'output_format'], msg: "Input should be 'jpeg' or 'png'", type: 'enum', input: output_format });
  }
  if (seed !== undefined && seed !== null && (typeof seed !== 'number' || !Number.isInteger(seed))) {
    errors.push({ loc: ['body', 'seed'], msg: 'Input should be a valid integer', type: 'int_type', input: seed });
  }
  // fal-ai/flux-lora: loras = [{ path, scale }], path a URL or a Hugging Face id, scale 0–4 (default 1)
  const { loras } = input;
  if (loras !== undefined) {
    if (!Array.isArray(loras)) errors.push({ loc: ['body', 'loras'], msg: 'Input should be a valid list', type: 'list_type', input: loras });
    else
      loras.forEach((lora: unknown, i) => {
        const entry = plainObject(lora);
        if (!entry || typeof entry.path !== 'string' || entry.path.length === 0) {
          errors.push({ loc: ['body', 'loras', i, 'path'], msg: 'Field required', type: 'missing', input: lora });
        } else if (entry.scale !== undefined && (typeof entry.scale !== 'number' || entry.scale < 0 || entry.scale > 4)) {
          errors.push({ loc: ['body', 'loras', i, 'scale'], msg: 'Input should be less than or equal to 4', type: 'less_than_equal', input: entry.scale, ctx: { le: 4 } });
        }
      });
  }
  return errors;
}

/**
 * An upscaler's input: `image_url` an image inline, and its factor (esrgan `scale` 1–8, clarity
 * `upscale_factor` 1–4, both 2 by default). The output must fit the fake's 8192-pixel side.
 */
async function validateUpscale(
  endpoint: string,
  input: Record<string, unknown>,
): Promise<{ errors: FieldError[] } | { image: { width: number; height: number; contentType: string; bytes: Buffer }; scale: number }> {
  const clarity = endpoint.startsWith('fal-ai/clarity-upscaler');
  const field = clarity ? 'upscale_factor' : 'scale';
  const max = clarity ? 4 : 8;
  const errors: FieldError[] = [];
  const image = await readDataUri(input.image_url);
  if ('error' in image) {
    const type = { missing: 'missing', 'not-data': 'file_download_error', unreadable: 'image_load_error' }[image.error];
    const shown = typeof input.image_url === 'string' ? input.image_url.slice(0, 64) : input.image_url;
    errors.push({ loc: ['body', 'image_url'], msg: image.reason, type, ...(image.error === 'missing' ? {} : { input: shown }) });
  }
  const scale = input[field] ?? 2;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    errors.push({ loc: ['body', field], msg: 'Input should be a valid number', type: 'float_type', input: scale });
  } else if (scale < 1 || scale > max) {
    errors.push({ loc: ['body', field], msg: `Input should be between 1 and ${max}`, type: 'value_error', input: scale, ctx: { ge: 1, le: max } });
  }
  if (errors.length > 0 || 'error' in image || typeof scale !== 'number') return { errors };
  const width = Math.round(image.width * scale);
  const height = Math.round(image.height * scale);
  if (width > 8192 || height > 8192) {
    return { errors: [{ loc: ['body', 'image_url'], msg: `Image too large: ${width}x${height} after upscaling (fake limit 8192)`, type: 'image_too_large' }] };
  }
  return { image, scale };
}

function sizeOf(input: Record<string, unknown>): { width: number; height: number } {
  const size = input.image_size ?? 'landscape_4_3'; // flux's default
  if (typeof size === 'string') return FAL_IMAGE_SIZES[size as keyof typeof FAL_IMAGE_SIZES];
  const custom = plainObject(size) ?? {};
  return { width: Number(custom.width ?? 512), height: Number(custom.height ?? 512) };
}

/** owner/app from an endpoint id, keeping fal's 'workflows/' and 'comfy/' namespaces. */
function appPathOf(endpoint: string): string | undefined {
  const parts = endpoint.split('/').filter(Boolean);
  const n = parts[0] === 'workflows' || parts[0] === 'comfy' ? 3 : 2;
  return parts.length >= n ? parts.slice(0, n).join('/') : undefined;
}

function falLogs(job: FalRequest, withLogs: boolean): unknown[] | null {
  if (!withLogs) return null;
  const ts = new Date(job.createdAt).toISOString();
  const state = job.state;
  if (state === 'IN_QUEUE') return [];
  const logs = [{ message: `Generating ${job.numImages} image(s)`, level: 'INFO', source: 'USER', timestamp: ts }];
  if (state === 'COMPLETED' && !job.cancelled) {
    logs.push({ message: job.failure ? `Error: ${job.failure}` : 'Done', level: job.failure ? 'ERROR' : 'INFO', source: 'USER', timestamp: ts });
  }
  return logs;
}

export async function startFakeFal(options?: FakeFalOptions): Promise<FakeFal> {
  const limiter = options?.rateLimit ? new RollingLimit(options.rateLimit.limit, options.rateLimit.intervalMs) : undefined;
  const requests = new Map<string, FalRequest>();
  const submitCalls: RecordedCall[] = [];
  const upscales: UpscaleCall[] = [];
  const upscalers = new Set(options?.upscaleModels ?? FAKE_FAL_UPSCALERS);
  let peakInFlight = 0;
  let limitedCount = 0;
  /** drop rules for the next status streams, in order */
  const streamDrops: Required<StreamDrop>[] = [];
  /** the open status streams, told when a cancel may have changed a request's status */
  const streamWatchers = new Set<() => void>();
  const wantsLogs = (req: ParsedRequest) => req.query.logs === '1' || req.query.logs === 'true';
  const inFlight = (now: number) => {
    let running = 0;
    for (const job of requests.values()) if (!job.cancelled && now - job.createdAt < job.latencyMs) running += 1;
    return running;
  };
  // Separate from the fault RNG so that random seeds never shift fault schedules.
  const seedRng = mulberry32((options?.rngSeed ?? 1) ^ 0x5eed5eed);
  // A signing key of this fake's own, published as fal publishes its keys.
  const signingKey = generateKeyPairSync('ed25519');
  const jwks = { keys: [{ ...signingKey.publicKey.export({ format: 'jwk' }), kid: 'fake-fal-webhook-1', alg: 'EdDSA', use: 'sig' }] };
  const outbox = new WebhookOutbox(
    {
      headers(body, requestId, seconds) {
        const digest = createHash('sha256').update(body).digest('hex');
        const message = [requestId, FAKE_FAL_USER_ID, String(seconds), digest].join('\n');
        return {
          'x-fal-webhook-request-id': requestId,
          'x-fal-webhook-user-id': FAKE_FAL_USER_ID,
          'x-fal-webhook-timestamp': String(seconds),
          'x-fal-webhook-signature': sign(null, Buffer.from(message), signingKey.privateKey).toString('hex'),
        };
      },
      corrupt(headers) {
        const signature = headers['x-fal-webhook-signature']!;
        return { 'x-fal-webhook-signature': (signature[0] === '0' ? '1' : '0') + signature.slice(1) };
      },
    },
    randomUUID,
  );

  const queueUrls = (core: FakeCore, job: FalRequest) => {
    const base = `${core.origin}/${job.appPath}/requests/${job.id}`;
    return { response_url: base, status_url: `${base}/status`, cancel_url: `${base}/cancel` };
  };

  const authorized = (core: FakeCore, req: ParsedRequest) =>
    core.options.key === undefined || req.headers.authorization === `Key ${core.options.key}`;

  /** Looks the job up under the owner/app it was submitted to; 404s otherwise. */
  const findJob = (res: ServerResponse, appPath: string, id: string): FalRequest | undefined => {
    const job = requests.get(id);
    if (!job || job.appPath !== appPath) {
      sendJson(res, 404, { detail: `Request ${id} not found` });
      return undefined;
    }
    return job;
  };

  async function submit(core: FakeCore, req: ParsedRequest, res: ServerResponse, call: RecordedCall): Promise<void> {
    const endpoint = req.path.replace(/^\/+|\/+$/g, '');
    const appPath = appPathOf(endpoint);
    if (!appPath) return sendJson(res, 404, { detail: `Application '${endpoint}' not found` });
    const input = plainObject(req.body);
    if (!input) {
      return sendJson(res, 422, { detail: [{ loc: ['body'], msg: 'Input should be a valid dictionary', type: 'dict_type', input: req.body }] });
    }
    let job: FalRequest;
    if (upscalers.has(endpoint)) {
      const checked = await validateUpscale(endpoint, input);
      if ('errors' in checked) return sendJson(res, 422, { detail: checked.errors });
      const { image, scale } = checked;
      const seed = Math.floor(seedRng() * 2 ** 31);
      const width = Math.round(image.width * scale);
      const height = Math.round(image.height * scale);
      // Upscalers answer PNG, one image, never flagged.
      job = new FalRequest(randomUUID(), endpoint, appPath, input, Date.now(), core.latencyMs, seed, width, height, 1, 'png', false);
      job.upscale = {
        requestId: job.id,
        model: endpoint,
        width: image.width,
        height: image.height,
        contentType: image.contentType,
        sha256: createHash('sha256').update(image.bytes).digest('hex'),
        scale,
      };
      upscales.push(job.upscale);
    } else {
      const errors = validate(input);
      if (errors.length > 0) return sendJson(res, 422, { detail: errors });
      const { width, height } = sizeOf(input);
      const prompt = String(input.prompt);
      const seed = typeof input.seed === 'number' ? input.seed : Math.floor(seedRng() * 2 ** 31);
      job = new FalRequest(
        randomUUID(),
        endpoint,
        appPath,
        input,
        Date.now(),
        core.latencyMs,
        seed,
        width,
        height,
        typeof input.num_images === 'number' ? input.num_images : 1,
        input.output_format === 'png' ? 'png' : 'jpeg', // flux defaults to jpeg
        prompt.includes(core.options.nsfwWord),
      );
    }
    // Generation faults aimed at 'submit' mark the request created here.
    const fault = core.faults.take('submit', isGenerationFault);
    if (fault) {
      call.fault = fault.kind;
      if (fault.kind === 'failed') job.failure = fault.message ?? 'Internal Server Error';
      else job.partialImages = fault.images;
    }
    requests.set(job.id, job);
    if (req.query.fal_webhook) {
      job.webhookUrl = req.query.fal_webhook;
      outbox.later(job.latencyMs, () => sendWebhook(core, job));
    }
    const queuedAhead = [...requests.values()].filter(
      (j) => j !== job && j.state === 'IN_QUEUE' && j.createdAt <= job.createdAt,
    ).length;
    sendJson(
      res,
      200,
      { request_id: job.id, ...queueUrls(core, job), status: 'IN_QUEUE', queue_position: queuedAhead },
      { 'x-fal-request-id': job.id },
    );
  }

  /** One status object, as the status endpoint and each stream event carry it. */
  function statusBody(core: FakeCore, job: FalRequest, withLogs: boolean): Record<string, unknown> {
    const state = job.state;
    const body: Record<string, unknown> = {
      status: state,
      request_id: job.id,
      ...queueUrls(core, job),
      logs: falLogs(job, withLogs),
    };
    if (state === 'IN_QUEUE') {
      body.queue_position = [...requests.values()].filter(
        (j) => j !== job && j.state === 'IN_QUEUE' && j.createdAt <= job.createdAt,
      ).length;
    }
    if (state === 'COMPLETED') {
      body.metrics = { inference_time: job.cancelled ? null : job.latencyMs / 1000 };
      // The queue's status enum is closed (IN_QUEUE | IN_PROGRESS | COMPLETED):
      // a request that errored or was cancelled still reports COMPLETED, and the
      // failure shows as `error`/`error_type` here and as an error on the result.
      if (job.cancelled) Object.assign(body, { error: 'Request was cancelled', error_type: 'request_cancelled' });
      else if (job.failure) Object.assign(body, { error: job.failure, error_type: 'internal_server_error' });
    }
    return body;
  }

  function status(core: FakeCore, req: ParsedRequest, res: ServerResponse, job: FalRequest): void {
    const body = statusBody(core, job, wantsLogs(req));
    sendJson(res, body.status === 'COMPLETED' ? 200 : 202, body, { 'x-fal-request-id': job.id });
  }

  /**
   * The status stream: one `data:` event with the status now, another at each change (queued →
   * running → completed, or a cancel), keep-alive comments in between, and the end of the response
   * after COMPLETED. A drop rule cuts it after some events by destroying the socket.
   */
  function statusStream(core: FakeCore, req: ParsedRequest, res: ServerResponse, job: FalRequest): void {
    const drop = streamDrops[0];
    if (drop) {
      drop.times -= 1;
      if (drop.times <= 0) streamDrops.shift();
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-fal-request-id': job.id,
    });
    res.flushHeaders();
    let sent = 0;
    let last: string | undefined;
    let timer: NodeJS.Timeout | undefined;
    const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), options?.streamKeepAliveMs ?? 15_000);
    const stop = () => {
      clearTimeout(timer);
      clearInterval(keepAlive);
      streamWatchers.delete(update);
    };
    function update(): void {
      clearTimeout(timer);
      if (res.destroyed) return stop();
      const body = statusBody(core, job, wantsLogs(req));
      if (body.status !== last) {
        last = String(body.status);
        res.write(`data: ${JSON.stringify(body)}\n\n`);
        sent += 1;
        if (drop && sent >= drop.afterEvents) {
          stop();
          // Mid-stream, as a proxy or a network fault cuts it: the client sees the body end with an error.
          // A moment later, not at once, so the events sent are read before the connection goes.
          return void setTimeout(() => res.socket?.destroy(), 10);
        }
      }
      if (last === 'COMPLETED') {
        stop();
        return void res.end();
      }
      // The next change: running after a third of the latency, completed at its end (or a cancel, which notifies).
      const elapsed = Date.now() - job.createdAt;
      const nextAt = elapsed < job.latencyMs / 3 ? job.latencyMs / 3 : job.latencyMs;
      timer = setTimeout(update, Math.max(0, nextAt - elapsed));
    }
    streamWatchers.add(update);
    res.on('close', stop);
    update();
  }

  function result(core: FakeCore, res: ServerResponse, call: RecordedCall, job: FalRequest): void {
    const headers = { 'x-fal-request-id': job.id };
    if (job.state !== 'COMPLETED') {
      return sendJson(res, 400, { detail: 'Request is still in progress' }, headers);
    }
    if (job.cancelled) {
      return sendJson(res, 400, { detail: 'Request was cancelled', error_type: 'request_cancelled' }, { ...headers, 'x-fal-error-type': 'request_cancelled' });
    }
    settleResult(core, job, call);
    if (job.failure) {
      // fal's result endpoint replays the status, headers and body the model
      // returned; a model that raised gives 500 with a typed `detail` array
      // (docs: "Model Errors") and X-Fal-Retryable. 500 is not in the client's
      // retry list for result(), so this surfaces as ApiError{status: 500}.
      return sendJson(
        res,
        500,
        { detail: [{ loc: ['body'], msg: job.failure, type: 'internal_server_error' }] },
        { ...headers, 'x-fal-retryable': 'false' },
      );
    }
    sendJson(res, 200, resultData(core, job), headers);
  }

  /**
   * Generation faults aimed at 'result' apply to the first result served (by GET or by webhook) for a
   * request, and stick to it (a later GET answers the same).
   */
  function settleResult(core: FakeCore, job: FalRequest, call?: RecordedCall): void {
    const fault = job.resultServed ? undefined : core.faults.take('result', isGenerationFault);
    job.resultServed = true;
    if (fault) {
      if (call) call.fault = fault.kind;
      if (fault.kind === 'failed') job.failure = fault.message ?? 'Internal Server Error';
      else job.partialImages = fault.images;
    }
  }

  /** A completed request's output, as its result and its webhook's payload carry it. */
  function resultData(core: FakeCore, job: FalRequest): Record<string, unknown> {
    if (job.upscale) {
      // An upscaler's output: one `image` (a 'partial' fault of 0 images leaves it out).
      const image =
        job.imageCount > 0
          ? {
              url: (options?.outputUrl ?? ((u: string) => u))(`${core.origin}/files/${job.id}/0.png`, job.id, 0),
              width: job.width,
              height: job.height,
              content_type: 'image/png',
              file_name: `${job.id}.png`,
            }
          : undefined;
      const clarity = job.endpoint.startsWith('fal-ai/clarity-upscaler');
      return { ...(image ? { image } : {}), ...(clarity ? { seed: job.seed, timings: { inference: job.latencyMs / 1000 } } : {}) };
    }
    const images = Array.from({ length: job.imageCount }, (_, n) => ({
      url: (options?.outputUrl ?? ((u: string) => u))(`${core.origin}/files/${job.id}/${n}.${job.ext}`, job.id, n),
      width: job.width,
      height: job.height,
      content_type: job.outputFormat === 'png' ? 'image/png' : 'image/jpeg',
    }));
    return {
      images,
      timings: { inference: job.latencyMs / 1000 },
      seed: job.seed,
      has_nsfw_concepts: images.map(() => job.nsfw),
      prompt: String(job.input.prompt),
    };
  }

  /** POSTs the request's end to its webhook URL, once: OK with the result's data, or ERROR. */
  function sendWebhook(core: FakeCore, job: FalRequest): void {
    if (!job.webhookUrl || job.webhookSent) return;
    // A timer a millisecond early: the request is not COMPLETED yet.
    if (job.state !== 'COMPLETED') return outbox.later(Math.max(1, job.completedAt - Date.now()), () => sendWebhook(core, job));
    job.webhookSent = true;
    let end: Record<string, unknown>;
    if (job.cancelled) {
      end = { status: 'ERROR', error: 'Request was cancelled', payload: { detail: 'Request was cancelled' } };
    } else {
      settleResult(core, job);
      end = job.failure
        ? { status: 'ERROR', error: 'Invalid status code: 500', payload: { detail: [{ loc: ['body'], msg: job.failure, type: 'internal_server_error' }] } }
        : { status: 'OK', payload: resultData(core, job) };
    }
    outbox.send(job.webhookUrl, job.id, (requestId) => JSON.stringify({ request_id: requestId, gateway_request_id: requestId, ...end }));
  }

  function cancel(res: ServerResponse, job: FalRequest): void {
    const headers = { 'x-fal-request-id': job.id };
    if (!job.cancelled && job.state === 'COMPLETED') {
      return sendJson(res, 400, { status: 'ALREADY_COMPLETED' }, headers);
    }
    // Queued or running: fal removes it from the queue or signals the runner;
    // either way this fake stops it and it completes as cancelled.
    job.cancelled = true;
    sendJson(res, 202, { status: 'CANCELLATION_REQUESTED' }, headers);
    for (const update of [...streamWatchers]) update();
    sendWebhook(core, job);
  }

  async function file(res: ServerResponse, id: string, index: number, ext: string): Promise<void> {
    const job = requests.get(id);
    if (!job || job.state !== 'COMPLETED' || job.cancelled || job.failure || index >= job.imageCount || ext !== job.ext) {
      return sendJson(res, 404, { detail: 'File not found' });
    }
    const custom = options?.fileBody?.(id, index);
    if (custom) {
      res.writeHead(custom.status ?? 200, { 'content-type': custom.contentType, 'content-length': custom.bytes.length, ...custom.headers });
      return void res.end(custom.bytes);
    }
    const format: FakeImageFormat = job.ext;
    // With the safety checker on (the default), fal returns a black frame for a flagged image.
    const blackOut = job.nsfw && job.input.enable_safety_checker !== false;
    const bytes = blackOut
      ? await solidImage(job.width, job.height, format, [0, 0, 0])
      : format === 'png' && options?.pngBytes && !job.upscale
        ? options.pngBytes
        : await fakeImage(job.width, job.height, format, `${job.id}/${index}`);
    sendBytes(res, 200, bytes, CONTENT_TYPES[format]);
  }

  const core = await startCore(options, async (core, req, res) => {
    const call = core.record(req);
    if (req.method === 'GET' && req.path === '/.well-known/jwks.json') return sendJson(res, 200, jwks);
    const fileMatch = /^\/files\/([^/]+)\/(\d+)\.([a-z]+)$/.exec(req.path);
    const requestMatch = /^\/(.+)\/requests\/([^/]+?)(\/status\/stream|\/status|\/cancel)?$/.exec(req.path);

    type Route =
      | { target: 'file'; id: string; index: number; ext: string }
      | { target: 'status' | 'result' | 'cancel'; appPath: string; id: string }
      | { target: 'stream'; appPath: string; id: string }
      | { target: 'submit' };
    let route: Route | undefined;
    if (req.method === 'GET' && fileMatch) {
      route = { target: 'file', id: fileMatch[1]!, index: Number(fileMatch[2]), ext: fileMatch[3]! };
    } else if (requestMatch) {
      const [, appPath, id, suffix] = requestMatch;
      if (suffix === '/status' && req.method === 'GET') route = { target: 'status', appPath: appPath!, id: id! };
      else if (suffix === '/status/stream' && req.method === 'GET') route = { target: 'stream', appPath: appPath!, id: id! };
      else if (suffix === '/cancel' && req.method === 'PUT') route = { target: 'cancel', appPath: appPath!, id: id! };
      else if (suffix === undefined && req.method === 'GET') route = { target: 'result', appPath: appPath!, id: id! };
    } else if (req.method === 'POST' && !req.path.startsWith('/files/')) {
      route = { target: 'submit' };
    }
    if (!route) return sendJson(res, 404, { detail: 'Not Found' });
    if (route.target === 'submit') submitCalls.push(call);

    // Streams have their own faults (dropStatusStreams); the rule book's 'status' faults are for polls.
    const httpFault = route.target === 'stream' ? undefined : core.faults.take(route.target, isHttpFault);
    if (httpFault) return core.sendHttpFault(res, call, httpFault, falErrors);

    if (route.target === 'file') return file(res, route.id, route.index, route.ext);
    if (!authorized(core, req)) return sendJson(res, 401, falErrors.unauthorized());
    if (route.target === 'submit') {
      const now = Date.now();
      const running = inFlight(now);
      if (options?.concurrencyLimit !== undefined && running >= options.concurrencyLimit) {
        limitedCount += 1;
        call.fault = 'rate-limit';
        call.retryAfterSeconds = 0.1;
        const { body, headers } = falErrors.rateLimited(call.retryAfterSeconds, 'both');
        return sendJson(res, 429, body, headers);
      }
      const waitMs = limiter?.admit(now) ?? 0;
      if (waitMs > 0) {
        limitedCount += 1;
        call.fault = 'rate-limit';
        call.retryAfterSeconds = Math.ceil(waitMs) / 1000;
        const { body, headers } = falErrors.rateLimited(call.retryAfterSeconds, 'both');
        return sendJson(res, 429, body, headers);
      }
      peakInFlight = Math.max(peakInFlight, running + 1);
      return submit(core, req, res, call);
    }

    const job = findJob(res, route.appPath, route.id);
    if (!job) return;
    if (route.target === 'status') return status(core, req, res, job);
    if (route.target === 'stream') return statusStream(core, req, res, job);
    if (route.target === 'result') return result(core, res, call, job);
    return cancel(res, job);
  });

  return {
    url: core.origin,
    calls: core.calls,
    requests,
    submits: () => [...submitCalls],
    upscaleCalls: () => [...upscales],
    maxInFlight: () => peakInFlight,
    limited: () => limitedCount,
    dropStatusStreams: (drop = {}) => {
      streamDrops.push({ times: drop.times ?? 1, afterEvents: drop.afterEvents ?? 1 });
    },
    statusPolls: () => core.calls.filter((c) => c.method === 'GET' && /\/requests\/[^/]+\/status$/.test(c.path)).length,
    statusStreams: () => core.calls.filter((c) => c.method === 'GET' && c.path.endsWith('/status/stream')).length,
    jwksUrl: `${core.origin}/.well-known/jwks.json`,
    injectWebhook: (fault, times) => outbox.inject(fault, times),
    webhookDeliveries: () => [...outbox.deliveries],
    inject: (rule) => core.faults.inject(rule),
    clearFaults: () => core.faults.clear(),
    setLatency: (ms) => {
      core.latencyMs = ms;
    },
    close: () => {
      outbox.close();
      return core.close();
    },
  };
}
