/**
 * The output folder: `<OUTPUT_DIR>/<jobId>/{pending-review,approved,rejected}/NNN.ext` and
 * `manifest.json`. Every write goes to a temporary name first and is renamed into place, so a crash
 * never leaves a half-written image or manifest where a reader would take it for a whole one.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import sharp from 'sharp';
import type { ReviewStatus } from '../core/types.js';

export const REVIEW_FOLDERS: Record<ReviewStatus, string> = {
  pending: 'pending-review',
  approved: 'approved',
  rejected: 'rejected',
};

const EXTENSIONS: Record<string, string> = { png: 'png', jpeg: 'jpg', jpg: 'jpg', webp: 'webp', gif: 'gif', avif: 'avif' };
const TEMP_MARK = '.part-';

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

export class ImageFiles {
  constructor(readonly outputDir: string) {}

  jobDir(jobId: string): string {
    return path.resolve(this.outputDir, jobId);
  }

  /**
   * Streams one image into `pending-review/<baseName>.<ext>`; the extension comes from the bytes, and
   * bytes that are not an image are refused (a truncated download must not pass for a picture).
   */
  async writeImage(jobId: string, baseName: string, source: AsyncIterable<Uint8Array> | Buffer): Promise<StoredImage> {
    const folder = path.join(this.jobDir(jobId), REVIEW_FOLDERS.pending);
    await mkdir(folder, { recursive: true });
    const temp = path.join(folder, `${baseName}${TEMP_MARK}${randomBytes(4).toString('hex')}`);
    try {
      await pipeline(Buffer.isBuffer(source) ? Readable.from([source]) : Readable.from(source), createWriteStream(temp));
      const meta = await sharp(temp)
        .metadata()
        .catch((error: Error) => {
          throw new UnreadableImageError(`the provider sent bytes that are not a readable image (${error.message})`);
        });
      const extension = EXTENSIONS[meta.format ?? ''] ?? 'bin';
      if (!meta.width || !meta.height) throw new UnreadableImageError('the provider sent an image without dimensions');
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

  /** Moves an image to the folder of its review status; returns its new relative path. */
  async moveTo(jobId: string, file: string, status: ReviewStatus): Promise<string> {
    const target = path.join(REVIEW_FOLDERS[status], path.basename(file));
    if (target === file) return file;
    const dir = this.jobDir(jobId);
    await mkdir(path.join(dir, REVIEW_FOLDERS[status]), { recursive: true });
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

  async exists(jobId: string, file: string): Promise<boolean> {
    const entries = await readdir(path.join(this.jobDir(jobId), path.dirname(file))).catch(() => [] as string[]);
    return entries.includes(path.basename(file));
  }

  async writeManifest(jobId: string, manifest: unknown): Promise<string> {
    const dir = this.jobDir(jobId);
    await mkdir(dir, { recursive: true });
    const target = path.join(dir, 'manifest.json');
    const temp = `${target}${TEMP_MARK}${randomBytes(4).toString('hex')}`;
    await writeFile(temp, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(temp, target);
    return target;
  }

  /** Removes temporary files a crash left behind in a job's folders. */
  async sweep(jobId: string): Promise<number> {
    let removed = 0;
    for (const folder of ['', ...Object.values(REVIEW_FOLDERS)]) {
      const dir = path.join(this.jobDir(jobId), folder);
      const entries = await readdir(dir).catch(() => [] as string[]);
      for (const entry of entries.filter((name) => name.includes(TEMP_MARK))) {
        await rm(path.join(dir, entry), { force: true });
        removed += 1;
      }
    }
    return removed;
  }
}
