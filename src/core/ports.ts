/**
 * What the core needs from the outside, as interfaces: the store, the output folder, a logger.
 * src/store implements the first two; pino satisfies the third. Tests and the bench pass their own.
 */
import type { Job, OutputFormat, ProviderName, ReviewStatus } from './types.js';

/** What the engine needs from the job store (src/store/jobs.ts implements it over Keyv). */
export interface JobRepository {
  get(id: string): Promise<Job | undefined>;
  save(job: Job): Promise<void>;
  activeIds(): Promise<string[]>;
  /** daily image tally: reserve within a cap (undefined = over it), give back what was not made */
  reserveImages(tenant: string, day: string, count: number, cap: number): Promise<number | undefined>;
  releaseImages(tenant: string, day: string, count: number): Promise<void>;
  imagesUsed(tenant: string, day: string): Promise<number>;
  /** write-ahead mark around a review's file move, so a crash in between is repaired on start */
  markReview(jobId: string, open: boolean): Promise<void>;
  openReviews(): Promise<string[]>;
}

/** What the engine needs from image storage (src/store/files.ts implements it on disk). */
export interface ImageStorage {
  /** `want`: the format to keep it in, converted when the bytes are another (quality for jpeg and webp) */
  writeImage(
    jobId: string,
    baseName: string,
    source: AsyncIterable<Uint8Array> | Buffer,
    /** `folder: 'final'`: an upscaled image, kept in `final/` beside the review folders */
    want?: { format: OutputFormat; quality?: number; folder?: 'final' },
  ): Promise<{ file: string; width: number; height: number; contentType: string }>;
  moveTo(jobId: string, file: string, status: ReviewStatus): Promise<string>;
  /**
   * Renames an image inside its folder to `<name>.<its extension>` and returns its new path: a
   * rerolled image's file is kept beside the one that takes its slot. Unset: the file stays where it is.
   */
  setAside?(jobId: string, file: string, name: string): Promise<string>;
  writeManifest(jobId: string, manifest: unknown): Promise<string>;
  /** removes what a crash left half-written; `olderThanMs`: only files untouched that long (another process may be writing) */
  sweep(jobId: string, olderThanMs?: number): Promise<number>;
  restore(jobId: string, file: string): Promise<boolean>;
  jobDir(jobId: string): string;
  /** the folder new jobs go to (recorded in each job) */
  readonly outputDir: string;
  /**
   * Delivery of a job's keepers to object storage (S3_BUCKET): links to its approved and upscaled images
   * and its manifest, and what is still waiting to be uploaded. Unset: images stay in the output folder.
   */
  delivery?(job: Readonly<Job>): Promise<DeliveryReport>;
  /** a job recorded with another output folder keeps using it */
  adopt(jobId: string, outputDir: string): void;
}

/**
 * What adapters need to show a job's images, wherever storage keeps them: on disk (src/store/files.ts)
 * or in an S3-compatible bucket (src/store/s3.ts), which the process that downloaded them may not share.
 * `file` is an image's path as its job records it (`pending-review/001.png`).
 */
export interface ImageReader {
  /** The bytes; rejects with an error whose `code` is 'ENOENT' when there is no such file. */
  read(jobId: string, file: string): Promise<Buffer>;
  /** Its size in bytes; rejects as `read` does. */
  size(jobId: string, file: string): Promise<number>;
  /** Where it is, for people: a path on disk, or `s3://bucket/key`. */
  locate(jobId: string, file: string): string;
}

/**
 * Reviews made in other processes (distributed mode), for what shows a job live (the review page): the
 * engine tells only its own process, and a reviewer's page may be served by another.
 */
export interface ReviewFeed {
  /** tells the other processes that `jobId`'s reviews changed */
  publish(jobId: string): Promise<void>;
  /** `listener` hears the id of each job reviewed in another process; returns the unsubscribe */
  subscribe(listener: (jobId: string) => void): () => void;
}

/** A contact sheet: one image of up to 25 numbered tiles (5 × 5), for jobs too big for a gallery. */
export interface SheetImage {
  data: Buffer;
  contentType: string;
  width: number;
  height: number;
}

