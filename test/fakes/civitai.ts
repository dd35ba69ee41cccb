// A fake of CivitAI's generation (orchestration) consumer jobs API.
//
// Point CivitaiProvider (or CIVITAI_BASE_URL) at `fake.url` (the origin). Wire format:
//   POST   /v1/consumer/jobs?wait=false   JSON textToImage job template:
//          { $type: 'textToImage', baseModel?, model: <checkpoint AIR>, params: { prompt, negativePrompt?,
//            scheduler?, steps?, cfgScale?, width, height, seed?, clipSkip? }, quantity?,
//            additionalNetworks?: { <AIR>: { type?, strength?, triggerWord? } } }
//          → 200 { token, jobs: [JobStatus…] }, one job per image asked (`quantity`, 1–maxQuantity)
//   GET    /v1/consumer/jobs?token=…      → 200 { token, jobs: [JobStatus…] }
//   DELETE /v1/consumer/jobs?token=…&force=true → 200 (the jobs end as Deleted)
//   GET    /blobs/<blobKey>                → the image (PNG at the asked size), as the temp blob bucket
// JobStatus: { jobId, cost, result: { blobKey, available, blobUrl?, blobUrlExpirationDate?, nsfw? },
// scheduled, lastEvent: { jobId, type: Initialized | Claimed | Succeeded | Failed | Deleted, context? } }.
// A job finishes `latencyMs` after its submit. `Authorization: Bearer <token>`; errors are ASP.NET
// ProblemDetails { type, title, status, detail?, errors? }: 400 validation (each bad field named), 401,
// 404 unknown token, 429, 5xx. A prompt with the NSFW word comes back black and `nsfw: true`.
// Faults (FaultRule): on 'submit' | 'status' | 'cancel' | 'file' the HTTP faults; `failed` on 'submit'
// makes that template's jobs end Failed (with the message in lastEvent.context), `partial` makes all but
// `images` of them fail.
import { randomUUID } from 'node:crypto';
import {
  type ErrorDialect,
  type FakeCommon,
  type FakeOptions,
  type RecordedCall,
  isGenerationFault,
  isHttpFault,
  plainObject,
  sendBytes,
  sendJson,
  startCore,
} from './http.js';
import { fakeImage, solidImage } from './png.js';

export type { FakeOptions, Fault, FaultRule, FaultTarget, RecordedCall } from './http.js';

const AIR = /^urn:air:[a-z0-9]+:[a-z]+:[a-z]+:\d+@\d+$/i;
const NETWORK_TYPES = ['Lora', 'Hypernetwork', 'TextualInversion', 'Lycoris', 'Checkpoint', 'Vae', 'LoCon'];
const SCHEDULERS = ['EulerA', 'Euler', 'LMS', 'Heun', 'DPM2', 'DPM2A', 'DPM2SA', 'DPM2M', 'DPMSDE', 'DPMFast', 'DPMAdaptive', 'LMSKarras', 'DPM2Karras', 'DPM2AKarras', 'DPM2SAKarras', 'DPM2MKarras', 'DPMSDEKarras', 'DDIM', 'PLMS', 'UniPC', 'Undefined', 'LCM', 'DDPM', 'DEIS'];
/** The client library's own bound on a side. */
const MAX_SIDE = 1440;

interface FakeJob {
  jobId: string;
  blobKey: string;
  doneAt: number;
  width: number;
  height: number;
  prompt: string;
  seed: number;
  nsfw: boolean;
  /** set when the job ends badly */
  failed?: string;
  deleted?: boolean;
}

/** One accepted job template. */
export interface CivitaiGeneration {
  token: string;
  body: Record<string, unknown>;
  jobIds: string[];
}

export interface FakeCivitaiOptions extends FakeOptions {
  /** the most images one template may ask for @default 4 */
  maxQuantity?: number;
}

export interface FakeCivitai extends FakeCommon {
  /** Every accepted job template, in order. */
  generations: CivitaiGeneration[];
  /** The status GETs, in order. */
  polls(): RecordedCall[];
}

const problem = (status: number, title: string, extra: Record<string, unknown> = {}) => ({
  type: `https://tools.ietf.org/html/rfc9110#section-15.${status >= 500 ? '6' : '5'}.${status === 429 ? 29 : 1}`,
  title,
  status,
  ...extra,
});

const civitaiErrors: ErrorDialect = {
  rateLimited(seconds, where) {
    const headers: Record<string, string> = where === 'body' ? {} : { 'retry-after': String(seconds) };
    return { body: problem(429, 'Too Many Requests', { detail: 'You have exceeded the request limit.', ...(where !== 'header' ? { retry_after: seconds } : {}) }), headers };
  },
  unauthorized: () => problem(401, 'Unauthorized', { detail: 'A valid bearer token is required.' }),
  serverError: (status) => problem(status, 'An error occurred while processing your request.'),
};

