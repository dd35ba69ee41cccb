/**
 * A job's transitions, pure like the batch machine they build on: a batch step applied to its job,
 * a cancel, the end of a job. Each takes the job as it stands and returns the next record, never
 * changing the one it was given: the engine hands its records out, so they must not move under a
 * reader's feet.
 */
import { plural } from './text.js';
import { transition, type BatchEvent, type Decision, type StepContext } from './batch-state.js';
import { FINAL_BATCH } from './progress.js';
import type { Job } from './types.js';

export interface Advance {
  /** the job's next record, or undefined when the event changed nothing */
  job?: Job;
  decision: Decision;
}

/** Applies one event of batch `batchIndex` to its job. */
export function advance(job: Readonly<Job>, batchIndex: number, event: BatchEvent, context: Omit<StepContext, 'canceled' | 'images'>): Advance {
  const batch = job.batches[batchIndex];
  if (!batch) throw new RangeError(`job ${job.id} has no batch ${batchIndex}`);
  const images = job.images.filter((image) => image.batchIndex === batchIndex);
  const step = transition(batch, event, { ...context, canceled: job.canceledBy !== undefined, images });
  const added = step.images ?? (step.image ? [step.image] : []);
  if (step.batch === batch && added.length === 0) return { decision: step.decision };
  const batches = job.batches.map((b) => (b === batch ? step.batch : b));
  let next: Job = { ...job, batches };
  if (added.length > 0) {
    const numbers = new Set(added.map((image) => image.index));
    next.images = [...job.images.filter((image) => !numbers.has(image.index)), ...added].sort((a, b) => a.index - b.index);
  }
  // The job runs from the moment its first batch does.
  if (job.state === 'queued' && (step.decision.kind === 'submit' || step.decision.kind === 'poll')) next = { ...next, state: 'running' };
  return { job: next, decision: step.decision };
}

/** Marks a job cancelled: its waiting batches end here; running ones end when their call is stopped. */
export function cancelJob(job: Readonly<Job>, by: string, now: number): Job {
  const at = new Date(now).toISOString();
  return {
    ...job,
    canceledBy: by,
    batches: job.batches.map((batch) => (batch.state === 'queued' ? { ...batch, state: 'canceled', finishedAt: at } : batch)),
  };
}

/** Whether nothing is left to run: every batch ended, or the job was cancelled. */
export function readyToFinish(job: Readonly<Job>): boolean {
  return job.canceledBy !== undefined || job.batches.every((batch) => FINAL_BATCH.has(batch.state));
}

/** The job's end: cancelled, failed (no image at all) or completed (maybe with some images failed). */
export function finishJob(job: Readonly<Job>, now: number): Job {
  const at = new Date(now).toISOString();
  const batches = job.canceledBy
    ? job.batches.map((batch) => (FINAL_BATCH.has(batch.state) ? batch : { ...batch, state: 'canceled' as const }))
    : job.batches;
  const failed = batches.filter((b) => b.state === 'failed');
  const missing = failed.reduce((sum, b) => sum + b.size - b.delivered, 0);
  const reason = failed[0]?.error ?? 'unknown error';
  const { error: _error, ...rest } = job;
  if (job.canceledBy) {
    return { ...rest, batches, finishedAt: at, state: 'canceled', error: `canceled by ${job.canceledBy} with ${plural(job.images.length, 'image')} delivered` };
  }
  if (job.images.length === 0) {
    return { ...rest, batches, finishedAt: at, state: 'failed', error: `all ${plural(job.request.count, 'image')} failed: ${reason}` };
  }
  return {
    ...rest,
    batches,
    finishedAt: at,
    state: 'completed',
    ...(missing > 0 ? { error: `completed with ${plural(missing, 'image')} failed: ${reason}` } : {}),
  };
}

/** Ends a job that can no longer run (its provider is gone), with the reason. */
export function failJob(job: Readonly<Job>, reason: string, now: number): Job {
  return { ...job, state: 'failed', error: reason, finishedAt: new Date(now).toISOString() };
}
