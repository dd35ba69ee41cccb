// A fake of Stability AI's REST v2beta stable-image generate API.
//
// Point StabilityProvider (or STABILITY_BASE_URL) at `fake.url` (the origin). Wire format:
//   POST /v2beta/stable-image/generate/ultra   multipart/form-data: prompt, negative_prompt?, aspect_ratio?,
//   POST /v2beta/stable-image/generate/core      seed?, output_format? (png | jpeg | webp)
//   POST /v2beta/stable-image/generate/sd3     the same, plus model (sd3.5-large | sd3.5-large-turbo |
//                                               sd3.5-medium); output_format png | jpeg only
// `Authorization: Bearer <key>`. `Accept: image/*` answers the image's bytes with headers `finish-reason`
// (SUCCESS | CONTENT_FILTERED) and `seed`; `Accept: application/json` answers {image: base64,
// finish_reason, seed}. Errors are JSON {id, name, errors: [...]}: 400 bad field (enum values checked),
// 401 bad key, 403 content_moderation, 404 unknown path, 429 rate limit, 5xx.
// The image is a PNG (or the asked format) of the aspect ratio's one-megapixel size; a seed of 0 (or
// none) is drawn at random and reported. A prompt with the NSFW word comes back CONTENT_FILTERED
// (a grey frame, as Stability blurs it).
// Faults (FaultRule, `on: 'submit'`): rate-limit (429; Retry-After header unless where: 'body'),
// server-error, hang, drop, unauthorized; `failed` answers 403 content_moderation with its message.
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import {
  type ErrorDialect,
  type FakeCommon,
  type FakeOptions,
  type ParsedRequest,
  type RecordedCall,
  RollingLimit,
  isGenerationFault,
  isHttpFault,
  mulberry32,
  sendJson,
  startCore,
} from './http.js';
import { CONTENT_TYPES, type FakeImageFormat, fakeImage, solidImage } from './png.js';

export type { FakeOptions, Fault, FaultRule, FaultTarget, RecordedCall } from './http.js';

/** Stability's aspect ratios at about one megapixel (SD3.5's sizes; multiples of 64). */
export const STABILITY_SIZES = {
  '1:1': { width: 1024, height: 1024 },
  '16:9': { width: 1344, height: 768 },
  '9:16': { width: 768, height: 1344 },
  '21:9': { width: 1536, height: 640 },
  '9:21': { width: 640, height: 1536 },
  '3:2': { width: 1216, height: 832 },
  '2:3': { width: 832, height: 1216 },
  '5:4': { width: 1088, height: 896 },
  '4:5': { width: 896, height: 1088 },
} as const;

const ENDPOINTS = ['ultra', 'core', 'sd3'] as const;
type Endpoint = (typeof ENDPOINTS)[number];
const SD3_MODELS = ['sd3.5-large', 'sd3.5-large-turbo', 'sd3.5-medium'];
const FORMATS: Record<Endpoint, readonly string[]> = { ultra: ['png', 'jpeg', 'webp'], core: ['png', 'jpeg', 'webp'], sd3: ['png', 'jpeg'] };
const MAX_SEED = 4_294_967_294;

/** One generation the fake answered with an image. */
export interface StabilityGeneration {
  endpoint: Endpoint;
  fields: Record<string, string>;
  seed: number;
  width: number;
  height: number;
  finishReason: 'SUCCESS' | 'CONTENT_FILTERED';
}

export interface FakeStabilityOptions extends FakeOptions {
  /** Stability's own limit (150 requests / 10 s): 429 without Retry-After past it; unset = none */
  rateLimit?: { limit: number; intervalMs: number };
}

export interface FakeStability extends FakeCommon {
  /** Every image answered (200), in order. */
  generations: StabilityGeneration[];
  /** The fields of each generate POST (multipart, parsed), faulted ones too. */
  fieldsOf(call: RecordedCall): Record<string, string>;
}

const errorBody = (name: string, errors: string[]) => ({ id: randomBytes(16).toString('hex'), name, errors });

const stabilityErrors: ErrorDialect = {
  rateLimited(seconds, where) {
    const headers: Record<string, string> = where === 'body' ? {} : { 'retry-after': String(seconds) };
    return { body: errorBody('rate_limit_exceeded', ['You have exceeded the rate limit of 150 requests within a 10 second period.']), headers };
  },
  unauthorized: () => errorBody('unauthorized', ['authorization: invalid or missing API key']),
  serverError: (status) => errorBody('internal_error', [`An unexpected server error has occurred (${status}).`]),
};

/** The multipart body as text fields (a file part, or a body that is not multipart, is undefined). */
async function parseForm(req: ParsedRequest): Promise<Record<string, string> | undefined> {
  const type = req.headers['content-type'] ?? '';
  if (!type.startsWith('multipart/form-data')) return undefined;
  try {
    const form = await new Response(req.raw, { headers: { 'content-type': type } }).formData();
    const fields: Record<string, string> = {};
    for (const [name, value] of form.entries()) {
      if (typeof value !== 'string') return undefined;
      fields[name] = value;
    }
    return fields;
  } catch {
    return undefined;
  }
}

