/**
 * Images in an S3-compatible bucket (AWS S3, R2, MinIO), behind the same port as the output folder:
 * what lets any process of a distributed deployment post a gallery, or serve an image, that another
 * process downloaded. Keys mirror the folder: `<S3_PREFIX><jobId>/pending-review/001.png`, `approved/…`,
 * `rejected/…`, `manifest.json`.
 *
 * An image is checked exactly as on disk, because it is written to disk first: ImageFiles streams,
 * caps and decodes it into OUTPUT_DIR, which is this process's cache of the bucket, and only an image
 * it kept is uploaded. The bucket is the record: an upload that fails removes the cached copy, and a
 * read this cache cannot answer goes to the bucket (and is cached). A review moves the object
 * (CopyObject, then DeleteObject) and the cached file with it.
 *
 * Credentials come from the AWS SDK's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile,
 * an instance role); nothing here reads, holds or logs them. Retries are the SDK's: 3 attempts with its
 * backoff, which treats 503 SlowDown as throttling and waits longer.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import type { S3Config } from '../config.js';
import type { ImageReader, ImageStorage } from '../core/ports.js';
import type { ReviewStatus } from '../core/types.js';
import { DIR_MODE, FILE_MODE, ImageFiles, REVIEW_FOLDERS, TEMP_MARK, type ImageFilesOptions, type StoredImage, type WantedFormat } from './files.js';

export interface S3ImageStoreOptions extends ImageFilesOptions {
  /** merged over the client's configuration (tests: credentials, a quicker retry strategy) */
  client?: Partial<S3ClientConfig>;
}

/** A job id and a file as jobs record them: nothing that could climb out of the job's keys or folder. */
const JOB_ID = /^[\w-]{1,64}$/;
const FILE = /^((pending-review|approved|rejected)\/)?[\w-][\w.-]{0,99}$/;

/** Opens the store and checks, before the bot starts, that the bucket answers with these credentials. */
export async function openS3ImageStore(settings: S3Config, cacheDir: string, options: S3ImageStoreOptions = {}): Promise<S3ImageStore> {
  const store = new S3ImageStore(settings, cacheDir, options);
  try {
    await store.check();
  } catch (error) {
    await store.close();
    throw error;
  }
  return store;
}

export class S3ImageStore implements ImageStorage, ImageReader {
  readonly outputDir: string;
  private readonly cache: ImageFiles;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly maxBytes: number;
  private readonly where: string;

