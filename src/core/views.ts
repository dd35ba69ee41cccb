/**
 * View models: what a progress message and a gallery say, decided once for every platform. Adapters
 * turn these into Discord components, Block Kit or HTML, and escape text their own way.
 */
import { upscalable as upscalableImages } from './job-state.js';
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

function usd(value: number): string {
  return `$${value < 0.1 ? value.toFixed(3) : value.toFixed(2)}`;
}

export interface DraftCosts {
  draftsUsd?: number;
  upscalesUsd: number;
  /** upscales whose price is unknown (a model missing from the price table) */
  unpriced: number;
  totalUsd?: number;
  fullSizeUsd?: number;
  savedUsd?: number;
  /** `drafts $0.009 + 3 upscales $0.006 = $0.015 vs $0.036 at full size (58% saved)` */
  text: string;
}

/** What a draft job cost so far (drafts and upscales made or on their way), against generating it all at full size. */
export function draftCosts(job: Pick<Job, 'images' | 'batches' | 'estimatedCostUsd' | 'fullSizeCostUsd'>): DraftCosts {
  const upscales = job.batches.filter((b) => b.upscale && (b.state === 'done' || !FINAL_STATES.has(b.state)));
  const upscalesUsd = upscales.reduce((sum, b) => sum + (b.upscale!.costUsd ?? 0), 0);
  const unpriced = upscales.filter((b) => b.upscale!.costUsd === undefined).length;
  const drafts = job.estimatedCostUsd;
  const total = drafts !== undefined && unpriced === 0 ? drafts + upscalesUsd : undefined;
  const full = job.fullSizeCostUsd;
  const saved = total !== undefined && full !== undefined ? full - total : undefined;
  const parts = [`drafts ${drafts !== undefined ? usd(drafts) : 'cost unknown'}`, `${plural(upscales.length, 'upscale')} ${unpriced ? 'cost unknown' : usd(upscalesUsd)}`];
  let text = parts.join(' + ');
  if (total !== undefined) text += ` = ${usd(total)}`;
  if (full !== undefined && saved !== undefined) {
    text += ` vs ${usd(full)} at full size` + (full > 0 ? ` (${Math.abs(Math.round((saved / full) * 100))}% ${saved >= 0 ? 'saved' : 'more'})` : '');
  }
  return {
    ...(drafts !== undefined ? { draftsUsd: round4(drafts) } : {}),
    upscalesUsd: round4(upscalesUsd),
    unpriced,
    ...(total !== undefined ? { totalUsd: round4(total) } : {}),
    ...(full !== undefined ? { fullSizeUsd: full } : {}),
    ...(saved !== undefined ? { savedUsd: round4(saved) } : {}),
    text,
  };
}

const FINAL_STATES: ReadonlySet<string> = new Set(['done', 'failed', 'canceled']);

function round4(value: number): number {
  return Math.round(value * 10_000) / 10_000;
}

/** While a finished job runs again: "Retrying 4 failed images" or "Rerolling image 3". */
function rerunTitle(job: Partial<Pick<Job, 'batches' | 'reopenedAt'>>): string | undefined {
  if (job.reopenedAt === undefined) return undefined;
  const batches = (job.batches ?? []).filter((b) => (b.retry?.at ?? b.reroll?.at ?? b.upscale?.at) === job.reopenedAt);
  const reroll = batches.find((b) => b.reroll)?.reroll;
  if (reroll) return `Rerolling image ${reroll.image}`;
  const upscales = batches.filter((b) => b.upscale);
  if (upscales.length > 0) return `Upscaling ${plural(upscales.length, 'approved image')}`;
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
  const upscales = (job.batches ?? []).filter((b) => b.upscale);
  if (upscales.length > 0) {
    const made = upscales.filter((b) => b.state === 'done').length;
    const lost = upscales.filter((b) => b.state === 'failed' && b.upscale!.at === job.reopenedAt).length;
    lines.push(`${made}/${upscales.length} upscaled${lost > 0 ? ` · ${lost} failed` : ''}`);
  }
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
  /** approved drafts an "Upscale N approved" would send (offered for draft jobs) */
  upscalable: number;
  /** a draft job's costs against full size, once anything was upscaled or is upscalable */
  costs?: string;
  text: string;
}