/** Stability's checks of a generate request's fields: each bad one named, as its 400 does. */
function validate(endpoint: Endpoint, fields: Record<string, string>): string[] {
  const bad: string[] = [];
  const prompt = fields.prompt;
  if (prompt === undefined || prompt.length === 0) bad.push('prompt: cannot be empty');
  else if (prompt.length > 10_000) bad.push('prompt: must be at most 10000 characters');
  if ((fields.negative_prompt?.length ?? 0) > 10_000) bad.push('negative_prompt: must be at most 10000 characters');
  const oneOf = (name: string, allowed: readonly string[]) => {
    const value = fields[name];
    if (value !== undefined && !allowed.includes(value)) bad.push(`${name}: must be one of ${allowed.join(', ')}`);
  };
  oneOf('aspect_ratio', Object.keys(STABILITY_SIZES));
  oneOf('output_format', FORMATS[endpoint]);
  if (endpoint === 'sd3') oneOf('model', SD3_MODELS);
  if (fields.seed !== undefined) {
    const seed = Number(fields.seed);
    if (!/^\d+$/.test(fields.seed) || seed > MAX_SEED) bad.push(`seed: must be an integer from 0 to ${MAX_SEED}`);
  }
  return bad;
}

export async function startFakeStability(options?: FakeStabilityOptions): Promise<FakeStability> {
  const generations: StabilityGeneration[] = [];
  const submitCalls: RecordedCall[] = [];
  const fields = new WeakMap<RecordedCall, Record<string, string>>();
  const seedRng = mulberry32((options?.rngSeed ?? 1) ^ 0x57ab1e);
  const limit = options?.rateLimit ? new RollingLimit(options.rateLimit.limit, options.rateLimit.intervalMs) : undefined;

  const core = await startCore(options, async (core, req, res) => {
    const call = core.record(req);
    const match = /^\/v2beta\/stable-image\/generate\/([a-z0-9]+)$/.exec(req.path);
    const endpoint = ENDPOINTS.find((e) => e === match?.[1]);
    if (req.method !== 'POST' || !endpoint) return sendJson(res, 404, errorBody('not_found', [`${req.method} ${req.path}: not found`]));
    submitCalls.push(call);
    const parsed = await parseForm(req);
    if (parsed) {
      fields.set(call, parsed);
      call.body = parsed;
    }

    const httpFault = core.faults.take('submit', isHttpFault);
    if (httpFault) return core.sendHttpFault(res, call, httpFault, stabilityErrors);
    if (core.options.key !== undefined && req.headers.authorization !== `Bearer ${core.options.key}`) {
      return sendJson(res, 401, stabilityErrors.unauthorized());
    }
    if (limit && limit.admit(Date.now()) > 0) {
      call.fault = 'rate-limit';
      return sendJson(res, 429, stabilityErrors.rateLimited(60, 'body').body);
    }
    const accept = req.headers.accept ?? '';
    if (accept !== 'image/*' && accept !== 'application/json') {
      return sendJson(res, 400, errorBody('bad_request', [`accept: must be image/* or application/json, got "${accept}"`]));
    }
    if (!parsed) return sendJson(res, 400, errorBody('bad_request', ['content-type: must be multipart/form-data with text fields']));
    const invalid = validate(endpoint, parsed);
    if (invalid.length > 0) return sendJson(res, 400, errorBody('bad_request', invalid));

    const generationFault = core.faults.take('submit', isGenerationFault);
    if (generationFault?.kind === 'failed') {
      call.fault = 'failed';
      const message = generationFault.message ?? 'Your request was flagged by our content moderation system, as a result your request was denied and you were not charged.';
      return sendJson(res, 403, errorBody('content_moderation', [message]));
    }

    await core.sleep(core.latencyMs);
    if (core.closed) return;
    const ratio = (parsed.aspect_ratio ?? '1:1') as keyof typeof STABILITY_SIZES;
    const { width, height } = STABILITY_SIZES[ratio];
    const asked = Number(parsed.seed ?? 0);
    const seed = asked === 0 ? 1 + Math.floor(seedRng() * (MAX_SEED - 1)) : asked;
    const filtered = parsed.prompt!.includes(core.options.nsfwWord);
    const format = (parsed.output_format === 'jpeg' ? 'jpg' : (parsed.output_format ?? 'png')) as FakeImageFormat;
    const bytes = filtered ? await solidImage(width, height, format, [128, 128, 128]) : await fakeImage(width, height, format, `${parsed.prompt}#${seed}`);
    const finishReason = filtered ? 'CONTENT_FILTERED' : 'SUCCESS';
    generations.push({ endpoint, fields: parsed, seed, width, height, finishReason });
    if (accept === 'application/json') return sendJson(res, 200, { image: bytes.toString('base64'), finish_reason: finishReason, seed });
    sendImage(res, bytes, CONTENT_TYPES[format], { 'finish-reason': finishReason, seed: String(seed) });
  });

  return {
    url: core.origin,
    calls: core.calls,
    generations,
    submits: () => [...submitCalls],
    fieldsOf: (call) => fields.get(call) ?? {},
    inject: (rule) => core.faults.inject(rule),
    clearFaults: () => core.faults.clear(),
    setLatency: (ms) => {
      core.latencyMs = ms;
    },
    close: () => core.close(),
  };
}

function sendImage(res: ServerResponse, bytes: Buffer, contentType: string, headers: Record<string, string>): void {
  res.writeHead(200, { 'content-type': contentType, 'content-length': bytes.length, ...headers });
  res.end(bytes);
}