/** The orchestrator's checks of a textToImage template: each bad field named, as its 400 does. */
function validate(body: Record<string, unknown> | undefined, maxQuantity: number): Record<string, string[]> {
  const errors: Record<string, string[]> = {};
  const bad = (field: string, message: string) => (errors[field] ??= []).push(message);
  if (!body) return { $: ['The request body must be a JSON object.'] };
  if (body.$type !== 'textToImage') bad('$type', 'Expected "textToImage".');
  if (typeof body.model !== 'string' || !AIR.test(body.model)) bad('model', 'Expected an AIR such as urn:air:sdxl:checkpoint:civitai:101055@128078.');
  if (body.baseModel !== undefined && body.baseModel !== 'SDXL' && body.baseModel !== 'SD_1_5') bad('baseModel', 'Expected SDXL or SD_1_5.');
  const quantity = body.quantity ?? 1;
  if (!Number.isInteger(quantity) || (quantity as number) < 1 || (quantity as number) > maxQuantity) bad('quantity', `Expected an integer from 1 to ${maxQuantity}.`);
  const params = plainObject(body.params);
  if (!params) bad('params', 'Required.');
  else {
    if (typeof params.prompt !== 'string' || params.prompt.length === 0) bad('params.prompt', 'Required.');
    for (const side of ['width', 'height'] as const) {
      const value = params[side];
      if (!Number.isInteger(value) || (value as number) < 64 || (value as number) > MAX_SIDE || (value as number) % 8 !== 0) {
        bad(`params.${side}`, `Expected a multiple of 8 from 64 to ${MAX_SIDE}.`);
      }
    }
    if (params.seed !== undefined && !(Number.isInteger(params.seed) && (params.seed as number) >= -1 && (params.seed as number) < 4_294_967_295)) bad('params.seed', 'Out of range.');
    if (params.scheduler !== undefined && !SCHEDULERS.includes(params.scheduler as string)) bad('params.scheduler', 'Unknown scheduler.');
    for (const name of ['steps', 'cfgScale', 'clipSkip']) if (params[name] !== undefined && typeof params[name] !== 'number') bad(`params.${name}`, 'Expected a number.');
  }
  if (body.additionalNetworks !== undefined) {
    const networks = plainObject(body.additionalNetworks);
    if (!networks) bad('additionalNetworks', 'Expected an object keyed by AIR.');
    for (const [air, value] of Object.entries(networks ?? {})) {
      const network = plainObject(value);
      if (!AIR.test(air)) bad(`additionalNetworks.${air}`, 'The key must be an AIR.');
      else if (!network) bad(`additionalNetworks.${air}`, 'Expected { type, strength }.');
      else {
        if (network.type !== undefined && !NETWORK_TYPES.includes(network.type as string)) bad(`additionalNetworks.${air}.type`, 'Unknown asset type.');
        if (network.strength !== undefined && typeof network.strength !== 'number') bad(`additionalNetworks.${air}.strength`, 'Expected a number.');
      }
    }
  }
  return errors;
}