/** Makes contact sheets from a job's stored images (NSFW-flagged tiles blurred); the adapters post them. */
export interface ContactSheets {
  /** the sheet of these images of the job (at most 25), each tile numbered with its image number */
  render(job: Readonly<Job>, images: readonly number[]): Promise<SheetImage>;
}

/** Where a job's keepers were delivered, for its summary. */
export interface DeliveryReport {
  /** `s3://bucket/prefix/job/` */
  where: string;
  /** presigned GET links, valid `expiresInSeconds`: the manifest's, then each approved (final where made) image's */
  links: { file: string; url: string }[];
  expiresInSeconds: number;
  /** files whose upload failed and is being retried (kept locally meanwhile: never lost) */
  waiting: number;
}

/** Image storage as the composition root hands it out: the engine's port and the adapters'. */
export type ImageStore = ImageStorage & ImageReader & { close?(): Promise<void> };

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

export interface Reviewer {
  id: string;
  name?: string;
}

/** One provider request as the metrics see it. */
export interface CallRecord {
  provider: ProviderName;
  /** `watch`: one wait on the provider's push (status stream, webhook) for a call's end */
  operation: 'submit' | 'status' | 'result' | 'download' | 'watch';
  outcome: 'ok' | 'error';
  /** the error's kind (rate_limited, server, timeout …) when outcome is error */
  kind?: string;
  status?: number;
}

/**
 * One job changed by one process at a time. In one process the ledger's own queue is enough
 * (`undefined`); in distributed mode a Redis lock wraps each change, so two processes recording two
 * batches of one job, or a review beside a batch, never overwrite each other.
 */
export interface JobLocks {
  /** Runs `work` holding the job's lock; waits for it while another process holds it. */
  run<T>(jobId: string, work: () => Promise<T>): Promise<T>;
}

export type Placement = 'admit' | 'wait';

/** Who is placed where, by one atomic step of the admission book. */
export type PlaceResult =
  | { placement: Placement }
  /** the person has `mine` unfinished jobs here already (at or over their limit) */
  | { refused: 'person'; mine: number }
  /** `running` jobs hold every slot and `waiting` fill the queue */
  | { refused: 'full'; running: number; waiting: number };

/** A job as the admission book knows it. */
export interface AdmissionEntry {
  tenant: string;
  userId: string;
  jobId: string;
}

export interface AdmissionCaps {
  /** jobs of one tenant running at once */
  maxRunning: number;
  /** jobs of one tenant waiting behind them */
  maxWaiting: number;
  /** unfinished jobs of one person in one tenant; undefined = no limit */
  maxPerPerson?: number;
}

/**
 * Per tenant, the jobs running (their batches queued at a provider) and the jobs waiting for a running
 * slot; per person, their unfinished jobs. Every method is one atomic step, so that two processes
 * taking commands at once can never both take the last place. In memory in one process
 * (core/admission.ts), in Redis in distributed mode.
 */
export interface AdmissionBook {
  /** Refuses a person at their limit; else admits if a running slot is free; else queues if there is room; else refuses. Records what it placed. */
  place(entry: AdmissionEntry, caps: AdmissionCaps): Promise<PlaceResult>;
  /** A resumed job: running if it was running or a slot is free, else waiting. Idempotent. */
  readmit(entry: AdmissionEntry, wasRunning: boolean, caps: AdmissionCaps): Promise<Placement>;
  /** Forgets a job; moves waiting jobs into the freed running slots and returns their ids, oldest first. */
  remove(entry: AdmissionEntry, caps: AdmissionCaps): Promise<string[]>;
  /** Position among the tenant's waiting jobs (0-based), -1 when not waiting or not known here. */
  waitingIndex(tenant: string, jobId: string): number;
}

/** Where a small file may be fetched from: these hosts (https, public addresses) and origins, under a cap and a time limit. */
export interface FilePolicy {
  hosts: readonly string[];
  origins: readonly string[];
  maxBytes: number;
  timeoutMs: number;
}

/**
 * Fetches a small file (a command's attachment) through the download layer's rules. Rejects with a
 * ProviderError: `invalid` for a URL the policy does not allow (nothing fetched), `refused` for a file
 * over the cap or a redirect elsewhere, `timeout`, or another kind for a failed fetch.
 */
export type FileFetcher = (url: string, policy: FilePolicy) => Promise<Buffer>;
