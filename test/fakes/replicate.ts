// A fake of Replicate's predictions API, with flux-schnell's inputs and sizes.
//
// Point the real `replicate` client at it with `baseUrl: fake.url` (which ends
// in /v1). Wire format:
//   POST /v1/models/{owner}/{name}/predictions  {input, webhook?, webhook_events_filter?} → 201 prediction
//   POST /v1/predictions                        {version, input, …} → 201 prediction (version-based create)
//   GET  /v1/predictions/{id}                   starting → processing → succeeded | failed | canceled
//   POST /v1/predictions/{id}/cancel            → 200 prediction (status 'canceled' unless already terminal)
//   GET  /files/{id}/{n}.{webp|jpg|png}         output bytes (public, like replicate.delivery)
// Errors are problem-style JSON {title, detail, status}. `Prefer: wait=N` holds
// the create open until the prediction ends (succeeds, fails or is canceled) or
// N s pass, then answers 201 with the prediction as it stands, like Replicate:
// bare `wait` means 60 s and N is capped at 60. `preferWaitUnitMs` scales one
// second of the wait for tests (a wait=5 held for 5 × 20 ms).
//   GET  /v1/webhooks/default/secret            {key: "whsec_…"}: the secret its webhooks are signed with
// A create with `webhook` gets the prediction POSTed there when it completes (succeeds, fails or is
// canceled), signed as Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature: v1,<base64
// HMAC-SHA256 over "{id}.{timestamp}.{body}">); only the "completed" event is sent, and not at all
// when `webhook_events_filter` leaves it out. `injectWebhook` adds faults.
// Upscalers (`upscaleModels`, default nightmareai/real-esrgan, run by version `owner/name:<id>` as a
// community model is) take {image: data: URI, scale (0–10, default 4)} and answer one URL string (not a
// list) of a PNG exactly scale × the input's size; a missing, non-data: or undecodable image is refused
// 422. `upscaleCalls()` lists what was sent.
import type { ServerResponse } from 'node:http';
import { createHash, createHmac, randomBytes } from 'node:crypto';
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
  plainObject,
  sendBytes,
  sendJson,
  startCore,
} from './http.js';
import { readDataUri, type UpscaleCall } from './fal.js';
import { CONTENT_TYPES, type FakeImageFormat, fakeImage } from './png.js';

export type { UpscaleCall } from './fal.js';

/** The upscalers the fake serves by default (owner/name; a version is accepted and recorded). */
export const FAKE_REPLICATE_UPSCALERS = ['nightmareai/real-esrgan'] as const;

export type { FakeOptions, Fault, FaultRule, FaultTarget, RecordedCall, WebhookDelivery, WebhookFault } from './http.js';

export type PredictionStatus = 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled';

// flux-schnell's aspect ratios at megapixels '1' (sizes are multiples of 16 near 1 MP).
export const FLUX_SCHNELL_SIZES = {
  '1:1': { width: 1024, height: 1024 },
  '16:9': { width: 1344, height: 768 },
  '9:16': { width: 768, height: 1344 },
  '4:3': { width: 1152, height: 896 },
  '3:4': { width: 896, height: 1152 },
  '3:2': { width: 1216, height: 832 },
  '2:3': { width: 832, height: 1216 },
  '21:9': { width: 1536, height: 640 },
  '9:21': { width: 640, height: 1536 },
  '4:5': { width: 896, height: 1088 },
  '5:4': { width: 1088, height: 896 },
} as const;
type AspectRatio = keyof typeof FLUX_SCHNELL_SIZES;

// The message cog-flux raises when the safety checker rejects every image.
export const REPLICATE_NSFW_ERROR =
  'All generated images contained NSFW content. Try running it again with a different prompt.';

/** One prediction, as the fake sees it. `status` is derived from the clock. */
export class ReplicatePrediction {
  canceledAt: number | undefined;
  /** Error of a 'failed' fault (or of the NSFW filter). */
  failure: string | undefined;
  /** Output count of a 'partial' fault. */
  partialOutputs: number | undefined;
  /** Set once a GET showed a terminal status: 'status' faults no longer rewrite it. */
  terminalSeen = false;
  /** The create's `webhook_events_filter`, and whether the completed event was sent. */
  webhookEvents: string[] | undefined;
  webhookSent = false;
  /** Set for an upscaler's prediction: what it was sent (its output is one URL, not a list). */
  upscale: UpscaleCall | undefined;

