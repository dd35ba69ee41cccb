/**
 * A job's transitions, pure like the batch machine they build on: a batch step applied to its job,
 * a cancel, the end of a job. Each takes the job as it stands and returns the next record, never
 * changing the one it was given: the engine hands its records out, so they must not move under a
 * reader's feet.
 */
import { plural } from './text.js';
import { transition, type BatchEvent, type Decision, type StepContext } from './batch-state.js';
import { seedAt } from './planner.js';
import { FINAL_BATCH } from './progress.js';
import type { Batch, ImageRecord, Job } from './types.js';

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
  if (added.length > 0 && step.batch.upscale) {
    // An upscale's output is the approved image's final version, not an image of its own.
    const { image: index, model, costUsd, by, at } = step.batch.upscale;
    const made = added[0]!;
    const final = { file: made.file, width: made.width, height: made.height, contentType: made.contentType, model, ...(costUsd !== undefined ? { costUsd } : {}), by, at };
    next.images = job.images.map((image) => (image.index === index ? { ...image, final } : image));
  } else if (added.length > 0) {
    const numbers = new Set(added.map((image) => image.index));
    const kept = added.map((image) => carryOver(step.batch, image, job.images.find((old) => old.index === image.index)));
    next.images = [...job.images.filter((image) => !numbers.has(image.index)), ...kept].sort((a, b) => a.index - b.index);
  }
  // The job runs from the moment its first batch does.
  if (job.state === 'queued' && (step.decision.kind === 'submit' || step.decision.kind === 'poll')) next = { ...next, state: 'running' };
  return { job: next, decision: step.decision };
}

/**
 * A new image of a retry or reroll batch, with its history: a reroll's result takes the rejected
 * image's slot and lists it (file kept) under `rerolledFrom`. An image written again by the same
 * batch (a resumed download) replaces its own record, as before.
 */
function carryOver(batch: Readonly<Batch>, image: ImageRecord, replaced: ImageRecord | undefined): ImageRecord {
  if (batch.retry) return { ...image, retried: { by: batch.retry.by, at: batch.retry.at } };
  if (!replaced) return image;
  if (!batch.reroll || replaced.batchIndex === batch.index) return { ...image, ...history(replaced) };
  const { by, at } = batch.reroll;
  const previous = { file: replaced.file, ...(replaced.seed !== undefined ? { seed: replaced.seed } : {}), review: replaced.review, by, at };
  return { ...image, rerolledFrom: [...(replaced.rerolledFrom ?? []), previous] };
}

function history(image: ImageRecord): Pick<ImageRecord, 'rerolledFrom' | 'retried'> {
  return { ...(image.rerolledFrom ? { rerolledFrom: image.rerolledFrom } : {}), ...(image.retried ? { retried: image.retried } : {}) };
}

/** Image numbers (1-based) the job asked for and does not have: its failed images. */
export function missingImages(job: Pick<Job, 'images' | 'request'>): number[] {
  const have = new Set(job.images.map((image) => image.index));
  const missing: number[] = [];
  for (let n = 1; n <= job.request.count; n += 1) if (!have.has(n)) missing.push(n);
  return missing;
}

/** A finished job reopened: queued again, its end and error cleared, its place and images to be taken again. */
function reopen(job: Readonly<Job>, at: string, batches: Batch[], images: ImageRecord[] = job.images): Job {
  const { finishedAt: _finishedAt, error: _error, ...rest } = job;
  return { ...rest, state: 'queued', batches, images, reopenedAt: at };
}

/**
 * "Retry failed": new batches for exactly the missing images, each image with the seed it would have
 * had (its planned batch's seed moved on by its place in that batch, as planner.seedAt does), numbered
 * into the same slots; the failed batches are marked retried. Consecutive images of one planned batch
 * share a call of up to `maxPerCall`. Returns the next record and how many images it asks for.
 */
export function retryFailed(job: Readonly<Job>, maxPerCall: number, by: string, now: number): { job: Job; images: number } {
  const at = new Date(now).toISOString();
  const missing = missingImages(job);
  // The planned batches (not retries or rerolls): each image's seed is fixed by its place in one of them.
  const planned = job.batches.filter((b) => b.retry === undefined && b.reroll === undefined && b.upscale === undefined);
  const added: Batch[] = [];
  for (const n of missing) {
    const position = n - 1;
    const owner = planned.find((b) => position >= b.start && position < b.start + b.size);
    if (!owner) continue;
    const last = added.at(-1);
    if (last && last.retry?.of === owner.index && last.start + last.size === position && last.size < maxPerCall) {
      last.size += 1;
      continue;
    }
    added.push({
      index: job.batches.length + added.length,
      start: position,
      size: 1,
      seed: seedAt(owner.seed, position - owner.start),
      state: 'queued',
      requestIds: [],
      attempts: 0,
      failures: 0,
      delivered: 0,
      retry: { of: owner.index, by, at },
      ...(owner.prompt !== undefined ? { prompt: owner.prompt } : {}),
    });
  }
  const batches = job.batches.map((b) =>
    (b.state === 'failed' || b.state === 'canceled') && b.retried === undefined && b.delivered < b.size && b.reroll === undefined && b.upscale === undefined
      ? { ...b, retried: { by, at } }
      : b,
  );
  return { job: reopen(job, at, [...batches, ...added]), images: added.reduce((sum, b) => sum + b.size, 0) };
}

