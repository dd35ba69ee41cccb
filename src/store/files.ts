/**
 * The output folder: `<OUTPUT_DIR>/<jobId>/{pending-review,approved,rejected}/NNN.ext` and
 * `manifest.json`. Every write goes to a temporary name first and is renamed into place, so a crash
 * never leaves a half-written image or manifest where a reader would take it for a whole one.
 * Folders are created owner-only (0700) and files 0600: prompts and unreviewed images are private.
 *
 * Provider output is untrusted: an image is kept only if its first bytes say PNG, JPEG or WebP, it
 * stays under the byte cap while streaming, its header declares no more than the pixel limit, and
 * it arrived whole (image-check.ts: checked as it streams, nothing decoded). An image that came in
 * another format than the job asked for (fal makes no WebP) is converted with sharp after that check.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type { ImageReader } from '../core/ports.js';
import type { ReviewStatus } from '../core/types.js';
import sharp from 'sharp';
import { ImageInspector, UnreadableImageError, type ImageFormat } from './image-check.js';

export { sniffFormat, UnreadableImageError } from './image-check.js';

export const REVIEW_FOLDERS: Record<ReviewStatus, string> = {
  pending: 'pending-review',
  approved: 'approved',
  rejected: 'rejected',
};

/** Where "Upscale approved" keeps each approved draft's upscaled version (`final/003.png`). */
export const FINAL_FOLDER = 'final';
/** the review page's thumbnails, beside the images (thumbnails.ts) */
export const THUMBS_FOLDER = '.thumbs';

const EXTENSIONS: Record<ImageFormat, string> = { png: 'png', jpeg: 'jpg', webp: 'webp' };
/** the content type of each format, as the manifest and the chat uploads state it */
export const CONTENT_TYPES: Record<ImageFormat, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };
/** in the name of a file being written; sweep() removes what a crash left with it */
export const TEMP_MARK = '.part-';
export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;
/** bytes gathered from the network before one write to disk */
const WRITE_PIECE = 256 * 1024;
/** @default the largest picture kept: 8192 × 8192 (a 4× upscale of a 2-megapixel image fits) */
export const MAX_IMAGE_PIXELS = 8192 * 8192;

export interface ImageFilesOptions {
  /** bytes allowed for one image @default 25 MiB */
  maxBytes?: number;
  /** pixels (width × height) allowed for one image @default MAX_IMAGE_PIXELS */
  maxPixels?: number;
}

/** The format an image is kept in, whatever the provider sent (see ImageStorage.writeImage). */
export interface WantedFormat {
  format: ImageFormat;
  /** 1–100 for jpeg and webp @default sharp's (80) */
  quality?: number;
  /** `final`: an upscaled image, kept in `final/` (reviews never move it) @default pending-review */
  folder?: 'final';
}

/**
 * Re-encodes a checked image file into `want`'s format. Only images that passed the streamed check
 * come here, so the decode is bounded by the pixel cap (sharp's own limit is set to it as well).
 */
export async function convertImage(from: string, to: string, want: WantedFormat, maxPixels = MAX_IMAGE_PIXELS): Promise<{ size: number }> {
  const quality = want.quality !== undefined ? { quality: want.quality } : {};
  const image = sharp(from, { limitInputPixels: maxPixels });
  const encoded = want.format === 'png' ? image.png() : want.format === 'webp' ? image.webp(quality) : image.jpeg(quality);
  let data: Buffer;
  try {
    data = await encoded.toBuffer();
  } catch {
    // Bytes that passed the streamed check but do not decode: that output is refused, not retried.
    throw new UnreadableImageError(`the image could not be converted to ${want.format}: it is damaged`);
  }
  // Written by us rather than by libvips, so the file is created owner-only like every other image.
  await writeFile(to, data, { mode: FILE_MODE });
  return { size: data.length };
}

export interface StoredImage {
  /** relative to the job folder */
  file: string;
  width: number;
  height: number;
  contentType: string;
  bytes: number;
}

