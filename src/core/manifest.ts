/**
 * The job's manifest.json: what was asked, by whom, what each call did, and each image with its
 * review. Written after every change, so the folder alone tells the whole story.
 */
import type { Job, ReviewStatus } from './types.js';
import { costLabel } from './views.js';

export const MANIFEST_VERSION = 1;

export function buildManifest(job: Job) {
  const counts: Record<ReviewStatus, number> = { pending: 0, approved: 0, rejected: 0 };
  for (const image of job.images) counts[image.review.status] += 1;
  // A retried batch's missing images were asked for again (by the retry batch, counted itself); a
  // reroll's slot keeps the rejected image when it fails.
  const failedImages = job.batches.reduce(
    (sum, b) => sum + ((b.state === 'failed' || b.state === 'canceled') && !b.retried && !b.reroll ? b.size - b.delivered : 0),
    0,
  );
  return {
    manifestVersion: MANIFEST_VERSION,
    jobId: job.id,
    state: job.state,
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
    finishedAt: job.finishedAt ?? null,
    prompt: job.request.prompt,
    negativePrompt: job.request.negative ?? null,
    provider: job.request.provider,
    model: job.request.model,
    parameters: {
      count: job.request.count,
      aspectRatio: job.request.aspectRatio,
      seed: job.request.seed,
      format: job.request.format ?? 'png',
      quality: job.request.quality ?? null,
    },
    requester: {
      platform: job.requester.platform,
      tenant: job.requester.tenant,
      userId: job.requester.userId,
      userName: job.requester.userName ?? null,
      channelId: job.requester.channelId ?? null,
    },
    estimatedCostUsd: job.estimatedCostUsd ?? null,
    estimatedCost: costLabel(job),
    summary: {
      requested: job.request.count,
      delivered: job.images.length,
      failed: failedImages,
      // served from earlier jobs' files, without a provider call
      cached: job.images.filter((image) => image.cached).length,
      ...counts,
      error: job.error ?? null,
    },
    batches: job.batches.map((b) => ({
      index: b.index,
      size: b.size,
      seed: b.seed,
      state: b.state,
      providerRequestId: b.requestIds.at(-1) ?? null,
      providerRequestIds: b.requestIds,
      attempts: b.attempts,
      rateLimited: b.throttled ?? 0,
      delivered: b.delivered,
      nsfw: b.nsfw ?? false,
      cached: b.cached ?? false,
      // "Retry failed": this batch's missing images were asked for again / this batch asks for them
      retried: b.retried ?? null,
      retryOf: b.retry ? { batch: b.retry.of, by: b.retry.by, at: b.retry.at } : null,
      // "Reroll": a new call for a rejected image
      reroll: b.reroll ?? null,
      error: b.error ?? null,
      submittedAt: b.submittedAt ?? null,
      finishedAt: b.finishedAt ?? null,
    })),
    images: job.images.map((image) => ({
      index: image.index,
      file: image.file,
      width: image.width,
      height: image.height,
      contentType: image.contentType,
      seed: image.seed ?? null,
      batch: image.batchIndex,
      providerRequestId: image.requestId ?? null,
      outputIndex: image.output ?? null,
      nsfw: image.nsfw,
      cached: image.cached !== undefined,
      // the job and file it was copied from, when cached
      cachedFrom: image.cached ? { jobId: image.cached.jobId, file: image.cached.file } : null,
      // made by "Retry failed" (who asked, when)
      retried: image.retried ?? null,
      // the rejected images this slot held before, oldest first: their files are kept where listed
      rerolledFrom: (image.rerolledFrom ?? []).map((old) => ({
        file: old.file,
        seed: old.seed ?? null,
        review: { status: old.review.status, reviewedBy: old.review.by ?? null, reviewedAt: old.review.at ?? null },
        rerolledBy: old.by,
        rerolledAt: old.at,
      })),
      review: {
        status: image.review.status,
        reviewedBy: image.review.by ?? null,
        reviewedAt: image.review.at ?? null,
      },
    })),
  };
}

export type Manifest = ReturnType<typeof buildManifest>;
