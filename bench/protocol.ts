/**
 * What the parent (which runs the fake provider) asks of the child (which runs the real core), and
 * what the child reports back. Times are real milliseconds since `t0`, the moment of the first request,
 * except where a field says epoch: those are compared with the fake's own records in the parent.
 */
import type { Rate } from '../src/core/rate.js';

export interface BenchRequest {
  /** when the request arrives, after t0 */
  atMs: number;
  tenant: string;
  /** unique per watched job: the progress watcher finds its job by requester */
  user: string;
  /** the /imagine text, parsed by the real command (parseImagineText) */
  text: string;
}

export interface CoreSpec {
  falUrl: string;
  falKey: string;
  concurrency: number;
  /** the lane's limit as the bot is told it; undefined = the bot only learns from 429s */
  rateLimit?: Rate;
  /** undefined = the engine's own (a tenth of the provider's typical call, 500 ms for fal) */
  pollIntervalMs?: number;
  /** undefined = the engine's own */
  retryBaseMs?: number;
  /** false: the fal provider polls for a call's end instead of following its status stream @default true */
  statusStream?: boolean;
  /** extra environment for loadConfig (tenant limits …) */
  env: Record<string, string>;
  requests: BenchRequest[];
  /** put a LatestThrottle on this request's job, as a chat adapter would */
  watch?: { request: number; throttleMs: number; editMs: number };
  /** once these requests' jobs have finished, cancel every other job (ends a run early) */
  stopWhenFinished?: number[];
  /** stop once every request is answered (accepted or refused): the run measures acceptance only */
  acceptOnly?: boolean;
  /** accept and finish one 1-image job before t0, as on a bot that has been running (bench/child.ts warmUp) */
  warmUp?: boolean;
}

export interface JobOutcome {
  request: number;
  jobId?: string;
  /** request arrival → engine.submit resolved (accepted, queued, answerable) */
  acceptMs?: number;
  acceptedAt?: number;
  finishedAt?: number;
  state?: string;
  images: number;
  /** image files found on disk in the job folder */
  files: number;
  refused?: string;
}

export interface CoreResult {
  t0: number;
  jobs: JobOutcome[];
  /** CPU of the child from t0 until every job finished, in ms */
  cpuUserMs: number;
  cpuSystemMs: number;
  /** resident set before the first request and the peak over the child's life, in MB */
  baselineRssMb: number;
  maxRssMb: number;
  /** the store's share of the work: job saves and manifest writes, with the real time they took */
  store: { saves: number; saveMs: number; saveMaxMs: number; manifests: number; manifestMs: number; lastJobBytes: number };
  /** progress edits of the watched job: when each was sent and how many batches it showed done */
  edits?: { sends: { at: number; batchesDone: number }[]; batchDoneAt: number[] };
  /** every call that delivered all of its batch's images alone (no retry, no top-up), of finished jobs */
  calls: CallFinish[];
  /** how late the event loop ran, from t0 until every job finished (or every request was answered) */
  loopDelay: { p99Ms: number; maxMs: number };
}

/**
 * One provider call whose images all arrived, as the core saw it. Epoch times from
 * `performance.timeOrigin + performance.now()` (sub-millisecond, the same wall clock as the parent's
 * `Date.now()`), so the parent can set them against the fake's record of when the call finished.
 */
export interface CallFinish {
  requestId: string;
  images: number;
  /** epoch ms: the core learned the call had ended (its status stream's last event, or a status poll) */
  seenAt?: number;
  /** epoch ms: the call's result (its image URLs) arrived */
  fetchedAt?: number;
  /** epoch ms: the last of the call's image files written (writeImage resolved) */
  onDiskAt: number;
  /** epoch ms: the first progress event showing the batch done (its images recorded in the job) */
  recordedAt?: number;
}

export type ChildMessage = { kind: 'result'; result: CoreResult } | { kind: 'error'; message: string };

/**
 * The environment every bench core runs with: the fake fal, and nothing but the provider's own limits
 * in the way — no cap across tenants, no tenant plan (its calls in flight, its largest job), no
 * health server, no playground, no logs.
 */
export function benchEnv(fal: { falKey: string; falUrl: string; concurrency: number }): Record<string, string> {
  return {
    FAL_KEY: fal.falKey,
    FAL_BASE_URL: fal.falUrl,
    FAL_CONCURRENCY: String(fal.concurrency),
    MAX_IMAGES_PER_JOB: '1000',
    TENANT_RATE_LIMIT: '',
    GLOBAL_DAILY_IMAGES: '0',
    DEFAULT_PLAN: 'business',
    PLAN_BUSINESS: '1000/1000',
    HEALTH_PORT: 'off',
    PLAYGROUND: 'off',
    LOG_LEVEL: 'silent',
  };
}