  constructor(settings: S3Config, cacheDir: string, options: S3ImageStoreOptions = {}) {
    this.cache = new ImageFiles(cacheDir, options);
    this.outputDir = this.cache.outputDir;
    this.bucket = settings.bucket;
    this.prefix = settings.prefix;
    this.maxBytes = options.maxBytes ?? 25 * 1024 * 1024;
    // Only the origin is ever shown: an endpoint URL may carry a user and password.
    this.where = settings.endpoint ? ` at ${new URL(settings.endpoint).origin}` : '';
    this.client = new S3Client({
      region: settings.region,
      // R2, MinIO and test servers are addressed by path; virtual hosts need DNS for every bucket.
      ...(settings.endpoint ? { endpoint: settings.endpoint, forcePathStyle: true } : {}),
      maxAttempts: 3,
      // Checksums only where S3 requires them: several S3-compatible stores refuse the SDK's newer
      // default trailers, and an image is decoded whole before it is uploaded anyway.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // A store that stops answering fails the try (retried later), rather than holding a batch forever.
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000, throwOnRequestTimeout: true },
      ...options.client,
    });
  }

  /** Resolves when the bucket exists and these credentials may use it; throws one line otherwise. */
  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      // A HEAD answer has no body, so its status is all there is to say why.
      const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      const why =
        status === 403
          ? "access denied (HTTP 403): check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket's permissions"
          : status === 404
            ? 'no such bucket (HTTP 404)'
            : describeS3Error(error);
      throw new Error(`S3_BUCKET: cannot use bucket ${this.bucket}${this.where}: ${why}`, { cause: error });
    }
  }

  /** The local cache's folder of a job (manifest and images this process wrote or read). */
  jobDir(jobId: string): string {
    return this.cache.jobDir(jobId);
  }

  /**
   * Nothing to adopt: a job's files live in the bucket, whichever folder it began with. That folder is
   * the cache of the process that began it, often on another machine; this process caches in its own.
   */
  adopt(): void {}

  async writeImage(jobId: string, baseName: string, source: AsyncIterable<Uint8Array> | Buffer, want?: WantedFormat): Promise<StoredImage> {
    const stored = await this.cache.writeImage(jobId, baseName, source, want);
    const local = this.cache.locate(jobId, stored.file);
    try {
      await this.put(this.key(jobId, stored.file), await readFile(local), stored.contentType);
    } catch (error) {
      // Not in the bucket, so not kept: a cached copy would show here and nowhere else.
      await rm(local, { force: true });
      throw error;
    }
    return stored;
  }

  async moveTo(jobId: string, file: string, status: ReviewStatus): Promise<string> {
    const target = path.join(REVIEW_FOLDERS[status], path.basename(file));
    if (target === file) return file;
    await this.rename(jobId, file, target);
    await this.cache.moveTo(jobId, file, status).catch(() => rm(this.cache.locate(jobId, file), { force: true }));
    return target;
  }

  async setAside(jobId: string, file: string, name: string): Promise<string> {
    const target = path.join(path.dirname(file), `${name}${path.extname(file)}`);
    if (target === file) return file;
    await this.rename(jobId, file, target);
    await this.cache.setAside(jobId, file, name).catch(() => rm(this.cache.locate(jobId, file), { force: true }));
    return target;
  }

  /** Copies an object to its new key, then deletes the old one (S3 has no rename). */
  private async rename(jobId: string, file: string, target: string): Promise<void> {
    const from = this.key(jobId, file);
    const to = this.key(jobId, target);
    try {
      await this.copy(from, to);
    } catch (error) {
      // Already renamed by an earlier attempt that crashed before saving: the target is there, carry on.
      if (!isMissing(error) || !(await this.has(to))) throw error;
    }
    await this.delete(from);
  }

  async writeManifest(jobId: string, manifest: unknown): Promise<string> {
    // The same bytes in the cache and in the bucket: a local reader and a bucket reader agree.
    const local = await this.cache.writeManifest(jobId, manifest);
    await this.put(this.key(jobId, 'manifest.json'), await readFile(local), 'application/json');
    return this.locate(jobId, 'manifest.json');
  }

  /** Temporary files exist only in the cache: an object appears whole or not at all. */
  sweep(jobId: string, olderThanMs?: number): Promise<number> {
    return this.cache.sweep(jobId, olderThanMs);
  }

  /**
   * Puts an image back where the record says it is, after a review cut off mid-move. A move is a copy
   * then a delete, so a crash can leave the image in the record's folder and the target's both: the
   * record's copy stays and the other goes (an approved folder must hold only approved images).
   */
  async restore(jobId: string, file: string): Promise<boolean> {
    const others = Object.values(REVIEW_FOLDERS)
      .map((folder) => path.join(folder, path.basename(file)))
      .filter((candidate) => candidate !== file);
    let moved = false;
    if (!(await this.has(this.key(jobId, file)))) {
      for (const other of others) {
        if (!(await this.has(this.key(jobId, other)))) continue;
        await this.copy(this.key(jobId, other), this.key(jobId, file));
        moved = true;
        break;
      }
      if (!moved) return false;
    }
    for (const other of others) await this.delete(this.key(jobId, other));
    await this.cache.restore(jobId, file).catch(() => false);
    for (const other of others) await rm(this.cache.locate(jobId, other), { force: true });
    return moved;
  }

  async read(jobId: string, file: string): Promise<Buffer> {
    const key = this.key(jobId, file);
    const local = this.cache.locate(jobId, file);
    const cached = await readFile(local).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (cached) return cached;
    const bytes = await this.get(key, jobId, file);
    // A cache that cannot be written (a full disk) costs a download next time, not this read.
    await this.keep(local, bytes).catch(() => undefined);
    return bytes;
  }

  async size(jobId: string, file: string): Promise<number> {
    const key = this.key(jobId, file);
    const cached = await stat(this.cache.locate(jobId, file)).catch(() => undefined);
    if (cached?.isFile()) return cached.size;
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return head.ContentLength ?? 0;
    } catch (error) {
      throw isMissing(error) ? notFound(jobId, file) : error;
    }
  }

  locate(jobId: string, file: string): string {
    return `s3://${this.bucket}/${this.key(jobId, file)}`;
  }

  /** Closes the client's connections. */
  async close(): Promise<void> {
    this.client.destroy();
  }

  /** `<prefix><jobId>/<file>`; refuses what a job could not have recorded (from an old or altered record). */
  private key(jobId: string, file: string): string {
    const relative = file.split(path.sep).join('/');
    if (!JOB_ID.test(jobId) || !FILE.test(relative)) throw new Error(`not an image of a job: ${JSON.stringify(`${jobId}/${relative}`).slice(0, 120)}`);
    return `${this.prefix}${jobId}/${relative}`;
  }

  private async put(key: string, body: Buffer, contentType: string): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }));
  }

  private async get(key: string, jobId: string, file: string): Promise<Buffer> {
    let answer;
    try {
      answer = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (error) {
      throw isMissing(error) ? notFound(jobId, file) : error;
    }
    const body = answer.Body;
    if (!body) throw new Error(`GetObject ${key} answered without a body`);
    // Only images under the cap are ever uploaded; anything larger is not one of ours.
    if ((answer.ContentLength ?? 0) > this.maxBytes) {
      (body as { destroy?: () => void }).destroy?.();
      throw new Error(`object ${key} is larger than MAX_IMAGE_BYTES (${answer.ContentLength} bytes)`);
    }
    return Buffer.from(await body.transformToByteArray());
  }

  private async copy(from: string, to: string): Promise<void> {
    // x-amz-copy-source is a URL path: each segment encoded, the slashes kept.
    const source = [this.bucket, ...from.split('/')].map(encodeURIComponent).join('/');
    await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: to, CopySource: source }));
  }

  /** Deleting a key that is not there succeeds, as S3 answers it: a repeated move does no harm. */
  private async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  private async has(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return true;
    } catch (error) {
      if (isMissing(error)) return false;
      throw error;
    }
  }

  /** Writes a downloaded object into the cache under a temporary name, then renames it into place. */
  private async keep(local: string, bytes: Buffer): Promise<void> {
    await mkdir(path.dirname(local), { recursive: true, mode: DIR_MODE });
    const temp = `${local}${TEMP_MARK}${randomBytes(4).toString('hex')}`;
    try {
      await writeFile(temp, bytes, { mode: FILE_MODE, flag: 'wx' });
      await rename(temp, local);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }
}

/** NoSuchKey from a GET or a copy, NotFound from a HEAD (whose answer has no body to name it). */
function isMissing(error: unknown): boolean {
  const name = (error as { name?: unknown } | undefined)?.name;
  return name === 'NoSuchKey' || name === 'NotFound';
}

function notFound(jobId: string, file: string): Error {
  return Object.assign(new Error(`no ${file} of job ${jobId} in the bucket`), { code: 'ENOENT' });
}

/** The S3 error's code and HTTP status, never its request's headers (they carry the signature). */
function describeS3Error(error: unknown): string {
  const e = error as { name?: unknown; message?: unknown; $metadata?: { httpStatusCode?: number } } | undefined;
  const status = e?.$metadata?.httpStatusCode;
  const name = typeof e?.name === 'string' ? e.name : 'Error';
  const message = typeof e?.message === 'string' && e.message !== name && e.message !== 'UnknownError' ? `: ${e.message}` : '';
  return `${name}${status ? ` (HTTP ${status})` : ''}${message}`.slice(0, 300);
}
