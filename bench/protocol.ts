/**
 * What the parent (which runs the fake provider) asks of the child (which runs the real core), and
 * what the child reports back. Times are real milliseconds since `t0`, the moment of the first request.
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
  pollIntervalMs: number;
  retryBaseMs: number;
  /** extra environment for loadConfig (tenant limits …) */
  env: Record<string, string>;
  requests: BenchRequest[];
  /** put a LatestThrottle on this request's job, as a chat adapter would */
  watch?: { request: number; throttleMs: number; editMs: number };
  /** once these requests' jobs have finished, cancel every other job (ends a run early) */
  stopWhenFinished?: number[];
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
  store: { saves: number; saveMs: number; manifests: number; manifestMs: number; lastJobBytes: number };
  /** progress edits of the watched job: when each was sent and how many batches it showed done */
  edits?: { sends: { at: number; batchesDone: number }[]; batchDoneAt: number[] };
}

export type ChildMessage = { kind: 'result'; result: CoreResult } | { kind: 'error'; message: string };
