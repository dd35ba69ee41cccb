/**
 * The job's manifest.json: what was asked, by whom, what each call did, and each image with its
 * review. Written after every change, so the folder alone tells the whole story.
 */
import type { Job, ReviewStatus } from './types.js';
import { costLabel, draftCosts } from './views.js';

export const MANIFEST_VERSION = 1;

export function buildManifest(job: Job) {
  const counts: Record<ReviewStatus, number> = { pending: 0, approved: 0, rejected: 0 };
  for (const image of job.images) counts[image.review.status] += 1;
  // A retried batch's missing images were asked for again (by the retry batch, counted itself); a
  // reroll's slot keeps the rejected image when it fails.
  const failedImages = job.batches.reduce(
    (sum, b) => sum + ((b.state === 'failed' || b.state === 'canceled') && !b.retried && !b.reroll && !b.upscale ? b.size - b.delivered : 0),
    0,
  );
  // A prompt list: every line of it with its files (identical lines were one entry, called once: each
  // line maps to the first images of that entry, as many as it asked for).
  const prompts = job.request.prompts?.flatMap((entry, prompt) => {
    const files = job.images.filter((image) => image.prompt === prompt).map((image) => image.file);
    return entry.lines.map((line) => ({ line: line.line, prompt: entry.prompt, count: line.count, entry: prompt, files: files.slice(0, line.count) }));
  });
  const costs = job.request.draft ? draftCosts(job) : undefined;
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
      draft: job.request.draft ?? false,
      // LoRA styles and their scales, in the order applied
      loras: (job.request.loras ?? []).map((lora) => ({ id: lora.id, scale: lora.scale })),
    },
    // one entry per line of a prompt list, in line order; null for a job of one prompt
    prompts: prompts ? prompts.sort((a, b) => a.line - b.line) : null,
    requester: {
      platform: job.requester.platform,
      tenant: job.requester.tenant,
      userId: job.requester.userId,
      userName: job.requester.userName ?? null,
      channelId: job.requester.channelId ?? null,
    },
    estimatedCostUsd: job.estimatedCostUsd ?? null,
    estimatedCost: costLabel(job),
    // a draft job: drafts and upscales against generating every image at full size
    draftCosts: costs
      ? {
          draftsUsd: costs.draftsUsd ?? null,
          upscalesUsd: costs.unpriced > 0 ? null : costs.upscalesUsd,
          totalUsd: costs.totalUsd ?? null,
          fullSizeUsd: costs.fullSizeUsd ?? null,
          savedUsd: costs.savedUsd ?? null,
          summary: costs.text,
        }
      : null,
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
      // "Upscale approved": one upscaler call for an approved image
      upscale: b.upscale ?? null,
      prompt: b.prompt ?? null,
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
      // the prompt-list entry it was made for (see `prompts`), null for a job of one prompt
      prompt: image.prompt ?? null,
      // the prompt the provider actually drew when it rewrote ours (OpenAI's revised_prompt)
      revisedPrompt: image.revisedPrompt ?? null,
      // its upscaled version, made by "Upscale approved", and what that cost
      final: image.final
        ? {
            file: image.final.file,
            width: image.final.width,
            height: image.final.height,
            contentType: image.final.contentType,
            model: image.final.model,
            estimatedCostUsd: image.final.costUsd ?? null,
            upscaledBy: image.final.by,
            upscaledAt: image.final.at,
          }
        : null,
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
