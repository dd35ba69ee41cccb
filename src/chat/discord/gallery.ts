/**
 * A finished job's gallery as pages: one message per page of at most 10 images (Discord's attachment
 * limit) and under the 25 MiB request limit — or, for a big job, one contact sheet per 25 images;
 * which page a button belongs to.
 */
import type { Job } from '../../core/types.js';
import { imagePages, pageOf, SHEET_TILES } from '../../core/views.js';
import type { PageLayout } from '../delivery/index.js';
import { IMAGES_PER_MESSAGE } from './render.js';
import type { GalleryEntry } from './transport.js';

/** Discord's default per-file limit; an interaction tells the real one. */
export const DEFAULT_FILE_LIMIT = 10 * 1024 * 1024;
/** The request limit is 25 MiB; the rest of the multipart body needs a little room. */
const REQUEST_LIMIT = 24 * 1024 * 1024;

export interface SizedImage {
  index: number;
  bytes: number;
  /** a prompt list's entry: a page holds one entry's images only (the gallery is grouped by prompt) */
  group?: number;
}

/** Splits images into pages: ≤ 10 each, and ≤ the request limit in uploaded bytes. */
export function planPages(images: readonly SizedImage[], fileLimit = DEFAULT_FILE_LIMIT): PageLayout[] {
  const chunks: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  let group: number | undefined;
  for (const image of images) {
    const uploaded = image.bytes <= fileLimit ? image.bytes : 0;
    const full = current.length === IMAGES_PER_MESSAGE || (current.length > 0 && bytes + uploaded > REQUEST_LIMIT);
    if (full || (current.length > 0 && image.group !== group)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(image.index);
    group = image.group;
    bytes += uploaded;
  }
  if (current.length > 0) chunks.push(current);
  return chunks.map((images, i) => ({ page: i + 1, pages: chunks.length, images }));
}

/**
 * The page a button belongs to: the layout saved when the gallery was posted, else (a gallery from
 * before the layout was saved) plain pages of 10.
 */
export function layoutFor(
  job: Pick<Job, 'images'>,
  gallery: GalleryEntry[] | undefined,
  messageId: string,
  image: number,
): PageLayout & { skipped: Set<number> } {
  const saved = gallery?.findIndex((page) => page.messageId === messageId) ?? -1;
  const entry = gallery?.[saved];
  if (gallery && entry) return { page: saved + 1, pages: gallery.length, images: entry.images, skipped: new Set(entry.skipped ?? []) };
  const page = pageOf(job, image, IMAGES_PER_MESSAGE);
  const pages = Math.max(1, Math.ceil(job.images.length / IMAGES_PER_MESSAGE));
  const images = job.images.slice((page - 1) * IMAGES_PER_MESSAGE, page * IMAGES_PER_MESSAGE).map((i) => i.index);
  return { page, pages, images, skipped: new Set() };
}

/**
 * A big job's contact sheets: 25 images each, a prompt list's grouped by prompt (a sheet never mixes
 * two entries). Decided from the job alone, so a restart or a re-render finds the same sheets.
 */
export function sheetPages(job: Pick<Job, 'images' | 'request'>): PageLayout[] {
  return imagePages(job, SHEET_TILES);
}
