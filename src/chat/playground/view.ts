/** The playground's JSON for one job: the shared view models plus the URLs its page loads. */
import type { App } from '../../app.js';
import type { DeliveryReport } from '../../core/ports.js';
import type { Job } from '../../core/types.js';
import { gallerySummary, progressView, promptHeading, shownFile } from '../../core/views.js';

export const TRANSCRIPT_KEY = 'playground:transcript';

export interface TranscriptEntry {
  text: string;
  jobId?: string;
  at: string;
}

export function jobView(job: Readonly<Job>, app: App, delivery?: DeliveryReport) {
  const progress = progressView(job, app.engine.progress(job));
  // A prompt list's gallery is grouped by prompt: each group's heading, placed before its first image number.
  const starts: number[] = [];
  for (const _entry of job.request.prompts ?? []) starts.push((starts.at(-1) ?? 1) + (starts.length > 0 ? job.request.prompts![starts.length - 1]!.count : 0));
  return {
    id: job.id,
    state: job.state,
    /** views can arrive out of order (an HTTP answer after a newer event): the page keeps the newest */
    updatedAt: job.updatedAt,
    prompt: job.request.prompt,
    count: job.request.count,
    aspectRatio: job.request.aspectRatio,
    seed: job.request.seed,
    progress,
    summary: gallerySummary(job),
    /** the review page (the same as the public server's, without a token on loopback) once there are images */
    reviewUrl: job.images.length > 0 ? `/review/${job.id}` : null,
    /** the keepers in object storage (S3_BUCKET): where, the presigned links, uploads waiting */
    delivery: delivery ?? null,
    images: job.images.map((image) => ({
      index: image.index,
      // A rerolled slot's new image may have the path an earlier one had: a new URL, so no page shows a stale copy.
      // Its upscaled version once made (`final/`), else the image itself.
      url: `/images/${job.id}/${shownFile(image)}${image.rerolledFrom ? `?v=${image.rerolledFrom.length}` : ''}`,
      upscaled: image.final !== undefined,
      group: image.prompt !== undefined ? { start: starts[image.prompt] ?? image.index, heading: promptHeading(job.request, image.prompt) ?? '' } : null,
      /** how many rejected images this slot held before (their files are kept) */
      rerolls: image.rerolledFrom?.length ?? 0,
      width: image.width,
      height: image.height,
      nsfw: image.nsfw,
      seed: image.seed ?? null,
      status: image.review.status,
      reviewedBy: image.review.by ?? null,
    })),
  };
}

export type JobView = ReturnType<typeof jobView>;