export class ImageFiles implements ImageReader {
  readonly outputDir: string;
  private readonly maxBytes: number;
  private readonly maxPixels: number;
  /** jobs started with another output folder (`generate --out`), so they finish where they began */
  private readonly roots = new Map<string, string>();

  constructor(outputDir: string, options: ImageFilesOptions = {}) {
    this.outputDir = path.resolve(outputDir);
    this.maxBytes = options.maxBytes ?? 25 * 1024 * 1024;
    this.maxPixels = options.maxPixels ?? MAX_IMAGE_PIXELS;
  }

  jobDir(jobId: string): string {
    return path.resolve(this.roots.get(jobId) ?? this.outputDir, jobId);
  }

  /** Files of `jobId` live under `outputDir` from now on (the folder recorded when the job began). */
  adopt(jobId: string, outputDir: string): void {
    if (path.resolve(outputDir) !== this.outputDir) this.roots.set(jobId, path.resolve(outputDir));
  }

  /**
   * Streams one image into `pending-review/<baseName>.<ext>`; the extension comes from the bytes, and
   * bytes that are not an image are refused (a truncated download must not pass for a picture).
   */
  async writeImage(jobId: string, baseName: string, source: AsyncIterable<Uint8Array> | Buffer, want?: WantedFormat): Promise<StoredImage> {
    const into = want?.folder === 'final' ? FINAL_FOLDER : REVIEW_FOLDERS.pending;
    const folder = path.join(this.jobDir(jobId), into);
    await this.mkdir(folder);
    const temp = path.join(folder, `${baseName}${TEMP_MARK}${randomBytes(4).toString('hex')}`);
    let converted: string | undefined;
    try {
      const inspector = new ImageInspector(this.maxPixels);
      await pipeline(
        Readable.from(this.checked(Buffer.isBuffer(source) ? [source] : source, inspector)),
        createWriteStream(temp, { mode: FILE_MODE }),
      );
      const meta = inspector.end();
      let format: ImageFormat = meta.format;
      let bytes = meta.bytes;
      if (want && want.format !== meta.format) {
        // The provider could not make this format: converted from the checked file, so the cap and the
        // pixel limit held before sharp decodes a pixel.
        converted = `${temp}-${want.format}`;
        bytes = (await convertImage(temp, converted, want, this.maxPixels)).size;
        format = want.format;
      }
      const extension = EXTENSIONS[format];
      const file = path.join(into, `${baseName}.${extension}`);
      await rename(converted ?? temp, path.join(this.jobDir(jobId), file));
      if (converted) await rm(temp, { force: true });
      return { file, width: meta.width, height: meta.height, contentType: CONTENT_TYPES[format], bytes };
    } catch (error) {
      await rm(temp, { force: true });
      if (converted) await rm(converted, { force: true });
      throw error;
    }
  }

  /**
   * Passes the bytes through the inspector, refusing a body past the byte cap, and hands them on in
   * pieces of at least WRITE_PIECE bytes (one write to disk per piece, not per network read).
   */
  private async *checked(source: AsyncIterable<Uint8Array> | Uint8Array[], inspector: ImageInspector): AsyncGenerator<Uint8Array> {
    let total = 0;
    let piece: Uint8Array[] = [];
    let pieceBytes = 0;
    for await (const chunk of source) {
      total += chunk.length;
      if (total > this.maxBytes) {
        throw new UnreadableImageError(`the image is larger than ${Math.round(this.maxBytes / 1024 / 1024)} MiB (MAX_IMAGE_BYTES)`);
      }
      inspector.push(chunk);
      piece.push(chunk);
      pieceBytes += chunk.length;
      if (pieceBytes < WRITE_PIECE) continue;
      yield piece.length === 1 ? piece[0]! : Buffer.concat(piece);
      piece = [];
      pieceBytes = 0;
    }
    if (piece.length > 0) yield Buffer.concat(piece);
  }

  private async mkdir(folder: string): Promise<void> {
    await mkdir(folder, { recursive: true, mode: DIR_MODE });
  }

