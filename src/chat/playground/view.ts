/** The playground's JSON for one job: the shared view models plus the URLs its page loads. */
import type { App } from '../../app.js';
import type { Job } from '../../core/types.js';
import { gallerySummary, progressView } from '../../core/views.js';

export const TRANSCRIPT_KEY = 'playground:transcript';

export interface TranscriptEntry {
  text: string;
  jobId?: string;
  at: string;
}

export function jobView(job: Readonly<Job>, app: App) {
  const progress = progressView(job, app.engine.progress(job));
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
    images: job.images.map((image) => ({
      index: image.index,
      // A rerolled slot's new image may have the path an earlier one had: a new URL, so no page shows a stale copy.
      url: `/images/${job.id}/${image.file}${image.rerolledFrom ? `?v=${image.rerolledFrom.length}` : ''}`,
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
