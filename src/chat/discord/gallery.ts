/**
 * The gallery of a finished job: one message per page of at most 10 images (Discord's attachment
 * limit), uploaded from the job folder — provider URLs expire, the files do not. A page also stays
 * under the 25 MiB request limit, and an image above the per-file limit is listed instead of
 * uploaded (it still gets its review buttons).
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ImageRecord, Job } from '../../core/types.js';
import { gallerySummary, pageOf } from '../../core/views.js';
import { IMAGES_PER_MESSAGE, galleryBody, uploadName, type GalleryPageLayout } from './render.js';
import type { GalleryEntry, MessageTarget, Transport, Upload } from './transport.js';

/** Discord's default per-file limit; an interaction tells the real one. */
export const DEFAULT_FILE_LIMIT = 10 * 1024 * 1024;
/** The request limit is 25 MiB; the rest of the multipart body needs a little room. */
const REQUEST_LIMIT = 24 * 1024 * 1024;

export interface SizedImage {
  index: number;
  bytes: number;
}

/** Splits images into pages: ≤ 10 each, and ≤ the request limit in uploaded bytes. */
export function planPages(images: readonly SizedImage[], fileLimit = DEFAULT_FILE_LIMIT): GalleryPageLayout[] {
  const chunks: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  for (const image of images) {
    const uploaded = image.bytes <= fileLimit ? image.bytes : 0;
    if (current.length === IMAGES_PER_MESSAGE || (current.length > 0 && bytes + uploaded > REQUEST_LIMIT)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(image.index);
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
): GalleryPageLayout & { skipped: Set<number> } {
  const saved = gallery?.findIndex((page) => page.messageId === messageId) ?? -1;
  const entry = gallery?.[saved];
  if (gallery && entry) return { page: saved + 1, pages: gallery.length, images: entry.images, skipped: new Set(entry.skipped ?? []) };
  const page = pageOf(job, image, IMAGES_PER_MESSAGE);
  const pages = Math.max(1, Math.ceil(job.images.length / IMAGES_PER_MESSAGE));
  const images = job.images.slice((page - 1) * IMAGES_PER_MESSAGE, page * IMAGES_PER_MESSAGE).map((i) => i.index);
  return { page, pages, images, skipped: new Set() };
}

export interface GalleryDeps {
  transport: Transport;
  jobDir: (jobId: string) => string;
}

async function sizeOf(file: string): Promise<number> {
  return (await stat(file)).size;
}

/** Posts every page; resolves with the message id and images of each, in order. */
export async function postGallery(
  deps: GalleryDeps,
  job: Job,
  target: MessageTarget,
): Promise<GalleryEntry[]> {
  if (job.images.length === 0) return [];
  const dir = deps.jobDir(job.id);
  const fileLimit = target.attachmentSizeLimit ?? DEFAULT_FILE_LIMIT;
  const byIndex = new Map<number, ImageRecord>(job.images.map((image) => [image.index, image]));
  const sized = await Promise.all(
    job.images.map(async (image) => ({ index: image.index, bytes: await sizeOf(path.join(dir, image.file)) })),
  );
  const tooLarge = new Set(sized.filter((s) => s.bytes > fileLimit).map((s) => s.index));
  const summary = gallerySummary(job);
  const posted: GalleryEntry[] = [];
  for (const layout of planPages(sized, fileLimit)) {
    const files: Upload[] = [];
    for (const index of layout.images) {
      const image = byIndex.get(index)!;
      if (tooLarge.has(index)) continue;
      files.push({ name: uploadName(image), data: await readFile(path.join(dir, image.file)), contentType: image.contentType });
    }
    const skipped = layout.images.filter((index) => tooLarge.has(index));
    const messageId = await deps.transport.post(target, galleryBody(job, layout, summary, new Set(skipped)), files);
    posted.push({ messageId, images: layout.images, ...(skipped.length > 0 ? { skipped } : {}) });
  }
  return posted;
}