/**
 * "Reroll": one new call, with a new seed, for rejected image `image`, whose result takes its slot.
 * `keptAs`: where the rejected file was set aside (its record points there until it is replaced).
 */
export function rerollImage(job: Readonly<Job>, image: number, seed: number, keptAs: string, by: string, now: number): Job {
  const at = new Date(now).toISOString();
  const prompt = job.images.find((img) => img.index === image)?.prompt;
  const batch: Batch = {
    index: job.batches.length,
    start: image - 1,
    size: 1,
    seed,
    state: 'queued',
    requestIds: [],
    attempts: 0,
    failures: 0,
    delivered: 0,
    reroll: { image, by, at },
    ...(prompt !== undefined ? { prompt } : {}),
  };
  const images = job.images.map((img) => (img.index === image ? { ...img, file: keptAs } : img));
  // An earlier reroll of this image that failed is superseded by this one.
  const batches = job.batches.map((b) => (b.reroll?.image === image && b.state === 'failed' && !b.retried ? { ...b, retried: { by, at } } : b));
  return reopen(job, at, [...batches, batch], images);
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
  // A batch whose images a retry asked for again is not a failure any more; what is missing is told by
  // the slots (a failed reroll leaves its slot to the rejected image).
  const failed = batches.filter((b) => b.state === 'failed' && b.retried === undefined);
  const missing = job.canceledBy ? 0 : missingImages(job).length;
  const reason = failed.find((b) => b.reroll === undefined && b.upscale === undefined)?.error ?? failed[0]?.error ?? 'unknown error';
  const lostReroll = failed.find((b) => b.reroll !== undefined);
  const lostUpscales = failed.filter((b) => b.upscale !== undefined && b.upscale.at === job.reopenedAt);
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
    ...(missing > 0
      ? { error: `completed with ${plural(missing, 'image')} failed: ${reason}` }
      : lostReroll
        ? { error: `the reroll of image ${lostReroll.reroll!.image} failed: ${lostReroll.error ?? 'unknown error'}` }
        : lostUpscales.length > 0
          ? { error: `the upscale of ${plural(lostUpscales.length, 'image')} failed: ${lostUpscales[0]!.error ?? 'unknown error'}` }
          : {}),
  };
}

/** Ends a job that can no longer run (its provider is gone), with the reason. */
export function failJob(job: Readonly<Job>, reason: string, now: number): Job {
  return { ...job, state: 'failed', error: reason, finishedAt: new Date(now).toISOString() };
}

/** Images reserved for this run that no slot holds: missing ones, and rerolls and upscales of this run that did not deliver. */
export function unmadeImages(job: Readonly<Job>): number {
  const ofThisRun = (b: Batch) => (b.reroll?.at ?? b.upscale?.at) === job.reopenedAt && b.state !== 'done';
  const rerolls = job.batches.filter((b) => (b.reroll !== undefined || b.upscale !== undefined) && ofThisRun(b)).length;
  return job.request.count - job.images.length + rerolls;
}

/** Approved images with no final version yet and no upscale on its way: what "Upscale approved" would send. */
export function upscalable(job: Pick<Job, 'images' | 'batches'>): number[] {
  const pending = new Set(job.batches.filter((b) => b.upscale && b.state !== 'failed' && b.state !== 'canceled').map((b) => b.upscale!.image));
  return job.images.filter((image) => image.review.status === 'approved' && !image.final && !pending.has(image.index)).map((image) => image.index);
}

/**
 * "Upscale approved": one upscaler call per approved image (`images`), each into `final/` beside the
 * draft; the images keep their slots, reviews and files. `costUsd`: the upscaler's price per image.
 */
export function upscaleImages(job: Readonly<Job>, images: readonly number[], model: string, costUsd: number | undefined, by: string, now: number): Job {
  const at = new Date(now).toISOString();
  const added = images.map(
    (image, i): Batch => ({
      index: job.batches.length + i,
      start: image - 1,
      size: 1,
      seed: job.images.find((img) => img.index === image)?.seed ?? job.request.seed,
      state: 'queued',
      requestIds: [],
      attempts: 0,
      failures: 0,
      delivered: 0,
      upscale: { image, model, ...(costUsd !== undefined ? { costUsd } : {}), by, at },
    }),
  );
  return reopen(job, at, [...job.batches, ...added]);
}
