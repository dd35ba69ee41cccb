/**
 * A job's progress as adapters show it: counts, the batch that moved last, queue position, ETA.
 * Pure: the engine passes in what only it knows (where the job waits, how long calls take).
 */
import type { LaneOptions } from './scheduler.js';
import type { Batch, Job, ProgressEvent } from './types.js';

export const FINAL_BATCH: ReadonlySet<Batch['state']> = new Set(['done', 'failed', 'canceled']);

export function isJobFinished(job: Pick<Job, 'state'>): boolean {
  return job.state === 'completed' || job.state === 'failed' || job.state === 'canceled';
}

export interface ProgressContext {
  lane: LaneOptions;
  /** 1 = the job's next call starts next; undefined when nothing of it waits */
  queuePosition?: number;
  /** how long one call takes these days */
  callMs: number;
}

export function computeProgress(job: Readonly<Job>, context: ProgressContext): ProgressEvent {
  const { lane, callMs } = context;
  const done = job.batches.filter((b) => b.state === 'done').length;
  // a failed batch whose images a retry (or a later reroll) asked for again no longer counts
  const failedBatches = job.batches.filter((b) => b.state === 'failed' && b.retried === undefined);
  // a failed upscale leaves its approved draft in place: no image is missing
  const imagesFailed = failedBatches.filter((b) => !b.upscale).reduce((sum, b) => sum + b.size - b.delivered, 0);
  const moving = job.batches.find((b) => b.state === 'submitted');
  const last = moving ?? [...job.batches].reverse().find((b) => b.state !== 'queued');
  const queuePosition = job.state === 'queued' ? context.queuePosition : undefined;
  const remaining = job.batches.filter((b) => !FINAL_BATCH.has(b.state)).length;
  let etaMs: number | undefined;
  if (remaining > 0 && !isJobFinished(job)) {
    const parallel = Math.max(1, Math.min(lane.concurrency, remaining));
    let perCall = callMs / parallel;
    if (lane.rateLimit) perCall = Math.max(perCall, lane.rateLimit.intervalMs / lane.rateLimit.limit);
    etaMs = Math.round(remaining * perCall + (queuePosition ? (queuePosition * callMs) / lane.concurrency : 0));
  }
  return {
    jobId: job.id,
    state: job.state,
    ...(queuePosition !== undefined ? { queuePosition } : {}),
    batchesTotal: job.batches.length,
    batchesDone: done,
    batchesFailed: failedBatches.length,
    ...(last ? { currentBatch: { index: last.index + 1, state: last.state, attempt: last.attempts } } : {}),
    imagesDone: job.images.length,
    imagesTotal: job.request.count,
    imagesFailed,
    ...(etaMs !== undefined ? { etaMs } : {}),
    failures: failedBatches.map((b) => `${b.upscale ? `Upscale of image ${b.upscale.image}` : `Batch ${b.index + 1}`}: ${b.error ?? 'failed'}`),
  };
}