export async function startFakeCivitai(options?: FakeCivitaiOptions): Promise<FakeCivitai> {
  const maxQuantity = options?.maxQuantity ?? 4;
  const generations: CivitaiGeneration[] = [];
  const submitCalls: RecordedCall[] = [];
  const pollCalls: RecordedCall[] = [];
  const jobsById = new Map<string, FakeJob>();
  const blobs = new Map<string, FakeJob>();

  const tokenOf = (jobIds: string[]) => Buffer.from(JSON.stringify({ Jobs: jobIds })).toString('base64url');
  const jobsOfToken = (token: string | undefined): FakeJob[] | undefined => {
    if (!token) return undefined;
    try {
      const ids = (JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { Jobs?: unknown }).Jobs;
      if (!Array.isArray(ids)) return undefined;
      const jobs = ids.map((id) => jobsById.get(String(id)));
      return jobs.every((job): job is FakeJob => job !== undefined) && jobs.length > 0 ? jobs : undefined;
    } catch {
      return undefined;
    }
  };

  const core = await startCore(options, async (core, req, res) => {
    const call = core.record(req);
    const origin = core.origin;
    const statusOf = (job: FakeJob) => {
      const now = Date.now();
      // A failing job fails when it would have finished: the worker takes it first.
      const failed = job.failed !== undefined && now >= job.doneAt;
      const done = !job.failed && !job.deleted && now >= job.doneAt;
      const type = job.deleted ? 'Deleted' : failed ? 'Failed' : done ? 'Succeeded' : now >= job.doneAt - core.latencyMs / 2 ? 'Claimed' : 'Initialized';
      return {
        jobId: job.jobId,
        cost: 1.2,
        result: {
          blobKey: job.blobKey,
          available: done,
          ...(done ? { blobUrl: `${origin}/blobs/${job.blobKey}`, blobUrlExpirationDate: new Date(now + 3_600_000).toISOString(), nsfw: job.nsfw } : {}),
        },
        scheduled: !done && !failed && !job.deleted,
        lastEvent: { jobId: job.jobId, type, dateTime: new Date(now).toISOString(), ...(failed ? { context: { message: job.failed } } : {}) },
      };
    };

    // The blob bucket: no bearer token (its URLs are presigned).
    const blob = /^\/blobs\/([A-F0-9]{64})$/.exec(req.path);
    if (req.method === 'GET' && blob) {
      const fault = core.faults.take('file', isHttpFault);
      if (fault) return core.sendHttpFault(res, call, fault, civitaiErrors);
      const job = blobs.get(blob[1]!);
      if (!job || job.failed || Date.now() < job.doneAt) return sendJson(res, 404, problem(404, 'Not Found'));
      const bytes = job.nsfw ? await solidImage(job.width, job.height, 'png', [0, 0, 0]) : await fakeImage(job.width, job.height, 'png', `${job.prompt}#${job.seed}`);
      return sendBytes(res, 200, bytes, 'image/png');
    }

    if (req.path !== '/v1/consumer/jobs' || !['GET', 'POST', 'DELETE'].includes(req.method)) {
      return sendJson(res, 404, problem(404, 'Not Found', { detail: `${req.method} ${req.path}` }));
    }
    const target = req.method === 'POST' ? 'submit' : req.method === 'GET' ? 'status' : 'cancel';
    if (target === 'submit') submitCalls.push(call);
    if (target === 'status') pollCalls.push(call);
    const httpFault = core.faults.take(target, isHttpFault);
    if (httpFault) return core.sendHttpFault(res, call, httpFault, civitaiErrors);
    if (core.options.key !== undefined && req.headers.authorization !== `Bearer ${core.options.key}`) {
      return sendJson(res, 401, civitaiErrors.unauthorized());
    }

    if (target !== 'submit') {
      const jobs = jobsOfToken(req.query.token);
      if (!jobs) return sendJson(res, 404, problem(404, 'Not Found', { detail: 'No jobs were found for this token.' }));
      if (target === 'cancel') for (const job of jobs) if (Date.now() < job.doneAt) job.deleted = true;
      return sendJson(res, 200, { token: req.query.token, jobs: jobs.map(statusOf) });
    }

    if (req.query.wait !== undefined && req.query.wait !== 'false') return sendJson(res, 400, problem(400, 'This fake answers wait=false only.'));
    const body = plainObject(req.body);
    const errors = validate(body, maxQuantity);
    if (Object.keys(errors).length > 0) return sendJson(res, 400, problem(400, 'One or more validation errors occurred.', { errors }));
    const params = plainObject(body!.params)!;
    const quantity = (body!.quantity as number | undefined) ?? 1;
    const fault = core.faults.take('submit', isGenerationFault);
    if (fault) call.fault = fault.kind;
    const doneAt = Date.now() + core.latencyMs;
    const prompt = params.prompt as string;
    const seed = (params.seed as number | undefined) ?? -1;
    const jobs: FakeJob[] = Array.from({ length: quantity }, (_, i) => {
      const failedHere = fault?.kind === 'failed' || (fault?.kind === 'partial' && i >= fault.images);
      return {
        jobId: randomUUID(),
        blobKey: randomUUID().replaceAll('-', '').toUpperCase().padEnd(64, '0'),
        doneAt,
        width: params.width as number,
        height: params.height as number,
        prompt: `${prompt}#${i}`,
        seed,
        nsfw: prompt.includes(core.options.nsfwWord),
        ...(failedHere ? { failed: fault?.kind === 'failed' ? (fault.message ?? 'The worker failed to generate the image.') : 'The worker failed to generate the image.' } : {}),
      };
    });
    for (const job of jobs) {
      jobsById.set(job.jobId, job);
      blobs.set(job.blobKey, job);
    }
    const token = tokenOf(jobs.map((j) => j.jobId));
    generations.push({ token, body: body!, jobIds: jobs.map((j) => j.jobId) });
    return sendJson(res, 200, { token, jobs: jobs.map(statusOf) });
  });

  return {
    url: core.origin,
    calls: core.calls,
    generations,
    submits: () => [...submitCalls],
    polls: () => [...pollCalls],
    inject: (rule) => core.faults.inject(rule),
    clearFaults: () => core.faults.clear(),
    setLatency: (ms) => {
      core.latencyMs = ms;
    },
    close: () => core.close(),
  };
}
