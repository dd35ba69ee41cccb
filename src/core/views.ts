/**
 * View models: what a progress message and a gallery say, decided once for every platform. Adapters
 * turn these into Discord components, Block Kit or HTML, and escape text their own way.
 */
import { isJobFinished } from './progress.js';
import { plural, shorten } from './text.js';
import type { ImageRecord, Job, ProgressEvent, ReviewStatus } from './types.js';

export const STATUS_MARK: Record<ReviewStatus, string> = { approved: '✅', rejected: '❌', pending: '⏳' };

/** `▰▰▰▱▱▱▱▱▱▱` — plain characters every platform shows the same. */
export function progressBar(done: number, total: number, width = 20): string {
  const filled = total > 0 ? Math.round((Math.min(done, total) / total) * width) : 0;
  return '▰'.repeat(filled) + '▱'.repeat(width - filled);
}

export function formatDuration(ms: number): string {
  const seconds = Math.max(1, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(seconds % 60).padStart(2, '0')} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, '0')} min`;
}

const BATCH_STATE: Record<string, string> = {
  queued: 'waiting',
  submitted: 'generating',
  done: 'done',
  failed: 'failed',
  canceled: 'canceled',
};

export interface ProgressView {
  jobId: string;
  title: string;
  /** the prompt, shortened; adapters escape it for their markup */
  prompt: string;
  bar: string;
  percent: number;
  /** short facts, one per line, in display order */
  lines: string[];
  failures: string[];
  finished: boolean;
  /** show a Cancel button */
  cancellable: boolean;
}

/** `est. $0.12`, `free`, or `cost unknown` (a model missing from the price table is never shown as $0). */
export function costLabel(job: Pick<Job, 'estimatedCostUsd'>): string {
  if (job.estimatedCostUsd === undefined) return 'cost unknown';
  if (job.estimatedCostUsd === 0) return 'free';
  return `est. $${job.estimatedCostUsd < 0.1 ? job.estimatedCostUsd.toFixed(3) : job.estimatedCostUsd.toFixed(2)}`;
}

/** While a finished job runs again: "Retrying 4 failed images" or "Rerolling image 3". */
function rerunTitle(job: Partial<Pick<Job, 'batches' | 'reopenedAt'>>): string | undefined {
  if (job.reopenedAt === undefined) return undefined;
  const batches = (job.batches ?? []).filter((b) => (b.retry?.at ?? b.reroll?.at) === job.reopenedAt);
  const reroll = batches.find((b) => b.reroll)?.reroll;
  if (reroll) return `Rerolling image ${reroll.image}`;
  const images = batches.reduce((sum, b) => sum + b.size, 0);
  return images > 0 ? `Retrying ${plural(images, 'failed image')}` : undefined;
}

export function progressView(
  job: Pick<Job, 'id' | 'request' | 'state' | 'error' | 'estimatedCostUsd'> & Partial<Pick<Job, 'batches' | 'reopenedAt'>>,
  event: ProgressEvent,
): ProgressView {
  const { imagesDone, imagesTotal } = event;
  const finished = isJobFinished(job);
  const lines: string[] = [];
  if (event.state === 'queued' && event.queuePosition !== undefined) lines.push(`Queued · position ${event.queuePosition}`);
  if (event.currentBatch && !finished) {
    const attempt = event.currentBatch.attempt > 1 ? ` (attempt ${event.currentBatch.attempt})` : '';
    lines.push(`Batch ${event.currentBatch.index}/${event.batchesTotal} · ${BATCH_STATE[event.currentBatch.state] ?? event.currentBatch.state}${attempt}`);
  } else if (!finished) {
    lines.push(`Batch 0/${event.batchesTotal} · waiting`);
  }
  lines.push(`${imagesDone}/${imagesTotal} images${event.imagesFailed > 0 ? ` · ${event.imagesFailed} failed` : ''}`);
  if (!finished && event.etaMs !== undefined) lines.push(`ETA ${formatDuration(event.etaMs)}`);
  lines.push(`${job.request.provider} · ${job.request.model} · ${costLabel(job)}`);
  const title = finished
    ? job.state === 'completed'
      ? job.error
        ? `Done, with failures: ${imagesDone} of ${imagesTotal} images`
        : `Done: ${plural(imagesDone, 'image')}`
      : job.state === 'canceled'
        ? `Canceled: ${imagesDone} of ${imagesTotal} images`
        : `Failed: ${job.error ?? 'no image could be made'}`
    : (rerunTitle(job) ?? `Generating ${imagesTotal} image${imagesTotal === 1 ? '' : 's'}`);
  return {
    jobId: job.id,
    title,
    prompt: shorten(job.request.prompt, 200),
    bar: progressBar(imagesDone, imagesTotal),
    percent: imagesTotal > 0 ? Math.round((imagesDone / imagesTotal) * 100) : 0,
    lines,
    failures: event.failures,
    finished,
    cancellable: !finished,
  };
}

export interface GallerySummary {
  approved: number;
  rejected: number;
  pending: number;
  failed: { batch: number; images: number; reason: string }[];
  /** images a "Retry N failed" would ask for again (none for a cancelled job: it was stopped on purpose) */
  retryable: number;
  text: string;
}

export function gallerySummary(job: Pick<Job, 'images' | 'batches' | 'request'> & Partial<Pick<Job, 'state'>>): GallerySummary {
  const counts = { approved: 0, rejected: 0, pending: 0 };
  for (const image of job.images) counts[image.review.status] += 1;
  const failed = job.batches
    // A retried batch's images were asked for again; a failed reroll leaves its slot to the rejected image.
    .filter((b) => (b.state === 'failed' || (b.state === 'canceled' && b.delivered < b.size)) && !b.retried && !b.reroll)
    .map((b) => ({ batch: b.index + 1, images: b.size - b.delivered, reason: b.error ?? b.state }));
  const parts = [`${STATUS_MARK.approved} ${counts.approved} approved`, `${STATUS_MARK.rejected} ${counts.rejected} rejected`, `${STATUS_MARK.pending} ${counts.pending} pending`];
  const lost = failed.reduce((sum, f) => sum + f.images, 0);
  if (lost > 0) parts.push(`${lost} of ${job.request.count} not made`);
  const retryable = job.state === 'canceled' ? 0 : Math.max(0, job.request.count - job.images.length);
  return { ...counts, failed, retryable, text: parts.join(' · ') };
}

export interface GalleryPage {
  page: number;
  pages: number;
  images: ImageRecord[];
}

/** Splits a job's images into pages of `size` (a platform's per-message limit). */
export function galleryPage(job: Pick<Job, 'images'>, page: number, size: number): GalleryPage {
  const pages = Math.max(1, Math.ceil(job.images.length / size));
  const current = Math.min(Math.max(1, page), pages);
  return { page: current, pages, images: job.images.slice((current - 1) * size, current * size) };
}

/** The page that holds image `index` (1-based). */
export function pageOf(job: Pick<Job, 'images'>, index: number, size: number): number {
  const position = job.images.findIndex((image) => image.index === index);
  return position < 0 ? 1 : Math.floor(position / size) + 1;
}

export function jobLine(job: Pick<Job, 'id' | 'request' | 'createdAt'>, event: ProgressEvent): string {
  const where = event.queuePosition !== undefined ? `queued #${event.queuePosition}` : `${event.imagesDone}/${event.imagesTotal} images`;
  return `${job.id} · “${shorten(job.request.prompt, 60)}” · ${where}${event.etaMs !== undefined ? ` · ETA ${formatDuration(event.etaMs)}` : ''}`;
}
