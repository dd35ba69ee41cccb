/**
 * CivitAI's generation (orchestration) API, a job API like Replicate's: `POST /v1/consumer/jobs` sends
 * one textToImage job template (`quantity` images) and answers at once with a token that names every
 * job it made; the token is the request id the caller saves, so a restart polls
 * `GET /v1/consumer/jobs?token=…` instead of paying again. Finished jobs carry a blob URL per image,
 * downloaded under the download policy. Models and LoRAs are named by AIR
 * (`urn:air:<ecosystem>:<type>:civitai:<model id>@<version id>`). Facts and sources: docs/providers/civitai.md.
 */
import { ProviderError, type BatchCall, type CallStatus, type OutputImage, type Provider } from '../core/provider.js';
import { oneLine, textOf } from '../core/text.js';
import type { LoraRef } from '../core/types.js';
import type { Downloader } from './download.js';
import { CIVITAI_SIZES, FAL_DRAFT_SIZES, PROVIDER_FACTS } from './facts.js';
import { strictFetch, type Fetch } from './http.js';

export const DEFAULT_CIVITAI_BASE_URL = 'https://orchestration.civitai.com';

/**
 * Where CivitAI's blob URLs point: the orchestrator's temporary blob bucket (DigitalOcean Spaces, sfo3)
 * and the orchestrator itself. Only that bucket, not all of digitaloceanspaces.com: anyone can own a
 * bucket there.
 */
export const CIVITAI_MEDIA_HOSTS: readonly string[] = ['blobs-temp.sfo3.digitaloceanspaces.com', 'orchestration.civitai.com'];

/** SD seeds are unsigned 32-bit; -1 would mean "random". */
const SEED_SPACE = 4_294_967_295;

/** Sampler settings for SDXL checkpoints (CivitAI's generator defaults). */
const SAMPLER = { scheduler: 'EulerA', steps: 25, cfgScale: 7, clipSkip: 2 } as const;

/** A LoRA-like additional network by AIR: the network type is the AIR's own. */
const NETWORK_AIR = /^urn:air:[a-z0-9]+:(lora|locon|lycoris):civitai:\d+@\d+$/i;
const NETWORK_TYPES: Record<string, string> = { lora: 'Lora', locon: 'LoCon', lycoris: 'Lycoris' };

/** A token the API returned (base64 of the job ids): anything else is not sent back in a URL. */
const TOKEN = /^[A-Za-z0-9+/=_-]{1,4096}$/;

/** Why CivitAI cannot take these LoRAs, or undefined when it can: it takes them only by AIR. */
export function civitaiLoraSupport(_model: string, loras: readonly LoraRef[]): string | undefined {
  const other = loras.find((lora) => !NETWORK_AIR.test(lora.id));
  if (!other) return undefined;
  return `CivitAI takes a LoRA only by its AIR (\`urn:air:sdxl:lora:civitai:MODEL@VERSION\`), not \`${oneLine(other.id, 120)}\`; use \`--provider fal\` for a URL or Hugging Face LoRA.`;
}

/** SDXL or SD 1.5 from the model's AIR ecosystem, as the client library infers it; else unsent. */
function baseModelOf(model: string): string | undefined {
  const ecosystem = /^urn:air:([a-z0-9]+):/i.exec(model)?.[1]?.toLowerCase();
  return ecosystem === 'sdxl' ? 'SDXL' : ecosystem === 'sd1' ? 'SD_1_5' : undefined;
}

/** The textToImage job template one call sends. */
export function civitaiJob(call: BatchCall): Record<string, unknown> {
  const { width, height } = call.draft ? FAL_DRAFT_SIZES[call.aspectRatio] : CIVITAI_SIZES[call.aspectRatio];
  const baseModel = baseModelOf(call.model);
  return {
    $type: 'textToImage',
    ...(baseModel ? { baseModel } : {}),
    model: call.model,
    params: {
      prompt: call.prompt,
      ...(call.negative ? { negativePrompt: call.negative } : {}),
      ...SAMPLER,
      width,
      height,
      seed: call.seed % SEED_SPACE,
    },
    quantity: call.count,
    ...(call.loras?.length
      ? {
          additionalNetworks: Object.fromEntries(
            call.loras.map((lora) => [lora.id, { type: NETWORK_TYPES[NETWORK_AIR.exec(lora.id)?.[1]?.toLowerCase() ?? 'lora'], strength: lora.scale }]),
          ),
        }
      : {}),
  };
}

