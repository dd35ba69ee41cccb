/**
 * Thumbnails for the review page: a small WebP of each image, made on first request and kept beside
 * the job's images in `<jobDir>/.thumbs/<base>.webp`.
 *
 * Keyed by the file's base name (`003`), not its folder, so a review that moves
 * `pending-review/003.png` to `approved/003.png` keeps using the same thumbnail (a rename keeps the
 * file's mtime). Each thumbnail carries its source's mtime as its own: when they differ (a reroll wrote
 * a new `003.png`) it is made again. The mtime is read before the source is, so a source replaced
 * while its thumbnail was being made is caught by the next request, not hidden by a newer thumbnail.
 *
 * Nothing else reads `.thumbs`: ImageFiles' sweep and listings look only in the review folders and
 * `final/`, and the S3 store uploads only the files it is given (its key pattern refuses dot-folders).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { DIR_MODE, FILE_MODE, FINAL_FOLDER, MAX_IMAGE_PIXELS, REVIEW_FOLDERS, TEMP_MARK, THUMBS_FOLDER } from './files.js';

export { THUMBS_FOLDER };
/** @default longest side of a thumbnail, in pixels */
export const DEFAULT_THUMBNAIL_SIZE = 320;
const WEBP_QUALITY = 75;

/** A file as jobs record it: an image in a review folder or `final/`, nothing that climbs out of the job. */
const FILE = new RegExp(`^((${[...Object.values(REVIEW_FOLDERS), FINAL_FOLDER].join('|')})/)?[\\w-][\\w.-]{0,99}$`);
const REVIEW_FOLDER_NAMES = new Set(Object.values(REVIEW_FOLDERS));

/** A file name that is not one of the job's images (`../x.png`, an absolute path): refused, nothing read. */
export class UnsafeFileError extends Error {
  override name = 'UnsafeFileError';
}

export interface Thumbnail {
  /** absolute path of the WebP */
  path: string;
  bytes: number;
}

export class Thumbnails {
  readonly #size: number;
  /** thumbnails being made, by their path: concurrent requests for one share its render */
  readonly #making = new Map<string, Promise<Thumbnail>>();
  #renders = 0;

  /** @param options.size longest side of a thumbnail in pixels, 16–2048 @default 320 */
  constructor(options: { size?: number } = {}) {
    const size = options.size ?? DEFAULT_THUMBNAIL_SIZE;
    if (!Number.isInteger(size) || size < 16 || size > 2048) {
      throw new RangeError(`Thumbnails: expected size to be an integer from 16 to 2048, got ${size}`);
    }
    this.#size = size;
  }

  /** How many thumbnails this instance has rendered (cache hits and shared renders not counted). */
  get renders(): number {
    return this.#renders;
  }

  /**
   * The thumbnail of `file` (relative to `jobDir`, e.g. `approved/003.png`), made if it is missing or
   * its source has changed since (another mtime). Rejects with UnsafeFileError for a name outside the job's image folders,
   * with the file system's error (code ENOENT) when the image is not there, and with sharp's when it
   * does not decode.
   */
  thumbnail(jobDir: string, file: string): Promise<Thumbnail> {
    const paths = this.#paths(jobDir, file);
    if (paths instanceof UnsafeFileError) return Promise.reject(paths);
    const { source, target } = paths;
    const running = this.#making.get(target);
    if (running) return running;
    const made = this.#fresh(source, target).finally(() => this.#making.delete(target));
    this.#making.set(target, made);
    return made;
  }

  #paths(jobDir: string, file: string): { source: string; target: string } | UnsafeFileError {
    if (typeof file !== 'string' || !FILE.test(file)) {
      return new UnsafeFileError(`not an image of this job: ${JSON.stringify(String(file).slice(0, 120))}`);
    }
    const dir = path.resolve(jobDir);
    const source = path.resolve(dir, file);
    // The pattern already allows no `..` segment; this holds even if the pattern is loosened one day.
    if (path.relative(dir, source).startsWith('..') || path.isAbsolute(path.relative(dir, source))) {
      return new UnsafeFileError(`not an image of this job: ${JSON.stringify(file)}`);
    }
    const folder = path.dirname(file);
    const base = path.basename(file, path.extname(file));
    // Review folders share one thumbnail per number; `final/003.png` (an upscale) is another picture.
    const where = folder === '.' || REVIEW_FOLDER_NAMES.has(folder) ? THUMBS_FOLDER : path.join(THUMBS_FOLDER, folder);
    return { source, target: path.join(dir, where, `${base}.webp`) };
  }

  async #fresh(source: string, target: string): Promise<Thumbnail> {
    const from = await stat(source);
    const kept = await stat(target).catch(() => undefined);
    // The thumbnail's mtime was set to the source's (a double of seconds): equal to well under a millisecond.
    if (kept?.isFile() && Math.abs(kept.mtimeMs - from.mtimeMs) < 1) return { path: target, bytes: kept.size };
    return this.#render(source, target, from.mtimeMs / 1000);
  }

  async #render(source: string, target: string, sourceTime: number): Promise<Thumbnail> {
    this.#renders += 1;
    // Bytes, not the path: libvips may answer a load of a file name it has seen from its cache, which
    // after a reroll would be the replaced image.
    const data = await sharp(await readFile(source), { limitInputPixels: MAX_IMAGE_PIXELS })
      .rotate() // EXIF orientation, as the browser shows the full image
      .resize(this.#size, this.#size, { fit: 'inside', withoutEnlargement: true })
      .webp({ quality: WEBP_QUALITY })
      .toBuffer();
    await mkdir(path.dirname(target), { recursive: true, mode: DIR_MODE });
    const temp = `${target}${TEMP_MARK}${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(temp, data, { mode: FILE_MODE });
      await utimes(temp, sourceTime, sourceTime);
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
    return { path: target, bytes: data.length };
  }
}
