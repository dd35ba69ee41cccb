/**
 * What the core needs from the outside, as interfaces: the store, the output folder, a logger.
 * src/store implements the first two; pino satisfies the third. Tests and the bench pass their own.
 */
import type { Job, ProviderName, ReviewStatus } from './types.js';

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
  writeImage(
    jobId: string,
    baseName: string,
    source: AsyncIterable<Uint8Array> | Buffer,
  ): Promise<{ file: string; width: number; height: number; contentType: string }>;
  moveTo(jobId: string, file: string, status: ReviewStatus): Promise<string>;
  writeManifest(jobId: string, manifest: unknown): Promise<string>;
  sweep(jobId: string): Promise<number>;
  restore(jobId: string, file: string): Promise<boolean>;
  jobDir(jobId: string): string;
  /** the folder new jobs go to (recorded in each job) */
  readonly outputDir: string;
  /** a job recorded with another output folder keeps using it */
  adopt(jobId: string, outputDir: string): void;
}

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
  operation: 'submit' | 'status' | 'result' | 'download';
  outcome: 'ok' | 'error';
  /** the error's kind (rate_limited, server, timeout …) when outcome is error */
  kind?: string;
  status?: number;
}