export interface CivitaiProviderOptions {
  token: string;
  /** the orchestrator's origin @default DEFAULT_CIVITAI_BASE_URL */
  baseUrl?: string;
  fetch?: Fetch;
  /** one HTTP request's time limit @default 30000 */
  requestTimeoutMs?: number;
  /** fetches output images under the download policy (allowed hosts, byte cap) */
  download: Downloader;
}

/** One image's blob in a job's result. */
interface Blob {
  blobKey?: string;
  available?: boolean;
  blobUrl?: string;
  nsfw?: boolean;
  nsfwLevel?: string;
  seed?: number;
}

interface Job {
  jobId?: string;
  result?: Blob | Blob[] | null;
  scheduled?: boolean;
  lastEvent?: { type?: string; context?: Record<string, unknown> | null } | null;
}

/** Job events after which a job will not run again (a Rejected or ClaimExpired job is offered to another worker). */
const ENDED_BADLY = new Set(['Failed', 'Expired', 'Deleted']);
const RUNNING = new Set(['Claimed', 'Updated']);

function blobsOf(job: Job): Blob[] {
  const result = job.result;
  if (Array.isArray(result)) return result.filter((b): b is Blob => !!b && typeof b === 'object');
  return result && typeof result === 'object' ? [result] : [];
}

const ready = (job: Job): boolean => {
  const blobs = blobsOf(job);
  return blobs.length > 0 && blobs.every((b) => b.available === true && typeof b.blobUrl === 'string');
};

/** The jobs of one token as the batch machine's status: failed if any failed, done when all are. */
export function civitaiStatus(jobs: readonly Job[]): CallStatus {
  if (jobs.length === 0) return { state: 'failed', error: 'CivitAI knows no jobs for this token' };
  for (const job of jobs) {
    if (ready(job)) continue;
    const event = job.lastEvent?.type;
    if ((event && ENDED_BADLY.has(event)) || job.scheduled === false) {
      const reason = job.lastEvent?.context?.message;
      return { state: 'failed', error: `CivitAI job ${oneLine(String(job.jobId ?? '?'), 64)} ${event === undefined ? 'ended without a result' : event.toLowerCase()}${reason !== undefined ? `: ${oneLine(textOf(reason), 200)}` : ''}` };
    }
  }
  if (jobs.every(ready)) return { state: 'succeeded' };
  return jobs.some((job) => RUNNING.has(job.lastEvent?.type ?? '')) ? { state: 'running' } : { state: 'queued' };
}

/** Mature levels CivitAI's scanner gives (PG and PG13 are not). */
const MATURE = new Set(['R', 'X', 'XXX']);

function outputsOf(jobs: readonly Job[]): OutputImage[] {
  return jobs.flatMap(blobsOf).map((blob) => ({
    url: blob.blobUrl!,
    nsfw: blob.nsfw === true || (typeof blob.nsfwLevel === 'string' && MATURE.has(blob.nsfwLevel)),
    ...(typeof blob.seed === 'number' && Number.isInteger(blob.seed) && blob.seed >= 0 ? { seed: blob.seed } : {}),
  }));
}

/** An ASP.NET ProblemDetails body (`title`, `detail`, `errors: { field: [messages] }`) as one line. */
function problemText(body: unknown): string | undefined {
  if (!body || typeof body !== 'object') return typeof body === 'string' && body ? oneLine(body, 300) : undefined;
  const { title, detail, errors } = body as { title?: unknown; detail?: unknown; errors?: unknown };
  const fields =
    errors && typeof errors === 'object'
      ? Object.entries(errors as Record<string, unknown>).map(([field, messages]) => `${field}: ${Array.isArray(messages) ? messages.map(textOf).join(', ') : textOf(messages)}`)
      : [];
  const parts = [typeof detail === 'string' ? detail : typeof title === 'string' ? title : undefined, ...fields].filter(Boolean);
  return parts.length > 0 ? oneLine(parts.join('; '), 300) : undefined;
}

async function bodyOf(response: Response): Promise<unknown> {
  const text = await response.text().catch(() => '');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text.slice(0, 300);
  }
}

