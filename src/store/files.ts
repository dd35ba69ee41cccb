/**
 * The output folder: `<OUTPUT_DIR>/<jobId>/{pending-review,approved,rejected}/NNN.ext` and
 * `manifest.json`. Every write goes to a temporary name first and is renamed into place, so a crash
 * never leaves a half-written image or manifest where a reader would take it for a whole one.
 * Folders are created owner-only (0700) and files 0600: prompts and unreviewed images are private.
 *
 * Provider output is untrusted: an image is kept only if its first bytes say PNG, JPEG or WebP, it
 * stays under the byte cap while streaming, its header declares no more than the pixel limit, and
 * it decodes whole.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import sharp from 'sharp';
import type { ImageReader } from '../core/ports.js';
import type { ReviewStatus } from '../core/types.js';

export const REVIEW_FOLDERS: Record<ReviewStatus, string> = {
  pending: 'pending-review',
  approved: 'approved',
  rejected: 'rejected',
};

const EXTENSIONS: Record<string, string> = { png: 'png', jpeg: 'jpg', webp: 'webp' };
/** in the name of a file being written; sweep() removes what a crash left with it */
export const TEMP_MARK = '.part-';
export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;
/** @default the largest picture kept: 8192 × 8192 (a 4× upscale of a 2-megapixel image fits) */
export const MAX_IMAGE_PIXELS = 8192 * 8192;

/** The format the bytes themselves announce, or undefined: the URL's extension and headers are not trusted. */
export function sniffFormat(head: Uint8Array): 'png' | 'jpeg' | 'webp' | undefined {
  const starts = (bytes: number[], at = 0) => bytes.every((byte, i) => head[at + i] === byte);
  if (starts([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (starts([0xff, 0xd8, 0xff])) return 'jpeg';
  if (starts([0x52, 0x49, 0x46, 0x46]) && starts([0x57, 0x45, 0x42, 0x50], 8)) return 'webp';
  return undefined;
}

export interface ImageFilesOptions {
  /** bytes allowed for one image @default 25 MiB */
  maxBytes?: number;
  /** pixels (width × height) allowed for one image @default MAX_IMAGE_PIXELS */
  maxPixels?: number;
}

export interface StoredImage {
  /** relative to the job folder */
  file: string;
  width: number;
  height: number;
  contentType: string;
  bytes: number;
}

export class UnreadableImageError extends Error {
  override name = 'UnreadableImageError';
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
  async writeImage(jobId: string, baseName: string, source: AsyncIterable<Uint8Array> | Buffer): Promise<StoredImage> {
    const folder = path.join(this.jobDir(jobId), REVIEW_FOLDERS.pending);
    await this.mkdir(folder);
    const temp = path.join(folder, `${baseName}${TEMP_MARK}${randomBytes(4).toString('hex')}`);
    try {
      await pipeline(
        Readable.from(this.checked(Buffer.isBuffer(source) ? [source] : source)),
        createWriteStream(temp, { mode: FILE_MODE }),
      );
      // The header first (no pixel is decoded): its format and declared size decide before any work.
      const meta = await sharp(temp)
        .metadata()
        .catch(() => {
          throw new UnreadableImageError('the image could not be read');
        });
      const extension = EXTENSIONS[meta.format ?? ''];
      if (!extension) throw new UnreadableImageError('the image is not a PNG, JPEG or WebP');
      if (!meta.width || !meta.height) throw new UnreadableImageError('the image has no dimensions');
      if (meta.width * meta.height > this.maxPixels) {
        throw new UnreadableImageError(`the image is larger than ${Math.round(this.maxPixels / 1e6)} megapixels`);
      }
      // Then decoded whole: reading its last row in sequential mode makes the decoder go through every
      // row before it (a truncated or corrupt body whose header looks right is refused here, not shown
      // in a gallery), while memory holds a few rows, not the picture.
      await sharp(temp, { limitInputPixels: this.maxPixels, failOn: 'warning', sequentialRead: true })
        .extract({ left: 0, top: meta.height - 1, width: 1, height: 1 })
        .raw()
        .toBuffer()
        .catch(() => {
          throw new UnreadableImageError('the image is damaged or incomplete');
        });
      const file = path.join(REVIEW_FOLDERS.pending, `${baseName}.${extension}`);
      await rename(temp, path.join(this.jobDir(jobId), file));
      return {
        file,
        width: meta.width,
        height: meta.height,
        contentType: `image/${extension === 'jpg' ? 'jpeg' : extension}`,
        bytes: meta.size ?? 0,
      };
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  /** Passes the bytes through, refusing a body that is not PNG/JPEG/WebP or passes the byte cap. */
  private async *checked(source: AsyncIterable<Uint8Array> | Uint8Array[]): AsyncGenerator<Uint8Array> {
    let total = 0;
    let head: Buffer | undefined = Buffer.alloc(0);
    for await (const chunk of source) {
      total += chunk.length;
      if (total > this.maxBytes) {
        throw new UnreadableImageError(`the image is larger than ${Math.round(this.maxBytes / 1024 / 1024)} MiB (MAX_IMAGE_BYTES)`);
      }
      if (head) {
        head = Buffer.concat([head, chunk]);
        if (head.length < 12) continue;
        if (!sniffFormat(head)) throw new UnreadableImageError('the image is not a PNG, JPEG or WebP');
        yield head;
        head = undefined;
        continue;
      }
      yield chunk;
    }
    if (head) {
      if (!sniffFormat(head)) throw new UnreadableImageError('the image is not a PNG, JPEG or WebP');
      yield head;
    }
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
    for (const folder of ['', ...Object.values(REVIEW_FOLDERS)]) {
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