  /** Moves an image to the folder of its review status; returns its new relative path. */
  async moveTo(jobId: string, file: string, status: ReviewStatus): Promise<string> {
    const target = path.join(REVIEW_FOLDERS[status], path.basename(file));
    if (target === file) return file;
    const dir = this.jobDir(jobId);
    await this.mkdir(path.join(dir, REVIEW_FOLDERS[status]));
    await rename(path.join(dir, file), path.join(dir, target)).catch(async (error: NodeJS.ErrnoException) => {
      // Already moved by an earlier attempt that crashed before saving: the target is there, carry on.
      if (error.code === 'ENOENT' && (await this.exists(jobId, target))) return;
      throw error;
    });
    return target;
  }

  /** Renames an image inside its folder, keeping its extension (a rerolled image is kept beside its replacement). */
  async setAside(jobId: string, file: string, name: string): Promise<string> {
    const target = path.join(path.dirname(file), `${name}${path.extname(file)}`);
    if (target === file) return file;
    const dir = this.jobDir(jobId);
    await rename(path.join(dir, file), path.join(dir, target)).catch(async (error: NodeJS.ErrnoException) => {
      // Renamed by an earlier attempt that crashed before saving: the target is there, carry on.
      if (error.code === 'ENOENT' && (await this.exists(jobId, target))) return;
      throw error;
    });
    return target;
  }

  /**
   * Puts an image back where the record says it is, if a crash left it in another review folder
   * (moved, but the move not saved). Returns true when it had to move it.
   */
  async restore(jobId: string, file: string): Promise<boolean> {
    if (await this.exists(jobId, file)) return false;
    for (const folder of Object.values(REVIEW_FOLDERS)) {
      const candidate = path.join(folder, path.basename(file));
      if (candidate !== file && (await this.exists(jobId, candidate))) {
        await rename(path.join(this.jobDir(jobId), candidate), path.join(this.jobDir(jobId), file));
        return true;
      }
    }
    return false;
  }

  /** An image's bytes (ENOENT when there is none). */
  async read(jobId: string, file: string): Promise<Buffer> {
    return readFile(this.locate(jobId, file));
  }

  async size(jobId: string, file: string): Promise<number> {
    return (await stat(this.locate(jobId, file))).size;
  }

  locate(jobId: string, file: string): string {
    return path.join(this.jobDir(jobId), file);
  }

  async exists(jobId: string, file: string): Promise<boolean> {
    const entries = await readdir(path.join(this.jobDir(jobId), path.dirname(file))).catch(() => [] as string[]);
    return entries.includes(path.basename(file));
  }

  async writeManifest(jobId: string, manifest: unknown): Promise<string> {
    const dir = this.jobDir(jobId);
    await this.mkdir(dir);
    const target = path.join(dir, 'manifest.json');
    const temp = `${target}${TEMP_MARK}${randomBytes(4).toString('hex')}`;
    await writeFile(temp, `${JSON.stringify(manifest, null, 2)}\n`, { mode: FILE_MODE });
    await rename(temp, target);
    return target;
  }

  /** Removes temporary files a crash left behind in a job's folders. */
  async sweep(jobId: string, olderThanMs?: number): Promise<number> {
    let removed = 0;
    // `.thumbs` (and `.thumbs/final`): the review page's thumbnails (thumbnails.ts) are written the same way.
    for (const folder of ['', ...Object.values(REVIEW_FOLDERS), FINAL_FOLDER, THUMBS_FOLDER, path.join(THUMBS_FOLDER, FINAL_FOLDER)]) {
      const dir = path.join(this.jobDir(jobId), folder);
      const entries = await readdir(dir).catch(() => [] as string[]);
      for (const entry of entries.filter((name) => name.includes(TEMP_MARK))) {
        const file = path.join(dir, entry);
        if (olderThanMs !== undefined) {
          const modified = await stat(file).then((info) => info.mtimeMs, () => undefined);
          if (modified === undefined || Date.now() - modified < olderThanMs) continue;
        }
        await rm(file, { force: true });
        removed += 1;
      }
    }
    return removed;
  }
}