export function gallerySummary(
  job: Pick<Job, 'images' | 'batches' | 'request'> & Partial<Pick<Job, 'state' | 'estimatedCostUsd' | 'fullSizeCostUsd'>>,
): GallerySummary {
  const counts = { approved: 0, rejected: 0, pending: 0 };
  for (const image of job.images) counts[image.review.status] += 1;
  const failed = job.batches
    // A retried batch's images were asked for again; a failed reroll leaves its slot to the rejected image.
    .filter((b) => (b.state === 'failed' || (b.state === 'canceled' && b.delivered < b.size)) && !b.retried && !b.reroll && !b.upscale)
    .map((b) => ({ batch: b.index + 1, images: b.size - b.delivered, reason: b.error ?? b.state }));
  const parts = [`${STATUS_MARK.approved} ${counts.approved} approved`, `${STATUS_MARK.rejected} ${counts.rejected} rejected`, `${STATUS_MARK.pending} ${counts.pending} pending`];
  const lost = failed.reduce((sum, f) => sum + f.images, 0);
  if (lost > 0) parts.push(`${lost} of ${job.request.count} not made`);
  const retryable = job.state === 'canceled' ? 0 : Math.max(0, job.request.count - job.images.length);
  const upscalable = job.request.draft && job.state !== 'canceled' ? upscalableImages(job).length : 0;
  const finals = job.images.filter((image) => image.final).length;
  if (finals > 0) parts.push(`${finals} upscaled`);
  const costs = job.request.draft ? draftCosts({ estimatedCostUsd: job.estimatedCostUsd, fullSizeCostUsd: job.fullSizeCostUsd, ...job }).text : undefined;
  return { ...counts, failed, retryable, upscalable, ...(costs ? { costs } : {}), text: parts.join(' · ') };
}

/** The file a gallery shows for an image: its upscaled version once made, else the image itself. */
export function shownFile(image: Pick<ImageRecord, 'file' | 'final'>): string {
  return image.final?.file ?? image.file;
}

export interface GalleryPage {
  page: number;
  pages: number;
  images: ImageRecord[];
  /** a prompt list's entry these images were made for (0-based), and its heading */
  prompt?: number;
  heading?: string;
}

/**
 * A prompt list's gallery is grouped by prompt: a page never holds two entries' images, and says
 * whose they are. `Prompt 2/3 · lines 2 and 5: “a blue owl”`.
 */
export function promptHeading(request: Pick<Job['request'], 'prompts'>, prompt: number | undefined): string | undefined {
  const entry = prompt !== undefined ? request.prompts?.[prompt] : undefined;
  if (!entry) return undefined;
  const lines = entry.lines.map((l) => l.line);
  const where = lines.length === 1 ? `line ${lines[0]}` : `lines ${lines.slice(0, -1).join(', ')} and ${lines.at(-1)}`;
  return `Prompt ${prompt! + 1}/${request.prompts!.length} · ${where}: “${shorten(entry.prompt, 120)}”`;
}

/** The images in groups that may share a page: all of them, or one group per prompt-list entry. */
export function imageGroups(job: Pick<Job, 'images'> & { request?: Pick<Job['request'], 'prompts'> }): ImageRecord[][] {
  if (!job.request?.prompts?.length) return job.images.length > 0 ? [job.images] : [];
  const groups: ImageRecord[][] = [];
  for (const image of job.images) {
    const last = groups.at(-1);
    if (last && last[0]!.prompt === image.prompt) last.push(image);
    else groups.push([image]);
  }
  return groups;
}

function pagesOf(job: Pick<Job, 'images'> & { request?: Pick<Job['request'], 'prompts'> }, size: number): ImageRecord[][] {
  const pages: ImageRecord[][] = [];
  for (const group of imageGroups(job)) for (let i = 0; i < group.length; i += size) pages.push(group.slice(i, i + size));
  return pages.length > 0 ? pages : [[]];
}

