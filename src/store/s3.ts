/**
 * Images in an S3-compatible bucket (AWS S3, R2, MinIO), behind the same port as the output folder:
 * what lets any process of a distributed deployment post a gallery, or serve an image, that another
 * process downloaded, and where a job's keepers are delivered (presigned links in its summary). Keys
 * mirror the folder: `<S3_PREFIX><jobId>/pending-review/001.png`, `approved/…`, `rejected/…`,
 * `final/…` (upscaled), `manifest.json`.
 *
 * An image is checked exactly as on disk, because it is written to disk first: ImageFiles streams,
 * caps and decodes it into OUTPUT_DIR, which is this process's cache of the bucket, and only an image
 * it kept is uploaded. A read this cache cannot answer goes to the bucket (and is cached). A review
 * moves the object (CopyObject, then DeleteObject) and the cached file with it.
 *
 * Never lost: a write that still fails after the SDK's retries (an image, a review's move, the
 * manifest) does not fail the download or the review. The cached copy stays, the write waits in the
 * job's outbox (s3-outbox.ts: a file beside the cached images) and is tried again in the background
 * until it goes through, also after a restart; `delivery(job).waiting` counts what is still waiting.
 *
 * Credentials come from the AWS SDK's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile,
 * an instance role); nothing here reads, holds or logs them. Retries are the SDK's: 3 attempts with its
 * backoff, which treats 503 SlowDown as throttling and waits longer; then the outbox's.
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
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { DEFAULT_S3_LINK_EXPIRES, type S3Config } from '../config.js';
import { silentLogger, type DeliveryReport, type ImageReader, type ImageStorage, type Logger } from '../core/ports.js';
import type { Job, ReviewStatus } from '../core/types.js';
import { DIR_MODE, FILE_MODE, FINAL_FOLDER, ImageFiles, REVIEW_FOLDERS, TEMP_MARK, type ImageFilesOptions, type StoredImage, type WantedFormat } from './files.js';
import { OutboxGone, S3Outbox, type OutboxEntry } from './s3-outbox.js';

export interface S3ImageStoreOptions extends ImageFilesOptions {
  /** merged over the client's configuration (tests: credentials, a quicker retry strategy) */
  client?: Partial<S3ClientConfig>;
  /** where a write that failed after the SDK's retries is reported (once, with its key) @default silent */
  logger?: Logger;
  /** wait before a failed write is tried again, doubled at each further failure @default 5000 */
  retryBaseMs?: number;
  /** the longest wait between two tries of a failed write @default 300000 (5 minutes) */
  retryMaxMs?: number;
}

/** A job id and a file as jobs record them: nothing that could climb out of the job's keys or folder. */
const JOB_ID = /^[\w-]{1,64}$/;
const FILE = new RegExp(`^((${[...Object.values(REVIEW_FOLDERS), FINAL_FOLDER].join('|')})/)?[\\w-][\\w.-]{0,99}$`);

/**
 * Bytes of one part of a multipart upload: S3's smallest. An image at or below it is one PutObject;
 * above it (an upscaled PNG can reach MAX_IMAGE_BYTES) it goes up in parts, four at a time, so a
 * dropped connection costs the SDK one part's retry rather than the whole image, and no one request
 * runs for long on a slow link (each has the request timeout below).
 */
const PART_SIZE = 5 * 1024 * 1024;

const TYPES_BY_EXTENSION: Record<string, string> = {
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.webp': 'image/webp',
  '.json': 'application/json',
};

/**
 * Opens the store and checks, before the bot starts, that the bucket answers with these credentials;
 * then resumes the outboxes a previous run left in the cache folder (their writes are tried at once).
 */