  constructor(
    readonly id: string,
    readonly model: string,
    readonly version: string,
    readonly input: Record<string, unknown>,
    readonly createdAt: number,
    readonly latencyMs: number,
    readonly seed: number,
    readonly width: number,
    readonly height: number,
    readonly numOutputs: number,
    readonly format: FakeImageFormat,
    readonly webhook: string | undefined,
  ) {}

  get status(): PredictionStatus {
    if (this.canceledAt !== undefined) return 'canceled';
    const elapsed = Date.now() - this.createdAt;
    if (elapsed >= this.latencyMs) return this.failure === undefined ? 'succeeded' : 'failed';
    // First third booting, the rest running: polls see both states.
    return elapsed < this.latencyMs / 3 ? 'starting' : 'processing';
  }

  get outputCount(): number {
    return this.partialOutputs === undefined ? this.numOutputs : Math.min(this.numOutputs, this.partialOutputs);
  }

  get terminal(): boolean {
    const s = this.status;
    return s === 'succeeded' || s === 'failed' || s === 'canceled';
  }

  toJSON(origin: string): Record<string, unknown> {
    const status = this.status;
    const startedAt = this.createdAt + this.latencyMs / 3;
    const started = status !== 'starting' && (this.canceledAt === undefined || this.canceledAt >= startedAt);
    const completedAt =
      status === 'canceled' ? this.canceledAt : status === 'succeeded' || status === 'failed' ? this.createdAt + this.latencyMs : undefined;
    let logs = '';
    if (started) logs += `Using seed: ${this.seed}\n`;
    if (status === 'succeeded') logs += `Total safe images: ${this.outputCount} out of ${this.numOutputs}\n`;
    if (status === 'failed') logs += `Traceback (most recent call last):\nException: ${this.failure}\n`;
    const api = `${origin}/v1/predictions/${this.id}`;
    const urls = Array.from({ length: this.outputCount }, (_, n) => `${origin}/files/${this.id}/${n}.${this.format}`);
    return {
      id: this.id,
      model: this.model,
      version: this.version,
      input: this.input,
      logs,
      // Real-ESRGAN's output schema is one URI; flux's a list of them.
      output: status !== 'succeeded' ? null : this.upscale ? (urls[0] ?? null) : urls,
      data_removed: false,
      error: status === 'failed' ? this.failure : null,
      status,
      created_at: new Date(this.createdAt).toISOString(),
      ...(started ? { started_at: new Date(startedAt).toISOString() } : {}),
      ...(completedAt !== undefined ? { completed_at: new Date(completedAt).toISOString() } : {}),
      urls: { cancel: `${api}/cancel`, get: api, web: `${origin}/p/${this.id}` },
      ...(status === 'succeeded' || status === 'failed'
        ? { metrics: { predict_time: ((this.latencyMs * 2) / 3) / 1000, total_time: this.latencyMs / 1000 } }
        : {}),
      ...(this.webhook !== undefined ? { webhook: this.webhook } : {}),
    };
  }
}

export interface FakeReplicateOptions extends FakeOptions {
  /** How long one second of `Prefer: wait=N` lasts here, in ms @default 1000 */
  preferWaitUnitMs?: number;
  /** Models (owner/name) served as upscalers @default FAKE_REPLICATE_UPSCALERS */
  upscaleModels?: readonly string[];
}

export interface FakeReplicate extends FakeCommon {
  /** Every created prediction by id. */
  predictions: Map<string, ReplicatePrediction>;
  /** The `GET /v1/predictions/{id}` calls (status polls), of one prediction or of all. */
  gets(id?: string): RecordedCall[];
  /** Every accepted upscale, in order: which image was sent and at what scale. */
  upscaleCalls(): UpscaleCall[];
  /** The account's webhook signing secret (`whsec_…`), as `GET /v1/webhooks/default/secret` answers it. */
  webhookSecret: string;
  /** The next `times` webhook deliveries get `fault`. */
  injectWebhook(fault: WebhookFault, times?: number): void;
  /** Every webhook delivery made or dropped, with the answer it got. */
  webhookDeliveries(): WebhookDelivery[];
}

/** The longest a create is held, in seconds: Replicate's cap, and what a bare `Prefer: wait` means. */
const MAX_PREFER_WAIT_SECONDS = 60;
/** How often a held create looks again (a cancel can end the prediction before its latency has passed). */
const HOLD_STEP_MS = 20;