/** Splits a job's images into pages of `size` (a platform's per-message limit), a prompt list's by prompt. */
export function galleryPage(job: Pick<Job, 'images'> & { request?: Pick<Job['request'], 'prompts'> }, page: number, size: number): GalleryPage {
  const pages = pagesOf(job, size);
  const current = Math.min(Math.max(1, page), pages.length);
  const images = pages[current - 1]!;
  const prompt = job.request?.prompts?.length ? images[0]?.prompt : undefined;
  const heading = job.request ? promptHeading(job.request, prompt) : undefined;
  return { page: current, pages: pages.length, images, ...(prompt !== undefined ? { prompt } : {}), ...(heading ? { heading } : {}) };
}

/** Every page of `size` as the numbers of its images (a prompt list's by prompt): what a platform posts. */
export function imagePages(job: Pick<Job, 'images'> & { request?: Pick<Job['request'], 'prompts'> }, size: number): { page: number; pages: number; images: number[] }[] {
  if (job.images.length === 0) return [];
  const pages = pagesOf(job, size);
  return pages.map((images, i) => ({ page: i + 1, pages: pages.length, images: images.map((image) => image.index) }));
}

/** The page that holds image `index` (1-based). */
export function pageOf(job: Pick<Job, 'images'> & { request?: Pick<Job['request'], 'prompts'> }, index: number, size: number): number {
  const position = pagesOf(job, size).findIndex((page) => page.some((image) => image.index === index));
  return position < 0 ? 1 : position + 1;
}

export function jobLine(job: Pick<Job, 'id' | 'request' | 'createdAt'>, event: ProgressEvent): string {
  const where = event.queuePosition !== undefined ? `queued #${event.queuePosition}` : `${event.imagesDone}/${event.imagesTotal} images`;
  return `${job.id} · “${shorten(job.request.prompt, 60)}” · ${where}${event.etaMs !== undefined ? ` · ETA ${formatDuration(event.etaMs)}` : ''}`;
}

/** Tiles on one contact sheet (5 × 5). */
export const SHEET_TILES = 25;

/** A job shown as contact sheets instead of a gallery: more images than GALLERY_INLINE_MAX were asked for. */
export function usesContactSheets(job: Pick<Job, 'request'>, inlineMax: number): boolean {
  return job.request.count > inlineMax;
}

/** `1-3, 5, 8-9`: numbers (ascending) as ranges. */
export function numberRanges(numbers: readonly number[]): string {
  const parts: string[] = [];
  const sorted = [...new Set(numbers)].sort((a, b) => a - b);
  for (let i = 0; i < sorted.length; i += 1) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j += 1;
    parts.push(j > i ? `${sorted[i]}-${sorted[j]}` : String(sorted[i]));
    i = j;
  }
  return parts.join(', ');
}

export interface SheetView {
  /** `Contact sheet 2/3 · images 26-50` */
  title: string;
  /** a prompt list's heading for the sheet's images */
  heading?: string;
  /** this sheet's counts: `✅ 3 approved · ❌ 2 rejected · ⏳ 20 pending` */
  counts: string;
  /** which images are reviewed, by mark: `✅ 26-28 · ❌ 30, 33` (empty while all are pending) */
  marks: string;
  /** this sheet's pending images: what its "Approve all pending" / "Reject all pending" would review */
  pending: number[];
}

/** What one contact sheet's message says; `images`: the numbers it shows (its page's layout). */
export function sheetView(job: Pick<Job, 'images' | 'request'>, images: readonly number[], page: number, pages: number): SheetView {
  const shown = job.images.filter((image) => images.includes(image.index));
  const by: Record<ReviewStatus, number[]> = { approved: [], rejected: [], pending: [] };
  for (const image of shown) by[image.review.status].push(image.index);
  const first = Math.min(...images);
  const last = Math.max(...images);
  const range = images.length === 0 ? 'no images' : first === last ? `image ${first}` : `images ${first}-${last}`;
  const heading = promptHeading(job.request, shown[0]?.prompt);
  const marks = (['approved', 'rejected'] as const).filter((s) => by[s].length > 0).map((s) => `${STATUS_MARK[s]} ${numberRanges(by[s])}`);
  return {
    title: `Contact sheet ${page}/${pages} · ${range}`,
    ...(heading ? { heading } : {}),
    counts: `${STATUS_MARK.approved} ${by.approved.length} approved · ${STATUS_MARK.rejected} ${by.rejected.length} rejected · ${STATUS_MARK.pending} ${by.pending.length} pending`,
    marks: marks.join(' · '),
    pending: by.pending,
  };
}
