/**
 * What a chat platform implements to have its jobs delivered: post and edit a progress message, post
 * (and maybe edit) gallery pages; the rest of the lifecycle is the courier's (courier.ts). A platform
 * reports trouble by throwing one of the errors below; anything else it throws is a failure the courier
 * logs and, for a gallery, retries.
 */
import type { z } from 'zod';
import type { DeliveryReport } from '../../core/ports.js';
import type { Job, Requester } from '../../core/types.js';
import type { GallerySummary, ProgressView } from '../../core/views.js';

export type PlatformName = Exclude<Requester['platform'], 'cli'>;

/** Where a finished job's gallery stands, as its progress message tells it. */
export type GalleryState = 'none' | 'posting' | 'posted' | 'blocked' | 'failed';

/** What a progress message shows: the core's view, the review summary once finished, the gallery's state. */
export interface ProgressCard {
  view: ProgressView;
  summary?: GallerySummary;
  gallery: GalleryState;
  /** a finished job's keepers in object storage (S3_BUCKET): links, added as the message goes out */
  delivery?: DeliveryReport;
}

/** One gallery page: the numbers of the images it holds, and where it sits among the pages. */
export interface PageLayout {
  page: number;
  pages: number;
  images: number[];
}

export interface PageStep<T, P> {
  /** the job as it is now (a review may have changed it while earlier pages went out) */
  job: Readonly<Job>;
  target: T;
  layout: PageLayout;
  /** what an earlier attempt recorded for this page (a restart in the middle of it) */
  earlier: P | undefined;
  /** records a step inside the page (e.g. its upload), so a restart does not redo it */
  save: (record: P) => Promise<void>;
}

export interface GalleryPoster<T, P> {
  /** the schema of a page's record in the store */
  readonly page: z.ZodType<P>;
  /** the job's images as pages, by the platform's per-message limits; the same for the same job */
  layout(job: Readonly<Job>, target: T): Promise<PageLayout[]>;
  /** posts a page, continuing from `earlier`; given a complete page's record, posts nothing and returns it */
  post(step: PageStep<T, P>): Promise<P>;
  /** re-renders a page after a review; omitted where the click's own answer does it (Discord) */
  edit?(target: T, page: P, job: Readonly<Job>, layout: PageLayout): Promise<void>;
}

/** `T`: where the progress message is, as stored in `job.chat[name]` — so never a secret. */
export interface DeliveryPlatform<T extends Record<string, unknown>, P = never> {
  readonly name: PlatformName;
  /** read back through this schema, whatever version of this code stored it */
  readonly target: z.ZodType<T>;
  /** shortest time between two edits of one message */
  readonly editIntervalMs: number;
  postProgress(job: Readonly<Job>, card: ProgressCard): Promise<T>;
  editProgress(target: T, job: Readonly<Job>, card: ProgressCard): Promise<void>;
  /** omitted where the progress view shows the images itself (the playground) */
  readonly gallery?: GalleryPoster<T, P>;
  /** an error as it may be logged (no token, no request body) @default the error */
  describeError?(error: unknown): unknown;
}

/** Wait this long before editing this message again (a 429's Retry-After). */
export class RetryAfter extends Error {
  constructor(readonly ms: number) {
    super(`rate limited for ${ms} ms`);
  }
}

/** The message is deleted, or no route we have may edit it: it is not edited again. */
export class MessageGone extends Error {}

/** The bot may not write there (Slack: not in the channel): the gallery waits until the platform calls retry(). */
export class NoAccess extends Error {}
