/**
 * The domain's shared vocabulary. Nothing here knows about a chat platform or a provider SDK.
 */

export const PROVIDER_NAMES = ['fal', 'replicate', 'local', 'stability', 'openai', 'civitai'] as const;
export type ProviderName = (typeof PROVIDER_NAMES)[number];

const PATH_MODEL_ID = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*){1,3}$/i;
const PLAIN_MODEL_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/i;
/** How each provider names its models: `owner/name` paths (fal, Replicate), plain names (Stability, OpenAI), AIRs (CivitAI). */
export const MODEL_IDS: Readonly<Record<ProviderName, RegExp>> = {
  fal: PATH_MODEL_ID,
  replicate: PATH_MODEL_ID,
  local: PLAIN_MODEL_ID,
  stability: PLAIN_MODEL_ID,
  openai: PLAIN_MODEL_ID,
  civitai: /^urn:air:[a-z0-9]+:[a-z]+:[a-z]+:\d+@\d+$/i,
};

export const ASPECT_RATIOS = ['1:1', '16:9', '9:16', '4:3', '3:4', '3:2', '2:3', '21:9'] as const;
export type AspectRatio = (typeof ASPECT_RATIOS)[number];

/** File formats an image can be delivered in; a request without one gets PNG. */
export const OUTPUT_FORMATS = ['png', 'webp', 'jpeg'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** A validated request for a batch of images: what the user asked for, nothing about who. */
export interface ImagineRequest {
  prompt: string;
  count: number;
  provider: ProviderName;
  model: string;
  aspectRatio: AspectRatio;
  /** The job's seed; when the user gives none, one is drawn so the job stays reproducible. */
  seed?: number;
  negative?: string;
  /** the images' file format @default 'png' (absent in records written before formats existed) */
  format?: OutputFormat;
  /** 1–100, for jpeg and webp only @default the provider's own (sharp's 80 where we convert) */
  quality?: number;
  /**
   * A prompt list: its entries' images in turn, each entry planned into calls of its own. `prompt` is
   * then the first entry's and `count` their sum. Absent: one prompt, `prompt` × `count`.
   */
  prompts?: PromptEntry[];
  /** small drafts at the provider's draft size; "Upscale approved" then makes the finals */
  draft?: boolean;
  /** LoRA styles applied to the model, in order (`--lora ID[:scale]`); refused where the model takes none */
  loras?: LoraRef[];
}

/** A LoRA: a URL of its weights, a Hugging Face `owner/repo`, or a CivitAI AIR, and its strength. */
export interface LoraRef {
  id: string;
  /** @default 1 */
  scale: number;
}

/**
 * One prompt of a prompt list. Identical lines (after cleaning) are one entry, called once: its
 * count is the largest they asked for, and each line maps to the first `count` of its images.
 */
export interface PromptEntry {
  prompt: string;
  count: number;
  /** the list's lines (1-based) this entry stands for, each with the count it asked for */
  lines: { line: number; count: number }[];
}

/** Who asked, and where the answer goes. `tenant` is the unit of fairness and quotas. */
export interface Requester {
  /** guild id, Slack team id, `dm:<user>` or `cli` */
  tenant: string;
  userId: string;
  userName?: string;
  platform: 'discord' | 'slack' | 'playground' | 'cli';
  channelId?: string;
}

export type BatchState = 'queued' | 'submitted' | 'done' | 'failed' | 'canceled';

export interface Batch {
  index: number;
  /** 0-based position of the batch's first image in the job: its images are numbered start+1… */
  start: number;
  /** images this batch must deliver */
  size: number;
  /** the seed sent to the provider for this batch (derived from the job seed) */
  seed: number;
  state: BatchState;
  /** the provider's id of the call in flight; persisted before polling so a restart polls instead of paying twice */
  requestId?: string;
  /** every provider request id this batch has used, oldest first */
  requestIds: string[];
  /** provider calls made for this batch (submits), including retries */
  attempts: number;
  /** failed tries (submit, poll, result or download); the batch fails for good at the attempt limit */
  failures: number;
  /** 429s met (counted apart from failures, with a larger allowance) */
  throttled?: number;
  /** images already delivered by this batch (a partial output leaves the rest to a top-up call) */
  delivered: number;
  error?: string;
  /** set when the provider flagged any image of the batch */
  nsfw?: boolean;
  submittedAt?: string;
  finishedAt?: string;
  /** while waiting to retry: when the batch may start again (a restart keeps the wait); `error` says why */
  retryAt?: string;
  /** while its call's outputs are being fetched: how many the call returned, and those refused so far */
  download?: { outputs: number; refused: number[]; reason?: string };
  /** its images were all served from earlier jobs' files, without a provider call */
  cached?: boolean;
  /** a failed batch whose missing images a later "Retry failed" asked for again (it no longer counts as failed) */
  retried?: { by: string; at: string };
  /** added by "Retry failed": the planned batch whose missing images it makes again, who asked and when */
  retry?: { of: number; by: string; at: string };
  /** added by "Reroll": a new call for rejected image `image`, whose result takes its slot */
  reroll?: { image: number; by: string; at: string };
  /** the prompt-list entry (0-based, `request.prompts`) this batch draws; absent: the job's one prompt */
  prompt?: number;
  /** added by "Upscale approved": one call of upscaler `model` on approved image `image`, at an estimated cost */
  upscale?: { image: number; model: string; costUsd?: number; by: string; at: string };
}

export type ReviewStatus = 'pending' | 'approved' | 'rejected';

export interface ImageRecord {
  /** 1-based position in the job, stable: the gallery and buttons refer to it */
  index: number;
  batchIndex: number;
  /** path relative to the job folder, e.g. `pending-review/003.png` */
  file: string;
  width: number;
  height: number;
  /** the seed of the provider call that produced it, where known */
  seed?: number;
  /** the provider call that produced it, and its position in that call's output (0-based) */
  requestId?: string;
  output?: number;
  nsfw: boolean;
  contentType: string;
  review: { status: ReviewStatus; by?: string; at?: string };
  /** served from an image already delivered (same provider, model, parameters, prompt and seed): no call was paid for it */
  cached?: { jobId: string; file: string };
  /** made by "Retry failed" after the job first ended without it */
  retried?: { by: string; at: string };
  /** the rejected images this slot held before each reroll, oldest first (their files are kept) */
  rerolledFrom?: RerolledImage[];
  /** the prompt-list entry (0-based) it was made for; absent: the job's one prompt */
  prompt?: number;
  /** the prompt the provider actually drew, when it rewrote ours (OpenAI's revised_prompt) */
  revisedPrompt?: string;
  /** its upscaled version (`final/003.png`), made by "Upscale approved" */
  final?: { file: string; width: number; height: number; contentType: string; model: string; costUsd?: number; by: string; at: string };
}

/** An image a reroll replaced: where its file is kept, and who asked for the new one. */
export interface RerolledImage {
  file: string;
  seed?: number;
  review: { status: ReviewStatus; by?: string; at?: string };
  by: string;
  at: string;
}

export type JobState = 'queued' | 'running' | 'completed' | 'failed' | 'canceled';

export interface Job {
  id: string;
  createdAt: string;
  updatedAt: string;
  finishedAt?: string;
  requester: Requester;
  request: ImagineRequest & { seed: number };
  /** the requester gave the seed (a drawn one is never looked up in the image cache) */
  seedGiven?: boolean;
  state: JobState;
  batches: Batch[];
  images: ImageRecord[];
  /** estimated cost in USD from the price table in config; undefined when the model has no known price */
  estimatedCostUsd?: number;
  /** a draft job: what its images would have cost at full size (the saving "Upscale approved" shows is against it) */
  fullSizeCostUsd?: number;
  /** absolute output folder the job's files go to (so a resume finishes it where it started) */
  outputDir?: string;
  canceledBy?: string;
  /** a one-line reason when the job failed or some images did */
  error?: string;
  /** when "Retry failed" or "Reroll" last ran the finished job again (its images were reserved that day) */
  reopenedAt?: string;
  /** free slot for adapters: message ids they must find again after a restart */
  chat?: Record<string, unknown>;
}

/** What a job's progress looks like right now; adapters render it, never compute it. */
export interface ProgressEvent {
  jobId: string;
  state: JobState;
  /** position of the job's next batch among all queued batches for its provider (1 = next), while queued */
  queuePosition?: number;
  batchesTotal: number;
  batchesDone: number;
  batchesFailed: number;
  /** the batch most recently changed: "Batch i/n" */
  currentBatch?: { index: number; state: BatchState; attempt: number };
  imagesDone: number;
  imagesTotal: number;
  imagesFailed: number;
  /** estimated milliseconds to completion, when there is enough to go on */
  etaMs?: number;
  failures: string[];
}
