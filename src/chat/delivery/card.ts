/**
 * What a progress message says, decided once for every platform from the core's view models: the
 * view, the review summary once finished, where the gallery is — and the failure lines. While a job
 * runs it lists its latest few failures; once finished, every batch that did not deliver, with its
 * reason. Text from outside is made one line of at most ERROR_LINE_MAX characters (oneLine) before
 * the platform escapes it: cutting an escaped text could split an entity.
 */
import type { DeliveryReport } from '../../core/ports.js';
import type { Job, ProgressEvent } from '../../core/types.js';
import { oneLine } from '../../core/text.js';
import { gallerySummary, progressView, type GallerySummary, type ProgressView } from '../../core/views.js';
import type { GalleryState, ProgressCard } from './platform.js';

/** Failures listed while a job runs (the latest), and failed batches named once it is finished. */
export const FAILURES_SHOWN = 5;
export const FAILED_BATCHES_SHOWN = 10;

export const GALLERY_FAILED = 'The gallery could not be posted here; the images are in the output folder.';

type Escape = (text: string) => string;

export function progressCard(job: Readonly<Job>, event: ProgressEvent, gallery: GalleryState = 'none'): ProgressCard {
  const view = progressView(job, event);
  return view.finished ? { view, summary: gallerySummary(job), gallery } : { view, gallery: 'none' };
}

/** `… and 3 earlier`, then the latest failures; nothing once the job is finished. */
export function failureLines(view: Pick<ProgressView, 'failures' | 'finished'>, escape: Escape): string[] {
  if (view.finished) return [];
  const shown = view.failures.slice(-FAILURES_SHOWN).map((failure) => escape(oneLine(failure)));
  const hidden = view.failures.length - shown.length;
  return hidden > 0 ? [`… and ${hidden} earlier`, ...shown] : shown;
}

/** `Batch 2: 4 images not made (reason)` per failed batch, then `… and N more failed batches`. */
export function failedBatchLines(summary: Pick<GallerySummary, 'failed'>, escape: Escape): string[] {
  const lines = summary.failed
    .slice(0, FAILED_BATCHES_SHOWN)
    .map((f) => `Batch ${f.batch}: ${f.images} image${f.images === 1 ? '' : 's'} not made (${escape(oneLine(f.reason))})`);
  const more = summary.failed.length - FAILED_BATCHES_SHOWN;
  return more > 0 ? [...lines, `… and ${more} more failed batches`] : lines;
}

/** How long a presigned link lives, for people: `7 days`, `12 h`, `30 min`. */
function lifetime(seconds: number): string {
  if (seconds >= 86_400 && seconds % 86_400 === 0) return `${seconds / 86_400} day${seconds === 86_400 ? '' : 's'}`;
  if (seconds >= 3_600) return `${Math.round(seconds / 3_600)} h`;
  return `${Math.max(1, Math.round(seconds / 60))} min`;
}

/**
 * The summary's delivery lines: where the keepers went, presigned links (the manifest's, then each
 * approved image's, `link` making the platform's markup) as many as `budget` characters hold, and the
 * uploads still waiting. `manifest · #1 · #3 · … and 9 more (listed in the manifest)`.
 */
export function deliveryLines(report: DeliveryReport, link: (url: string, label: string) => string, budget: number, escape: Escape): string[] {
  const head = `Delivered to ${escape(report.where)} (links valid ${lifetime(report.expiresInSeconds)}): `;
  const links: string[] = [];
  let used = head.length;
  for (const entry of report.links) {
    const name = entry.file === 'manifest.json' ? 'manifest' : `#${Number(/(\d+)\.[a-z]+$/i.exec(entry.file)?.[1] ?? 0) || entry.file}`;
    const label = entry.file.startsWith('final/') ? `${name} (final)` : name;
    const piece = link(entry.url, label);
    if (used + piece.length + 3 > budget) break;
    links.push(piece);
    used += piece.length + 3;
  }
  const more = report.links.length - links.length;
  const lines = [head + links.join(' · ') + (more > 0 ? ` … and ${more} more (each in the bucket beside the manifest)` : '')];
  if (report.waiting > 0) lines.push(`${report.waiting} upload${report.waiting === 1 ? '' : 's'} waiting to be retried; the files are kept until they are in the bucket`);
  return lines;
}