const problem = (status: number, title: string, detail: string, extra: Record<string, unknown> = {}) => ({
  title,
  detail,
  status,
  ...extra,
});

const replicateErrors: ErrorDialect = {
  // Replicate documents `retry_after` in the body; a Retry-After header is not
  // promised, so `where` lets tests cover callers that read only one of them.
  rateLimited(seconds, where) {
    const headers: Record<string, string> = where === 'body' ? {} : { 'retry-after': String(seconds) };
    const body =
      where === 'header'
        ? problem(429, 'Request was throttled', 'Request was throttled.')
        : problem(429, 'Request was throttled', `Request was throttled. Expected available in ${seconds} seconds.`, {
            retry_after: seconds,
          });
    return { body, headers };
  },
  unauthorized: () => problem(401, 'Unauthenticated', 'You did not pass a valid authentication token'),
  serverError: (status) => problem(status, 'Internal Server Error', 'An unexpected error occurred.'),
};

interface InvalidField {
  type: string;
  field: string;
  description: string;
}

function validate(body: Record<string, unknown>): InvalidField[] {
  const input = plainObject(body.input);
  if (!input) return [{ type: 'required', field: '', description: 'input is required' }];
  const bad: InvalidField[] = [];
  const intIn = (name: string, min: number, max: number) => {
    const v = input[name];
    if (v === undefined) return;
    if (typeof v !== 'number' || !Number.isInteger(v)) bad.push({ type: 'invalid_type', field: `input.${name}`, description: 'Invalid type. Expected: integer' });
    else if (v < min) bad.push({ type: 'greater_than_equal', field: `input.${name}`, description: `Must be greater than or equal to ${min}` });
    else if (v > max) bad.push({ type: 'less_than_equal', field: `input.${name}`, description: `Must be less than or equal to ${max}` });
  };
  const enumIn = (name: string, allowed: readonly string[]) => {
    const v = input[name];
    if (v !== undefined && (typeof v !== 'string' || !allowed.includes(v))) {
      bad.push({ type: 'enum', field: `input.${name}`, description: `${name} must be one of the following: ${allowed.map((a) => `"${a}"`).join(', ')}` });
    }
  };
  if (typeof input.prompt !== 'string') bad.push({ type: 'required', field: 'input', description: 'prompt is required' });
  intIn('num_outputs', 1, 4);
  intIn('num_inference_steps', 1, 4);
  intIn('output_quality', 0, 100);
  if (input.seed !== undefined && input.seed !== null) intIn('seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  enumIn('aspect_ratio', Object.keys(FLUX_SCHNELL_SIZES));
  enumIn('output_format', ['webp', 'jpg', 'png']);
  enumIn('megapixels', ['1', '0.25']);
  return bad;
}

/** Real-ESRGAN's input: `image` inline and `scale` (0–10, default 4); the output must fit 8192 pixels a side. */
async function validateUpscale(input: Record<string, unknown>): Promise<{ invalid: InvalidField[] } | { image: { width: number; height: number; contentType: string; bytes: Buffer }; scale: number }> {
  const invalid: InvalidField[] = [];
  const image = await readDataUri(input.image);
  if ('error' in image) {
    const description = { missing: 'image is required', 'not-data': 'Does not match format "uri" of an image this fake can read (a data: URI)', unreadable: 'cannot identify image file' }[image.error];
    invalid.push({ type: image.error === 'missing' ? 'required' : 'format', field: image.error === 'missing' ? 'input' : 'input.image', description });
  }
  const scale = input.scale ?? 4;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) invalid.push({ type: 'invalid_type', field: 'input.scale', description: 'Invalid type. Expected: number' });
  else if (scale <= 0 || scale > 10) invalid.push({ type: 'less_than_equal', field: 'input.scale', description: 'Must be greater than 0 and less than or equal to 10' });
  if (invalid.length > 0 || 'error' in image || typeof scale !== 'number') return { invalid };
  if (Math.round(image.width * scale) > 8192 || Math.round(image.height * scale) > 8192) {
    return { invalid: [{ type: 'format', field: 'input.image', description: 'image too large to upscale (fake limit 8192 a side)' }] };
  }
  return { image, scale };
}

const invalidInput = (res: ServerResponse, invalid: InvalidField[]) =>
  sendJson(res, 422, problem(422, 'Input validation failed', invalid.map((f) => `- ${f.field || 'body'}: ${f.description}\n`).join(''), { invalid_fields: invalid }));