export async function openS3ImageStore(settings: S3Config, cacheDir: string, options: S3ImageStoreOptions = {}): Promise<S3ImageStore> {
  const store = new S3ImageStore(settings, cacheDir, options);
  try {
    await store.check();
    await store.resume();
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
  private readonly linkExpires: number;
  private readonly logger: Logger;
  private readonly outbox: S3Outbox;

  constructor(settings: S3Config, cacheDir: string, options: S3ImageStoreOptions = {}) {
    this.cache = new ImageFiles(cacheDir, options);
    this.outputDir = this.cache.outputDir;
    this.bucket = settings.bucket;
    this.prefix = settings.prefix;
    this.maxBytes = options.maxBytes ?? 25 * 1024 * 1024;
    this.linkExpires = settings.linkExpiresSeconds ?? DEFAULT_S3_LINK_EXPIRES;
    this.logger = options.logger ?? silentLogger;
    // Only the origin is ever shown: an endpoint URL may carry a user and password.
    this.where = settings.endpoint ? ` at ${new URL(settings.endpoint).origin}` : '';
    this.client = new S3Client({
      region: settings.region,
      // R2, MinIO and test servers are addressed by path; virtual hosts need DNS for every bucket.
      ...(settings.endpoint ? { endpoint: settings.endpoint, forcePathStyle: true } : {}),
      maxAttempts: 3,
      // Checksums only where S3 requires them: several S3-compatible stores (R2, MinIO, s3rver) refuse
      // the SDK's newer default, an aws-chunked body with a CRC trailer, and a multipart upload then
      // hangs; an image is decoded whole before it is uploaded anyway.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // A store that stops answering fails the try (retried later), rather than holding a batch forever.
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000, throwOnRequestTimeout: true },
      ...options.client,
    });
    this.outbox = new S3Outbox({
      jobDir: (jobId) => this.cache.jobDir(jobId),
      attempt: (jobId, entry) => this.attempt(jobId, entry),
      validFile: (file) => FILE.test(file),
      keyOf: (jobId, file) => this.key(jobId, file),
      describeError: describeS3Error,
      logger: this.logger,
      ...(options.retryBaseMs !== undefined ? { retryBaseMs: options.retryBaseMs } : {}),
      ...(options.retryMaxMs !== undefined ? { retryMaxMs: options.retryMaxMs } : {}),
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

  /** Loads the outboxes found in the cache folder; their writes are tried at once, in the background. */
  async resume(): Promise<number> {
    const found = await this.outbox.resume(this.cache.outputDir);
    if (found > 0) this.logger.warn({ waiting: found }, 'S3 writes left waiting by an earlier run; retrying them');
    return found;
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

  async writeImage(
    jobId: string,
    baseName: string,
    source: AsyncIterable<Uint8Array> | Buffer,
    want?: WantedFormat,
  ): Promise<StoredImage> {
    const stored = await this.cache.writeImage(jobId, baseName, source, want);
    // The key is the file ImageFiles kept (`final/002.png` for an upscaled image), whatever was asked.
    await this.upload(jobId, stored.file, stored.contentType);
    return stored;
  }

  async moveTo(jobId: string, file: string, status: ReviewStatus): Promise<string> {
    const target = path.join(REVIEW_FOLDERS[status], path.basename(file));
    if (target === file) return file;
    await this.relocate(jobId, file, target, () => this.cache.moveTo(jobId, file, status));
    return target;
  }

  async setAside(jobId: string, file: string, name: string): Promise<string> {
    const target = path.join(path.dirname(file), `${name}${path.extname(file)}`);
    if (target === file) return file;
    await this.relocate(jobId, file, target, () => this.cache.setAside(jobId, file, name));
    return target;
  }

  /**
   * Moves an image's object (S3 has no rename: a copy, then a delete) and its cached copy. A move
   * that fails after the SDK's retries is finished later from the outbox, and meanwhile the cached copy
   * is where the record says: the review stands. Only an image that is nowhere (no object at either
   * key, no upload of it waiting here) fails the move.
   */
  private async relocate(jobId: string, file: string, target: string, moveCached: () => Promise<unknown>): Promise<void> {
    const from = this.key(jobId, file);
    const to = this.key(jobId, target);
    const cachedMove = () => moveCached().catch(() => rm(this.cache.locate(jobId, file), { force: true }));
    // Its upload is still waiting: the image is only in this cache, so it moves here and its entry follows.
    if (this.outbox.waiting(jobId) > 0) {
      const followed = await this.outbox.update(jobId, async (entries) => {
        const entry = entries.find((e) => e.op !== 'delete' && e.file === file);
        if (!entry) return false;
        follow(entries, entry, target);
        await cachedMove();
        return true;
      });
      if (followed) return;
    }
    await this.claim(jobId, target);
    try {
      const missing = await this.copyUnlessMissing(from, to);
      if (missing) throw missing;
    } catch (error) {
      if (isMissing(error)) throw error;
      // Uploaded from the cached copy when there is one (reads are served from it meanwhile); else
      // copied in the bucket once it answers again.
      const cached = await stat(this.cache.locate(jobId, file)).then((info) => info.isFile(), () => false);
      const entry: Pending = cached
        ? { op: 'put', file: target, contentType: contentTypeOf(target), remove: [file] }
        : { op: 'copy', from: file, file: target, remove: [file] };
      await this.defer(jobId, entry, error, cached ? cachedMove : undefined);
      return;
    }
    try {
      await this.delete(from);
    } catch (error) {
      // The image is at its new key; the old one goes later (an approved folder holds only approved images).
      await this.defer(jobId, { op: 'delete', file, remove: [] }, error);
    }
    await cachedMove();
  }

  async writeManifest(jobId: string, manifest: unknown): Promise<string> {
    // The same bytes in the cache and in the bucket: a local reader and a bucket reader agree.
    await this.cache.writeManifest(jobId, manifest);
    await this.upload(jobId, 'manifest.json', 'application/json');
    return this.locate(jobId, 'manifest.json');
  }

  /**
   * Where a job's keepers are: presigned GET links (valid S3_LINK_EXPIRES) to its manifest, then to
   * each approved image, its upscaled version where one was made. A link to a file still waiting in
   * the outbox works once the upload is through; `waiting` says how many are.
   */
  async delivery(job: Readonly<Job>): Promise<DeliveryReport> {
    const where = `s3://${this.bucket}/${this.key(job.id, 'manifest.json').slice(0, -'manifest.json'.length)}`;
    const files = ['manifest.json', ...job.images.filter((image) => image.review.status === 'approved').map((image) => image.final?.file ?? image.file)];
    const links: DeliveryReport['links'] = [];
    for (const file of files) {
      // A record from an older or altered job may name what no job could have: it gets no link.
      if (typeof file !== 'string' || !FILE.test(file.split(path.sep).join('/'))) continue;
      const command = new GetObjectCommand({ Bucket: this.bucket, Key: this.key(job.id, file) });
      links.push({ file, url: await getSignedUrl(this.client, command, { expiresIn: this.linkExpires }) });
    }
    return { where, links, expiresInSeconds: this.linkExpires, waiting: this.outbox.waiting(job.id) };
  }

  /** Tries every waiting write now; resolves with how many still wait (the timer does this on its own). */
  retryWaiting(): Promise<number> {
    return this.outbox.retryAll();
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
    // Moved while its upload was waiting: the move happened in this cache only, and is undone there.
    if (this.outbox.waiting(jobId) > 0) {
      const followed = await this.outbox.update(jobId, async (entries) => {
        const entry = entries.find((e) => e.op !== 'delete' && others.includes(e.file));
        if (!entry) return false;
        follow(entries, entry, file);
        await this.cache.restore(jobId, file).catch(() => false);
        return true;
      });
      if (followed) return true;
    }
    let moved = false;
    if (!(await this.has(this.key(jobId, file)))) {
      for (const other of others) {
        if (!(await this.has(this.key(jobId, other)))) continue;
        await this.claim(jobId, file);
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
    const local = this.cache.locate(jobId, file);
    const cached = await readFile(local).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (cached) return cached;
    const bytes = await this.fromBucket(jobId, file, (key) => this.get(key, jobId, file));
    // A cache that cannot be written (a full disk) costs a download next time, not this read.
    await this.keep(local, bytes).catch(() => undefined);
    return bytes;
  }

  async size(jobId: string, file: string): Promise<number> {
    const cached = await stat(this.cache.locate(jobId, file)).catch(() => undefined);
    if (cached?.isFile()) return cached.size;
    return this.fromBucket(jobId, file, async (key) => {
      try {
        const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
        return head.ContentLength ?? 0;
      } catch (error) {
        throw isMissing(error) ? notFound(jobId, file) : error;
      }
    });
  }

  /**
   * Asks the bucket for a file's object; while a copy to it waits in the outbox (moved by a review
   * that could not reach the bucket), the object it is copied from answers first.
   */
  private async fromBucket<T>(jobId: string, file: string, ask: (key: string) => Promise<T>): Promise<T> {
    const key = this.key(jobId, file);
    const pending = this.outbox.entries(jobId).find((entry) => entry.op === 'copy' && entry.file === file)?.from;
    if (pending) {
      try {
        return await ask(this.key(jobId, pending));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    return ask(key);
  }

  locate(jobId: string, file: string): string {
    return `s3://${this.bucket}/${this.key(jobId, file)}`;
  }

  /** Stops the outbox's timer (what still waits is resumed by the next start) and closes the client's connections. */
  async close(): Promise<void> {
    const stopped = this.outbox.close();
    // Destroyed first, so that a try under way fails at once instead of holding close() to its timeout.
    this.client.destroy();
    await stopped;
  }

  /** `<prefix><jobId>/<file>`; refuses what a job could not have recorded (from an old or altered record). */
  private key(jobId: string, file: string): string {
    const relative = file.split(path.sep).join('/');
    if (!JOB_ID.test(jobId) || !FILE.test(relative)) throw new Error(`not an image of a job: ${JSON.stringify(`${jobId}/${relative}`).slice(0, 120)}`);
    return `${this.prefix}${jobId}/${relative}`;
  }

  /**
   * Uploads a cached file. One that fails after the SDK's retries waits in the outbox; the cached
   * copy stays, and the caller (a download, a manifest write) goes on as if it had gone through.
   */
  private async upload(jobId: string, file: string, contentType: string): Promise<void> {
    const key = this.key(jobId, file);
    const bytes = await readFile(this.cache.locate(jobId, file));
    await this.claim(jobId, file);
    try {
      await this.put(key, bytes, contentType);
    } catch (error) {
      await this.defer(jobId, { op: 'put', file, contentType, remove: [] }, error);
      return;
    }
    // Up to date now: an earlier upload of the same file still waiting (a manifest) has nothing left to do.
    if (this.outbox.waiting(jobId) > 0) {
      await this.outbox.update(jobId, (entries) => {
        const entry = entries.find((e) => e.op === 'put' && e.file === file);
        if (!entry) return;
        // What it was to delete once written (where the file was before a move) still goes.
        const { since, attempts, error } = entry;
        entries.splice(entries.indexOf(entry), 1, ...entry.remove.map((old): OutboxEntry => ({ op: 'delete', file: old, remove: [], since, attempts, error })));
      });
    }
  }

  /** A new object is about to be written at `file`: a delete of that key still waiting must not remove it. */
  private async claim(jobId: string, file: string): Promise<void> {
    if (this.outbox.entries(jobId).length === 0) return;
    await this.outbox.update(jobId, (entries) => {
      for (const entry of entries) entry.remove = entry.remove.filter((old) => old !== file);
      const stale = entries.filter((entry) => entry.op === 'delete' && entry.file === file);
      for (const entry of stale) entries.splice(entries.indexOf(entry), 1);
    });
  }

  /**
   * Records a write that failed after the SDK's retries in the job's outbox (merged with one waiting
   * for the same file), runs `moveCached` under the outbox's lock, and logs it: once per file, with
   * its key and the error's code, never a header.
   */
  private async defer(jobId: string, entry: Pending, error: unknown, moveCached?: () => Promise<unknown>): Promise<void> {
    const reason = describeS3Error(error);
    const added = await this.outbox.update(jobId, async (entries) => {
      const same = entries.find((e) => (e.op === 'delete') === (entry.op === 'delete') && e.file === entry.file);
      if (same) {
        same.remove = [...new Set([...same.remove, ...entry.remove])];
        same.op = entry.op;
        same.error = reason;
        if (entry.from) same.from = entry.from;
        else delete same.from;
        if (entry.contentType) same.contentType = entry.contentType;
        else delete same.contentType;
      } else {
        entries.push({ ...entry, since: new Date().toISOString(), attempts: 1, error: reason });
      }
      await moveCached?.();
      return !same;
    });
    if (added) {
      this.logger.warn(
        { jobId, key: this.key(jobId, entry.file), op: entry.op, error: reason },
        entry.op === 'delete'
          ? 'S3 delete failed after the SDK retries; tried again in the background'
          : 'S3 upload failed after the SDK retries; kept in the local cache and tried again in the background',
      );
    }
  }

  /** One try of an outbox entry (the outbox holds the job's lock meanwhile). */
  private async attempt(jobId: string, entry: Readonly<OutboxEntry>): Promise<void> {
    const key = this.key(jobId, entry.file);
    if (entry.op === 'put') {
      const bytes = await readFile(this.cache.locate(jobId, entry.file)).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') throw new OutboxGone(`the cached copy of ${entry.file} is gone`);
        throw error;
      });
      await this.put(key, bytes, entry.contentType ?? contentTypeOf(entry.file));
    } else if (entry.op === 'copy' && entry.from) {
      // Not there yet (another process's upload of it may still be waiting): tried again later.
      const missing = await this.copyUnlessMissing(this.key(jobId, entry.from), key);
      if (missing) throw missing;
    }
    for (const old of entry.op === 'delete' ? [entry.file] : entry.remove) await this.delete(this.key(jobId, old));
  }

  private async put(key: string, body: Buffer, contentType: string): Promise<void> {
    await new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: key, Body: body, ContentType: contentType },
      partSize: PART_SIZE,
      queueSize: 4,
    }).done();
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

  /**
   * Copies `from` to `to`. Resolves with the NoSuchKey error when `from` is not there and `to` is not
   * either (the image is nowhere); a `to` already there is an earlier attempt's copy, and done.
   */
  private async copyUnlessMissing(from: string, to: string): Promise<Error | undefined> {
    try {
      await this.copy(from, to);
    } catch (error) {
      if (!isMissing(error)) throw error;
      if (!(await this.has(to))) return error as Error;
    }
    return undefined;
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

/** An outbox entry as the store records it; the outbox adds when, how often and why it failed. */
type Pending = Pick<OutboxEntry, 'op' | 'file' | 'remove'> & Partial<Pick<OutboxEntry, 'from' | 'contentType'>>;

/** Points a waiting entry at the file's new place: what it writes moves, the old key is deleted once it is written. */
function follow(entries: OutboxEntry[], entry: OutboxEntry, target: string): void {
  entry.remove = [...new Set([...entry.remove, entry.file])].filter((old) => old !== target);
  entry.file = target;
  // A leftover delete of the target's key would remove what this entry writes.
  for (const other of entries) if (other !== entry) other.remove = other.remove.filter((old) => old !== target);
  for (const stale of entries.filter((e) => e.op === 'delete' && e.file === target)) entries.splice(entries.indexOf(stale), 1);
}

function contentTypeOf(file: string): string {
  return TYPES_BY_EXTENSION[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
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