export class CivitaiProvider implements Provider {
  readonly name = 'civitai' as const;
  readonly maxImagesPerCall = PROVIDER_FACTS.civitai.maxPerCall;
  readonly typicalCallMs = PROVIDER_FACTS.civitai.typicalCallMs;
  private readonly fetch: Fetch;
  private readonly baseUrl: string;
  /** Outputs of tokens whose status said succeeded, for the result() that follows. */
  private readonly outputs = new Map<string, OutputImage[]>();

  constructor(private readonly options: CivitaiProviderOptions) {
    this.baseUrl = (options.baseUrl ?? DEFAULT_CIVITAI_BASE_URL).replace(/\/+$/, '');
    this.fetch = strictFetch({ provider: 'CivitAI', fetch: options.fetch, requestTimeoutMs: options.requestTimeoutMs ?? 30_000 });
  }

  loraSupport(model: string, loras: readonly LoraRef[]): string | undefined {
    return civitaiLoraSupport(model, loras);
  }

  async submit(call: BatchCall, signal?: AbortSignal): Promise<string> {
    if (call.upscale) throw new ProviderError('invalid', 'CivitAI upscaling is not supported here');
    const refusal = call.loras?.length ? civitaiLoraSupport(call.model, call.loras) : undefined;
    if (refusal) throw new ProviderError('invalid', refusal);
    const answer = (await this.request('POST', '/v1/consumer/jobs?wait=false', civitaiJob(call), signal)) as { token?: unknown };
    if (typeof answer?.token !== 'string' || !TOKEN.test(answer.token)) {
      throw new ProviderError('failed', 'CivitAI accepted the job but answered without a token to follow it by');
    }
    return answer.token;
  }

  async status(requestId: string, _model: string, signal?: AbortSignal): Promise<CallStatus> {
    const jobs = await this.jobs(requestId, signal);
    const status = civitaiStatus(jobs);
    if (status.state === 'succeeded') this.outputs.set(requestId, outputsOf(jobs));
    return status;
  }

  async result(requestId: string, _model: string, signal?: AbortSignal): Promise<OutputImage[]> {
    let outputs = this.outputs.get(requestId);
    if (!outputs) {
      const jobs = await this.jobs(requestId, signal);
      if (civitaiStatus(jobs).state !== 'succeeded') throw new ProviderError('failed', 'CivitAI has no finished images for this token');
      outputs = outputsOf(jobs);
    }
    this.outputs.delete(requestId);
    return outputs;
  }

  async cancel(requestId: string): Promise<void> {
    this.outputs.delete(requestId);
    await this.request('DELETE', `/v1/consumer/jobs?token=${encodeURIComponent(this.checked(requestId))}&force=true`);
  }

  async download(image: OutputImage, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    if (!image.url) throw new ProviderError('failed', 'CivitAI returned an output without a URL');
    return this.options.download(image.url, signal);
  }

  private async jobs(requestId: string, signal?: AbortSignal): Promise<Job[]> {
    const body = (await this.request('GET', `/v1/consumer/jobs?token=${encodeURIComponent(this.checked(requestId))}`, undefined, signal)) as { jobs?: unknown };
    return Array.isArray(body?.jobs) ? body.jobs.filter((job): job is Job => !!job && typeof job === 'object') : [];
  }

  private checked(token: string): string {
    if (!TOKEN.test(token)) throw new ProviderError('invalid', 'not a CivitAI job token');
    return token;
  }

  /** One API request: auth, 429 and 5xx become ProviderErrors in strictFetch, the rest here. */
  private async request(method: string, pathAndQuery: string, json?: unknown, signal?: AbortSignal): Promise<unknown> {
    const response = await this.fetch(`${this.baseUrl}${pathAndQuery}`, {
      method,
      headers: { authorization: `Bearer ${this.options.token}`, accept: 'application/json', ...(json !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
      ...(signal ? { signal } : {}),
    });
    const body = await bodyOf(response);
    if (!response.ok) {
      const kind = response.status === 404 ? 'not_found' : 'invalid';
      throw new ProviderError(kind, `CivitAI refused the request (HTTP ${response.status}): ${problemText(body) ?? 'no reason given'}`, { status: response.status });
    }
    return body;
  }
}