function newPredictionId(): string {
  // Replicate ids: 26 lowercase base-32-ish characters, e.g. cky59275mdrm80cpw83rcn3ej0.
  const alphabet = '0123456789abcdefghjkmnpqrstvwxyz';
  return [...randomBytes(26)].map((b) => alphabet[b % 32]).join('');
}

export async function startFakeReplicate(options?: FakeReplicateOptions): Promise<FakeReplicate> {
  const predictions = new Map<string, ReplicatePrediction>();
  const submitCalls: RecordedCall[] = [];
  const getCalls: { id: string; call: RecordedCall }[] = [];
  const upscales: UpscaleCall[] = [];
  const upscalers = new Set(options?.upscaleModels ?? FAKE_REPLICATE_UPSCALERS);
  const preferWaitUnitMs = options?.preferWaitUnitMs ?? 1000;
  // Separate from the fault RNG so that random seeds never shift fault schedules.
  const seedRng = mulberry32((options?.rngSeed ?? 1) ^ 0x5eed5eed);
  const webhookSecret = `whsec_${randomBytes(24).toString('base64')}`;
  const hmac = (content: string) => createHmac('sha256', Buffer.from(webhookSecret.slice('whsec_'.length), 'base64')).update(content).digest('base64');
  const outbox = new WebhookOutbox(
    {
      headers(body, _requestId, seconds) {
        const id = `msg_${randomBytes(12).toString('hex')}`;
        return { 'webhook-id': id, 'webhook-timestamp': String(seconds), 'webhook-signature': `v1,${hmac(`${id}.${seconds}.${body}`)}` };
      },
      corrupt: () => ({ 'webhook-signature': `v1,${hmac('not what was sent')}` }),
    },
    newPredictionId,
  );

  /** POSTs the prediction to its webhook once it has completed (once). */
  function sendWebhook(core: FakeCore, prediction: ReplicatePrediction): void {
    if (!prediction.webhook || prediction.webhookSent) return;
    if (prediction.webhookEvents && !prediction.webhookEvents.includes('completed')) return;
    // A timer a millisecond early: the prediction has not ended yet.
    if (!prediction.terminal) return outbox.later(Math.max(1, prediction.createdAt + prediction.latencyMs - Date.now()), () => sendWebhook(core, prediction));
    prediction.webhookSent = true;
    outbox.send(prediction.webhook, prediction.id, (id) => JSON.stringify({ ...prediction.toJSON(core.origin), id }));
  }

  const authorized = (core: FakeCore, req: ParsedRequest) =>
    core.options.key === undefined || req.headers.authorization === `Bearer ${core.options.key}`;

  const notFound = (res: ServerResponse) => sendJson(res, 404, problem(404, 'Not found', 'Not found.'));

  async function create(
    core: FakeCore,
    req: ParsedRequest,
    res: ServerResponse,
    call: RecordedCall,
    model: string,
    version: string,
  ): Promise<void> {
    const body = plainObject(req.body);
    if (!body) {
      return sendJson(res, 400, problem(400, 'Invalid request body', 'The request body must be a JSON object.'));
    }
    if (upscalers.has(model)) return createUpscale(core, req, res, call, body, model, version);
    const invalid = validate(body);
    if (invalid.length > 0) return invalidInput(res, invalid);
    const input = plainObject(body.input) ?? {};
    const ratio = (typeof input.aspect_ratio === 'string' ? input.aspect_ratio : '1:1') as AspectRatio;
    let { width, height } = FLUX_SCHNELL_SIZES[ratio];
    if (input.megapixels === '0.25') {
      // Quarter of the pixels: half of each side, kept on the 16-pixel grid.
      width = Math.round(width / 2 / 16) * 16;
      height = Math.round(height / 2 / 16) * 16;
    }
    const prediction = new ReplicatePrediction(
      newPredictionId(),
      model,
      version,
      input,
      Date.now(),
      core.latencyMs,
      typeof input.seed === 'number' ? input.seed : Math.floor(seedRng() * 2 ** 16),
      width,
      height,
      typeof input.num_outputs === 'number' ? input.num_outputs : 1,
      (typeof input.output_format === 'string' ? input.output_format : 'webp') as FakeImageFormat,
      typeof body.webhook === 'string' ? body.webhook : undefined,
    );
    // cog-flux drops each flagged image and raises when none is left; a prompt
    // with the NSFW word flags all of them.
    if (String(input.prompt).includes(core.options.nsfwWord) && input.disable_safety_checker !== true) {
      prediction.failure = REPLICATE_NSFW_ERROR;
    }
    // Generation faults aimed at 'submit' shape the prediction created here.
    const fault = core.faults.take('submit', isGenerationFault);
    if (fault) {
      call.fault = fault.kind;
      if (fault.kind === 'failed') prediction.failure = fault.message ?? 'Prediction interrupted; please retry (code: PA)';
      else prediction.partialOutputs = fault.images;
    }
    await accept(core, req, res, body, prediction);
  }

  /** An upscaler's prediction: one PNG of scale × the image sent. */
  async function createUpscale(
    core: FakeCore,
    req: ParsedRequest,
    res: ServerResponse,
    call: RecordedCall,
    body: Record<string, unknown>,
    model: string,
    version: string,
  ): Promise<void> {
    // A community model has no `/models/{owner}/{name}/predictions` endpoint of its own (only official
    // models do): it is run by version, which catches a caller that addresses it by name.
    if (version === 'hidden') return sendJson(res, 404, problem(404, 'Not found', `${model} is not an official model: run it by version (owner/name:version)`));
    const input = plainObject(body.input);
    if (!input) return invalidInput(res, [{ type: 'required', field: '', description: 'input is required' }]);
    const checked = await validateUpscale(input);
    if ('invalid' in checked) return invalidInput(res, checked.invalid);
    const { image, scale } = checked;
    const prediction = new ReplicatePrediction(
      newPredictionId(),
      model,
      version,
      input,
      Date.now(),
      core.latencyMs,
      Math.floor(seedRng() * 2 ** 16),
      Math.round(image.width * scale),
      Math.round(image.height * scale),
      1,
      'png',
      typeof body.webhook === 'string' ? body.webhook : undefined,
    );
    prediction.upscale = {
      requestId: prediction.id,
      model: `${model}:${version}`,
      width: image.width,
      height: image.height,
      contentType: image.contentType,
      sha256: createHash('sha256').update(image.bytes).digest('hex'),
      scale,
    };
    upscales.push(prediction.upscale);
    const fault = core.faults.take('submit', isGenerationFault);
    if (fault) {
      call.fault = fault.kind;
      if (fault.kind === 'failed') prediction.failure = fault.message ?? 'Prediction interrupted; please retry (code: PA)';
      else prediction.partialOutputs = fault.images;
    }
    await accept(core, req, res, body, prediction);
  }

  /** Keeps a created prediction, arms its webhook, holds the answer for `Prefer: wait`, and answers 201. */
  async function accept(core: FakeCore, req: ParsedRequest, res: ServerResponse, body: Record<string, unknown>, prediction: ReplicatePrediction): Promise<void> {
    predictions.set(prediction.id, prediction);
    if (prediction.webhook) {
      const events = body.webhook_events_filter;
      prediction.webhookEvents = Array.isArray(events) ? events.map(String) : undefined;
      outbox.later(prediction.latencyMs, () => sendWebhook(core, prediction));
    }

    const prefer = /(?:^|[,;\s])wait(?:=(\d+))?(?:$|[,;\s])/.exec(req.headers.prefer ?? '');
    if (prefer) {
      const seconds = Math.min(Number(prefer[1] ?? MAX_PREFER_WAIT_SECONDS), MAX_PREFER_WAIT_SECONDS);
      const holdUntil = Date.now() + seconds * preferWaitUnitMs;
      // Until it ends or the wait is over, whichever comes first; a cancel meanwhile ends it too.
      for (let left = holdUntil - Date.now(); left > 0 && !prediction.terminal && !core.closed; left = holdUntil - Date.now()) {
        const toEnd = prediction.createdAt + prediction.latencyMs - Date.now();
        await core.sleep(Math.max(1, Math.min(left, toEnd, HOLD_STEP_MS)));
      }
      if (core.closed) return;
    }
    sendJson(res, 201, prediction.toJSON(core.origin));
  }

  function get(core: FakeCore, res: ServerResponse, call: RecordedCall, prediction: ReplicatePrediction): void {
    // Generation faults aimed at 'status' apply to the first GET that sees the
    // prediction finish, and stick to it.
    if (!prediction.terminalSeen && prediction.status === 'succeeded') {
      const fault = core.faults.take('status', isGenerationFault);
      if (fault) {
        call.fault = fault.kind;
        if (fault.kind === 'failed') prediction.failure = fault.message ?? 'Prediction interrupted; please retry (code: PA)';
        else prediction.partialOutputs = fault.images;
      }
    }
    if (prediction.terminal) prediction.terminalSeen = true;
    sendJson(res, 200, prediction.toJSON(core.origin));
  }

  function cancel(core: FakeCore, res: ServerResponse, prediction: ReplicatePrediction): void {
    // Canceling a finished prediction is a no-op that returns it as it is.
    if (!prediction.terminal) prediction.canceledAt = Date.now();
    prediction.terminalSeen = true;
    sendJson(res, 200, prediction.toJSON(core.origin));
    sendWebhook(core, prediction);
  }

  async function file(res: ServerResponse, id: string, index: number, ext: string): Promise<void> {
    const prediction = predictions.get(id);
    if (!prediction || prediction.status !== 'succeeded' || index >= prediction.outputCount || ext !== prediction.format) {
      return notFound(res);
    }
    const bytes = await fakeImage(prediction.width, prediction.height, prediction.format, `${id}/${index}`);
    sendBytes(res, 200, bytes, CONTENT_TYPES[prediction.format]);
  }

  const core = await startCore(options, async (core, req, res) => {
    const call = core.record(req);
    if (req.method === 'GET' && req.path === '/v1/webhooks/default/secret') {
      if (!authorized(core, req)) return sendJson(res, 401, replicateErrors.unauthorized());
      return sendJson(res, 200, { key: webhookSecret });
    }
    const fileMatch = /^\/files\/([^/]+)\/(\d+)\.([a-z]+)$/.exec(req.path);
    const modelCreate = /^\/v1\/models\/([^/]+)\/([^/]+)\/predictions\/?$/.exec(req.path);
    const predictionMatch = /^\/v1\/predictions\/([^/]+?)(\/cancel)?\/?$/.exec(req.path);

    type Route =
      | { target: 'file'; id: string; index: number; ext: string }
      | { target: 'submit'; model?: string }
      | { target: 'status' | 'cancel'; id: string };
    let route: Route | undefined;
    if (req.method === 'GET' && fileMatch) {
      route = { target: 'file', id: fileMatch[1]!, index: Number(fileMatch[2]), ext: fileMatch[3]! };
    } else if (req.method === 'POST' && modelCreate) {
      route = { target: 'submit', model: `${modelCreate[1]}/${modelCreate[2]}` };
    } else if (req.method === 'POST' && /^\/v1\/predictions\/?$/.test(req.path)) {
      route = { target: 'submit' };
    } else if (predictionMatch) {
      const [, id, cancelSuffix] = predictionMatch;
      if (cancelSuffix && req.method === 'POST') route = { target: 'cancel', id: id! };
      else if (!cancelSuffix && req.method === 'GET') route = { target: 'status', id: id! };
    }
    if (!route) return notFound(res);
    if (route.target === 'submit') submitCalls.push(call);
    // Every status poll counts, a faulted or unknown one too.
    if (route.target === 'status') getCalls.push({ id: route.id, call });

    const httpFault = core.faults.take(route.target, isHttpFault);
    if (httpFault) return core.sendHttpFault(res, call, httpFault, replicateErrors);

    if (route.target === 'file') return file(res, route.id, route.index, route.ext);
    if (!authorized(core, req)) return sendJson(res, 401, replicateErrors.unauthorized());

    if (route.target === 'submit') {
      if (route.model) return create(core, req, res, call, route.model, 'hidden');
      // Version-based create: "owner/name:hash" or a bare hash.
      const version = String(plainObject(req.body)?.version ?? '');
      const [model, hash] = version.includes(':') ? version.split(':', 2) : ['unknown/unknown', version];
      if (!hash) return sendJson(res, 422, problem(422, 'Input validation failed', '- version is required\n', { invalid_fields: [{ type: 'required', field: '', description: 'version is required' }] }));
      return create(core, req, res, call, model!, hash);
    }
    const prediction = predictions.get(route.id);
    if (!prediction) return notFound(res);
    if (route.target === 'status') return get(core, res, call, prediction);
    return cancel(core, res, prediction);
  });

  return {
    url: `${core.origin}/v1`,
    calls: core.calls,
    predictions,
    submits: () => [...submitCalls],
    gets: (id) => getCalls.filter((g) => id === undefined || g.id === id).map((g) => g.call),
    upscaleCalls: () => [...upscales],
    webhookSecret,
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
