/**
 * The engine: accepts requests, persists jobs, plans and schedules their batches, has each batch run
 * against its provider (batch-runner.ts) and applies what happens to it through the batch machine
 * (batch-state.ts), resumes unfinished jobs after a restart, and reviews images. Adapters only call
 * this and render its events.
 *
 * Every change to a job goes through the ledger's `change()` (ledger.ts): under the job's lock, from
 * its current record to a new one. Records are never edited in place, and are frozen, so what the
 * engine hands out (events, activeJobs) is a snapshot that stays as it was given.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { Admission, type AdmissionLimits, type TenantCap } from './admission.js';
import type { BatchTicket, Dispatcher } from './dispatch.js';
import { BatchRunner, type ImageCache } from './batch-runner.js';
import { backoff, restart, type BatchEvent, type Decision, type RetrySettings } from './batch-state.js';
import { delay } from './delay.js';
import { UserError } from './errors.js';
import { advance, cancelJob, failJob, finishJob, missingImages, readyToFinish, rerollImage, retryFailed, unmadeImages, upscalable, upscaleImages } from './job-state.js';
import { copy, JobLedger, type ChangeOptions } from './ledger.js';
import { freeze } from './snapshot.js';
import { planJob, randomSeed } from './planner.js';
import {
  silentLogger,
  type AdmissionBook,
  type CallRecord,
  type DeliveryReport,
  type ImageStorage,
  type JobLocks,
  type JobRepository,
  type Logger,
  type Placement,
  type Reviewer,
} from './ports.js';
import { computeProgress, isJobFinished } from './progress.js';
import { maxPerCall, type Provider } from './provider.js';
import type { Rate } from './rate.js';
import { LocalDispatcher, type LaneOptions } from './scheduler.js';
import type { TenantSettings } from './settings.js';
import { plural } from './text.js';
import type { ImagineRequest, Job, ProgressEvent, ProviderName, Requester, ReviewStatus } from './types.js';

export type { CallRecord, ImageStorage, JobRepository, Logger, Reviewer } from './ports.js';
export type { CachedImage, ImageCache, ImageIdentity } from './batch-runner.js';
export type { ChangeOptions } from './ledger.js';
export { isJobFinished } from './progress.js';

export interface EngineSettings extends AdmissionLimits, RetrySettings {
  lanes: Partial<Record<ProviderName, LaneOptions>>;
  tenantRate?: Rate;
  /** USD per image by model id */
  prices: Record<string, number>;
}

export interface EngineDeps {
  jobs: JobRepository;
  files: ImageStorage;
  providers: Partial<Record<ProviderName, Provider>>;
  settings: EngineSettings;
  logger?: Logger;
  now?: () => number;
  random?: () => number;
  /**
   * Distributed mode: where batches queue and run (BullMQ), the lock that orders changes to one job
   * across processes, and the shared admission book. Unset: this process alone, in memory.
   */
  dispatcher?: Dispatcher;
  locks?: JobLocks;
  book?: AdmissionBook;
  /** images already delivered, served instead of paying for the same call again (CACHE=off: unset) */
  cache?: ImageCache;
  /**
   * Per-tenant settings (/settings): the plan's largest job and the tenant's daily cap apply at
   * submit, the plan's calls in flight in the local scheduler. Unset: the config's limits for all.
   */
  tenantSettings?: TenantSettings;
}

/** How long a process that promotes a waiting job looks for it while its submit is still saving it. */
const PROMOTE_LOOKUPS = 40;
/** A half-written file untouched this long was left by a dead process (distributed mode). */
const SHARED_SWEEP_AGE_MS = 30 * 60_000;
/** How often waitFor reads a job another process may finish (distributed mode). */
const SHARED_WAIT_POLL_MS = 250;

type EngineEvents = {
  call: [CallRecord];
  images: [{ provider: ProviderName; count: number }];
  /** the job as of this event: a frozen snapshot, which later changes leave as it is */
  progress: [ProgressEvent, Readonly<Job>];
  finished: [Job];
  /** images of a job were reviewed (by a button, the review page, the CLI): the job after, the images, who */
  reviewed: [Job, number[], Reviewer];
};

/**
 * How a batch step is saved: its request id and the end of a try at once (a restart relies on them),
 * with the manifest when the batch fails; the rest with the next save (a restart redoes it). A done
 * batch leaves the manifest to the job's end: a whole file per batch costs more than the few calls
 * it would save a reader after a crash.
 */
function saving(event: BatchEvent, decision: Decision): ChangeOptions {
  if (decision.kind === 'fail') return { manifest: true };
  if (event.type === 'submitted' || event.type === 'error') return {};
  if (decision.kind === 'done' || decision.kind === 'retry' || decision.kind === 'cancel') return {};
  return { durable: false };
}

function newJobId(now: number): string {
  const day = new Date(now).toISOString().slice(0, 10).replace(/-/g, '');
  return `${day}-${randomBytes(5).toString('hex').slice(0, 8)}`;
}

export class Engine extends EventEmitter<EngineEvents> {
  private readonly dispatcher: Dispatcher;
  /** resolves once the dispatcher takes tickets */
  private readonly started: Promise<void>;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly random: () => number;
  /** unfinished jobs, and the one way any job changes */
  private readonly ledger: JobLedger;
  private readonly admission: Admission;
  private readonly runner: BatchRunner;
  /** tasks of a job currently executing, so a job finishes only when the last one settles */
  private readonly running = new Map<string, number>();
  private stopping = false;
  private readonly finishing = new Set<string>();
  /** finished jobs being set up to run again (retry, reroll): one at a time per job */
  private readonly reopening = new Set<string>();
  /** jobs whose end could not be saved yet (store or disk errors), retried until it is */
  private readonly unsaved = new Map<string, { attempts: number; error: string }>();
  /** callers of waitFor, by job */
  private readonly waiters = new Map<string, ((job: Job) => void)[]>();

  constructor(private readonly deps: EngineDeps) {
    super();
    this.log = deps.logger ?? silentLogger;
    this.now = deps.now ?? Date.now;
    this.random = deps.random ?? Math.random;
    this.ledger = new JobLedger({ jobs: deps.jobs, files: deps.files, log: this.log, now: this.now, ...(deps.locks ? { locks: deps.locks } : {}) });
    const lanes: Record<string, LaneOptions> = {};
    for (const name of Object.keys(deps.providers) as ProviderName[]) {
      lanes[name] = deps.settings.lanes[name] ?? { concurrency: 4 };
    }
    this.dispatcher =
      deps.dispatcher ??
      new LocalDispatcher({
        lanes,
        tenantRate: deps.settings.tenantRate,
        ...(deps.tenantSettings ? { tenantConcurrency: (tenant: string) => deps.tenantSettings!.callsOf(tenant) } : {}),
        now: this.now,
        onTaskError: (error, task) => this.log.error({ err: error, task: task.key }, 'batch task failed unexpectedly'),
      });
    this.admission = new Admission(deps.settings, deps.jobs, deps.book);
    this.runner = new BatchRunner({
      recorder: {
        job: async (id) => this.ledger.current(id) ?? (this.ledger.shared ? await this.ledger.find(id) : undefined),
        record: (id, batchIndex, event) => this.record(id, batchIndex, event),
        call: (record) => void this.emit('call', record),
      },
      providers: deps.providers,
      files: deps.files,
      gate: this.dispatcher,
      settings: deps.settings,
      log: this.log,
      now: this.now,
      ...(deps.cache ? { cache: deps.cache } : {}),
    });
    this.started = this.dispatcher.start((ticket, signal, release) => this.runTask(ticket, signal, release));
    this.started.catch((error: unknown) => this.log.error({ err: error }, 'the batch dispatcher did not start'));
  }

  /** Resolves once batches can be queued (distributed mode: the queues are open). */
  ready(): Promise<void> {
    return this.started;
  }

  /** Per-tenant settings, when this bot keeps them. */
  get tenantSettings(): TenantSettings | undefined {
    return this.deps.tenantSettings;
  }

  get providerNames(): ProviderName[] {
    return Object.keys(this.deps.providers) as ProviderName[];
  }

  // ── requests ──────────────────────────────────────────────────────────────────────────────

  /** Accepts a validated request: persists the job and queues its batches. Answers fast. */
  async submit(request: ImagineRequest, requester: Requester): Promise<Job> {
    if (this.stopping) throw new UserError('queue_full', 'The bot is restarting; try again in a few seconds.');
    if (request.prompts && (request.prompts.length === 0 || request.prompts.reduce((sum, entry) => sum + entry.count, 0) !== request.count)) {
      throw new RangeError('a prompt list must have entries whose counts add up to the request count');
    }
    const provider = this.deps.providers[request.provider];
    if (!provider) {
      throw new UserError(
        'provider_unavailable',
        `Provider \`${request.provider}\` is not configured on this bot; available: ${this.providerNames.join(', ')}.`,
      );
    }
    if (request.loras?.length) {
      const refusal = provider.loraSupport ? provider.loraSupport(request.model, request.loras) : `Provider \`${provider.name}\` takes no LoRAs.`;
      if (refusal !== undefined) throw new UserError('invalid_option', refusal);
    }
    // The tenant's plan and daily cap, read now (and so fresh in the scheduler's cache when its batches queue).
    const limits = await this.deps.tenantSettings?.limits(requester.tenant);
    if (limits && request.count > limits.maxImagesPerJob) {
      throw new UserError(
        'quota',
        `This job asks for ${plural(request.count, 'image')}, but the ${limits.plan} plan allows at most ${limits.maxImagesPerJob} per job here; ` +
          `ask for ${limits.maxImagesPerJob} or fewer.`,
      );
    }
    const tenantCap: TenantCap | undefined = limits ? { ...(limits.dailyImages !== undefined ? { daily: limits.dailyImages } : {}) } : undefined;
    const now = this.now();
    const id = newJobId(now);
    const seed = request.seed ?? randomSeed(this.random);
    const price = this.deps.settings.prices[request.model];
    // A draft costs what the provider bills for its small size (fal bills by the megapixel; Replicate's flux per image).
    const factor = request.draft ? (provider.draftPriceFactorFor?.(request.model) ?? provider.draftPriceFactor ?? 1) : 1;
    const job = freeze<Job>({
      id,
      createdAt: new Date(now).toISOString(),
      updatedAt: new Date(now).toISOString(),
      requester,
      request: { ...request, seed },
      // Only a seed the requester chose is looked up in the image cache (a drawn one is new by design).
      ...(request.seed !== undefined ? { seedGiven: true } : {}),
      state: 'queued',
      batches: planJob(request, maxPerCall(provider, request.model), seed),
      images: [],
      ...(price !== undefined ? { estimatedCostUsd: round(request.count * price * factor, 4) } : {}),
      ...(price !== undefined && request.draft ? { fullSizeCostUsd: round(request.count * price, 4) } : {}),
      outputDir: this.deps.files.outputDir,
    });
    await this.admission.reserveImages(requester.tenant, request.count, now, tenantCap);
    // Held before it is placed: a job finishing meanwhile may promote this one, and must find it.
    this.ledger.hold(job);
    let placement: Placement | undefined;
    let saved: Readonly<Job>;
    try {
      // One atomic step of the book (across processes in distributed mode): two requests arriving
      // together cannot both take the last place.
      placement = await this.admission.place(requester, id);
      saved = await this.ledger.create(job);
    } catch (error) {
      this.ledger.release(id);
      if (placement !== undefined) await this.admission.remove(job).catch(() => []);
      await this.admission.releaseImages(requester.tenant, job.createdAt, request.count, tenantCap);
      throw error;
    }
    this.log.info({ job: id, tenant: requester.tenant, count: request.count, provider: request.provider, placement }, 'job accepted');
    this.emitProgress(saved);
    if (placement === 'admit') await this.enqueueBatches(saved);
    return copy(saved);
  }

  /** Cancels a job: waiting batches are dropped, running ones cancelled at the provider. */
  async cancel(jobId: string, by: Reviewer): Promise<Job> {
    const job = await this.ledger.load(jobId);
    if (isJobFinished(job)) throw new UserError('already_finished', `Job ${jobId} has already finished (${job.state}).`);
    // Queued on the job's lock before anything is aborted: what an aborted call reports is applied
    // after it, and so taken for a cancellation, not a failure.
    const marked = this.ledger.change(jobId, (j) => (isJobFinished(j) ? undefined : cancelJob(j, by.name ?? by.id, this.now())));
    await this.dispatcher.cancelJob(jobId);
    await marked;
    this.log.info({ job: jobId, by: by.id }, 'job canceled');
    await this.maybeFinish(jobId);
    return copy(await this.ledger.load(jobId));
  }

  /** Approves, rejects or resets one image: moves the file, then saves store and manifest. */
  review(jobId: string, imageIndex: number, status: ReviewStatus, by: Reviewer): Promise<Job> {
    return this.reviewMany(jobId, [imageIndex], status, by);
  }

  /**
   * Approves, rejects or resets several images of a job at once ("Approve all pending", "Review by
   * number", the review page's bulk actions): every file is moved, then store and manifest are saved
   * once. A number the job does not have refuses the whole request before anything moves. Emits
   * `reviewed` (the job, the images, who) so every place showing the job follows, wherever the review
   * was made.
   */
  async reviewMany(jobId: string, imageIndexes: readonly number[], status: ReviewStatus, by: Reviewer): Promise<Job> {
    const wanted = [...new Set(imageIndexes)].sort((a, b) => a - b);
    // Images that are not there are refused before the write-ahead mark: nothing will move.
    const missing = (job: Readonly<Job>) => wanted.filter((n) => !job.images.some((img) => img.index === n));
    const refuse = (gone: number[]) =>
      new UserError('not_found', gone.length === 1 ? `Image ${gone[0]} is not part of job ${jobId}.` : `Images ${gone.join(', ')} are not part of job ${jobId}.`);
    const before = missing(await this.ledger.load(jobId));
    if (before.length > 0) throw refuse(before);
    if (wanted.length === 0) return copy(await this.ledger.load(jobId));
    await this.deps.jobs.markReview(jobId, true);
    const job = await this.ledger.edit(
      jobId,
      async (j) => {
        const gone = missing(j);
        if (gone.length > 0) throw refuse(gone);
        const at = this.iso();
        for (const image of j.images) {
          if (!wanted.includes(image.index)) continue;
          image.file = await this.deps.files.moveTo(jobId, image.file, status);
          image.review = status === 'pending' ? { status } : { status, by: by.name ?? by.id, at };
        }
      },
      { manifest: true },
    );
    await this.deps.jobs.markReview(jobId, false);
    const which = wanted.length === 1 ? { image: wanted[0] } : { images: wanted.length };
    this.log.info({ job: jobId, ...which, status, by: by.id }, wanted.length === 1 ? 'image reviewed' : 'images reviewed');
    const reviewed = copy(job);
    this.emit('reviewed', copy(job), wanted, by);
    return reviewed;
  }

  /**
   * "Retry failed": runs a finished job again for exactly the images it wanted and never got, each
   * with the seed it would have had, into the same slots; delivered images are never made again. The
   * images are reserved against today's caps and the job takes a place like a new one (a refusal is
   * one line, and changes nothing). Whether `by` may do it is the adapter's check (actions.ts mayAct).
   */
  async retryFailed(jobId: string, by: Reviewer): Promise<Job> {
    return this.oneAtATime(jobId, () => this.retryNow(jobId, by));
  }

  private async retryNow(jobId: string, by: Reviewer): Promise<Job> {
    const job = await this.ledger.load(jobId);
    this.reopenable(job);
    const missing = missingImages(job).length;
    if (missing === 0) throw new UserError('not_found', `Job ${jobId} has no failed images to retry.`);
    const provider = this.deps.providers[job.request.provider]!;
    const { job: next, images } = retryFailed(job, maxPerCall(provider, job.request.model), by.name ?? by.id, this.now());
    const reopened = await this.reopen(next, images);
    this.log.info({ job: jobId, images, by: by.id }, 'retrying failed images');
    return reopened;
  }

  /**
   * "Reroll": a rejected image gets one new call with a new seed (drawn, and recorded), whose result
   * takes its gallery slot. The rejected file is kept, renamed (`rejected/003.reroll-1.png`), and
   * listed under the new image's `rerolledFrom`. Quotas and places as for retryFailed.
   */
  async reroll(jobId: string, imageIndex: number, by: Reviewer): Promise<Job> {
    return this.oneAtATime(jobId, () => this.rerollNow(jobId, imageIndex, by));
  }

  private async rerollNow(jobId: string, imageIndex: number, by: Reviewer): Promise<Job> {
    const job = await this.ledger.load(jobId);
    this.reopenable(job);
    const image = job.images.find((img) => img.index === imageIndex);
    if (!image) throw new UserError('not_found', `Image ${imageIndex} is not part of job ${jobId}.`);
    if (image.review.status !== 'rejected') {
      throw new UserError('invalid_option', `Image ${imageIndex} is not rejected; only a rejected image can be rerolled.`);
    }
    const limits = await this.tenantCap(job);
    const now = this.now();
    await this.admission.reserveImages(job.requester.tenant, 1, now, limits);
    let keptAs = image.file;
    try {
      const name = `${image.file.split('/').pop()!.replace(/\.[^.]+$/, '')}.reroll-${(image.rerolledFrom?.length ?? 0) + 1}`;
      if (this.deps.files.setAside) keptAs = await this.deps.files.setAside(jobId, image.file, name);
    } catch (error) {
      await this.admission.releaseImages(job.requester.tenant, new Date(now).toISOString(), 1, limits);
      throw error;
    }
    const next = rerollImage(job, imageIndex, randomSeed(this.random), keptAs, by.name ?? by.id, now);
    const reopened = await this.reopen(next, 1, true, keptAs === image.file ? undefined : { from: keptAs, to: image.file });
    this.log.info({ job: jobId, image: imageIndex, by: by.id }, 'rerolling a rejected image');
    return reopened;
  }

  /**
   * "Upscale approved": each approved image without a final version goes, alone, to the provider's
   * upscaler (FAL_UPSCALE_MODEL, …), and its result lands in `final/` beside the draft, with its cost in
   * the manifest. Rejected and pending images are never sent. Quotas and places as for retryFailed.
   */
  async upscaleApproved(jobId: string, by: Reviewer): Promise<Job> {
    return this.oneAtATime(jobId, () => this.upscaleNow(jobId, by));
  }

  private async upscaleNow(jobId: string, by: Reviewer): Promise<Job> {
    const job = await this.ledger.load(jobId);
    this.reopenable(job);
    const provider = this.deps.providers[job.request.provider]!;
    if (!provider.upscaleModel) throw new UserError('invalid_option', `Provider \`${provider.name}\` has no upscaler configured on this bot.`);
    const images = upscalable(job);
    if (images.length === 0) {
      const approved = job.images.filter((image) => image.review.status === 'approved').length;
      throw new UserError('not_found', approved === 0 ? `Job ${jobId} has no approved images to upscale; approve some first.` : `Every approved image of job ${jobId} is upscaled already.`);
    }
    const price = this.deps.settings.prices[provider.upscaleModel];
    const next = upscaleImages(job, images, provider.upscaleModel, price, by.name ?? by.id, this.now());
    const reopened = await this.reopen(next, images.length);
    this.log.info({ job: jobId, images: images.length, model: provider.upscaleModel, by: by.id }, 'upscaling approved images');
    return reopened;
  }

  /** One retry or reroll of a job at a time in this process: two clicks must not both reopen it. */
  private async oneAtATime(jobId: string, work: () => Promise<Job>): Promise<Job> {
    if (this.reopening.has(jobId)) throw new UserError('invalid_option', `Job ${jobId} is being run again already.`);
    this.reopening.add(jobId);
    try {
      return await work();
    } finally {
      this.reopening.delete(jobId);
    }
  }

  /** Only a job that ended (and was not cancelled) runs again, on a provider still configured. */
  private reopenable(job: Readonly<Job>): void {
    if (!isJobFinished(job)) throw new UserError('invalid_option', `Job ${job.id} is still running; try again when it has finished.`);
    if (job.state === 'canceled') throw new UserError('invalid_option', `Job ${job.id} was canceled; start a new one instead.`);
    if (this.stopping) throw new UserError('queue_full', 'The bot is restarting; try again in a few seconds.');
    if (!this.deps.providers[job.request.provider]) {
      throw new UserError('provider_unavailable', `Provider \`${job.request.provider}\` is no longer configured on this bot.`);
    }
  }

  private async tenantCap(job: Readonly<Job>): Promise<TenantCap | undefined> {
    const limits = await this.deps.tenantSettings?.limits(job.requester.tenant);
    return limits ? { ...(limits.dailyImages !== undefined ? { daily: limits.dailyImages } : {}) } : undefined;
  }

  /**
   * A finished job running again: `images` reserved (reroll: already), a place taken as submit does,
   * then saved and queued. A refusal gives everything back (`undo`: the file set aside goes back).
   */
  private async reopen(next: Job, images: number, reserved = false, undo?: { from: string; to: string }): Promise<Job> {
    const limits = await this.tenantCap(next);
    const now = Date.parse(next.reopenedAt!);
    const day = next.reopenedAt!;
    if (!reserved) await this.admission.reserveImages(next.requester.tenant, images, now, limits);
    this.ledger.hold(next);
    let placement: Placement | undefined;
    let saved: Readonly<Job>;
    try {
      placement = await this.admission.place(next.requester, next.id);
      saved = await this.ledger.change(next.id, () => next, { manifest: true });
    } catch (error) {
      this.ledger.release(next.id);
      if (placement !== undefined) await this.admission.remove(next).catch(() => []);
      await this.admission.releaseImages(next.requester.tenant, day, images, limits);
      if (undo && this.deps.files.setAside) {
        const name = undo.to.split('/').pop()!.replace(/\.[^.]+$/, '');
        await this.deps.files.setAside(next.id, undo.from, name).catch(() => undefined);
      }
      throw error;
    }
    this.emitProgress(saved);
    if (placement === 'admit') await this.enqueueBatches(saved);
    return copy(saved);
  }

  /**
   * Stores an adapter's own facts about a job (message ids to edit after a restart) under its name.
   * Shallow-merged into `job.chat[platform]`.
   */
  async annotate(jobId: string, platform: string, facts: Record<string, unknown>): Promise<void> {
    await this.ledger.edit(jobId, (job) => {
      const chat = (job.chat ??= {});
      chat[platform] = { ...((chat[platform]) ?? {}), ...facts };
    });
  }

  /**
   * Where a finished job's keepers were delivered (S3_BUCKET: presigned links to the manifest and the
   * approved images, and uploads still waiting), or undefined when images stay in the output folder or
   * the store cannot say now (the summary then goes out without it).
   */
  async delivery(job: Readonly<Job>): Promise<DeliveryReport | undefined> {
    if (!this.deps.files.delivery || !isJobFinished(job)) return undefined;
    try {
      return await this.deps.files.delivery(job);
    } catch (error) {
      this.log.warn({ job: job.id, err: error }, 'delivery links could not be made');
      return undefined;
    }
  }

  /** Jobs whose end is not saved yet because the store or disk fails (for /healthz). */
  unsavedJobs(): { jobId: string; attempts: number; error: string }[] {
    return [...this.unsaved].map(([jobId, state]) => ({ jobId, ...state }));
  }

  /** Provider calls waiting to start on a provider (for metrics). */
  queueDepth(provider: ProviderName): number {
    return this.deps.providers[provider] ? this.dispatcher.depth(provider) : 0;
  }

  /**
   * Unfinished jobs in this process (for an adapter re-attaching to its messages after a restart), as
   * frozen snapshots: they do not follow later changes, and cannot change the engine's.
   */
  activeJobs(): Readonly<Job>[] {
    return this.ledger.all();
  }

  async get(jobId: string): Promise<Job | undefined> {
    const job = await this.ledger.find(jobId);
    return job ? copy(job) : undefined;
  }

  /** A tenant's unfinished jobs (optionally one user's), oldest first, with their progress. */
  async listJobs(tenant: string, userId?: string): Promise<{ job: Job; progress: ProgressEvent }[]> {
    let unfinished = this.ledger.all();
    if (this.ledger.shared) {
      const found = await Promise.all((await this.deps.jobs.activeIds()).map((id) => this.deps.jobs.get(id)));
      unfinished = found.filter((job): job is Job => job !== undefined && !isJobFinished(job));
    }
    return unfinished
      .filter((job) => job.requester.tenant === tenant && (!userId || job.requester.userId === userId))
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
      .map((job) => ({ job: copy(job), progress: this.progress(job) }));
  }

  /** Resolves with the job once it has finished. */
  async waitFor(jobId: string): Promise<Job> {
    const job = await this.ledger.load(jobId);
    if (isJobFinished(job)) return copy(job);
    const here = new Promise<Job>((resolve) => {
      const waiting = this.waiters.get(jobId) ?? [];
      waiting.push(resolve);
      this.waiters.set(jobId, waiting);
    });
    if (!this.ledger.shared) return here;
    // Another process may finish it: read it now and then too.
    let done = false;
    const elsewhere = (async () => {
      while (!done) {
        await delay(SHARED_WAIT_POLL_MS);
        const stored = await this.deps.jobs.get(jobId).catch(() => undefined);
        if (stored && isJobFinished(stored)) return stored;
      }
      return new Promise<Job>(() => {});
    })();
    try {
      return await Promise.race([here, elsewhere]);
    } finally {
      done = true;
    }
  }

  // ── lifecycle ─────────────────────────────────────────────────────────────────────────────

  /** Picks up every unfinished job from the store: polls calls already submitted, queues the rest. */
  async resume(): Promise<number> {
    await this.repairReviews();
    const ids = await this.deps.jobs.activeIds();
    let resumed = 0;
    for (const id of ids) {
      if (this.ledger.current(id)) continue;
      const job = await this.ledger.find(id);
      if (!job || isJobFinished(job)) continue;
      if (!this.deps.providers[job.request.provider]) {
        await this.failJob(id, `provider ${job.request.provider} is no longer configured`);
        continue;
      }
      // Shared: another process may be writing into this folder right now, so only what has not been
      // touched for a long while is a dead process's leftover.
      await this.deps.files.sweep(id, this.ledger.shared ? SHARED_SWEEP_AGE_MS : undefined);
      this.ledger.hold(job);
      resumed += 1;
      if (readyToFinish(job)) {
        await this.maybeFinish(id, job);
        continue;
      }
      // Resumed jobs keep their place even past the running limit: they were accepted already. In
      // distributed mode a job another process runs is queued again too: its tickets are named by
      // batch and try, so the queue keeps one of each.
      if ((await this.admission.readmit(job)) === 'admit') await this.enqueueBatches(job);
      this.emitProgress(job);
    }
    if (resumed > 0) this.log.info({ jobs: resumed }, 'resumed unfinished jobs');
    return resumed;
  }

  /** A review cut off between moving its file and saving: the file goes back where the record says. */
  private async repairReviews(): Promise<void> {
    for (const id of await this.deps.jobs.openReviews()) {
      const job = await this.ledger.find(id);
      let moved = 0;
      for (const image of job?.images ?? []) if (await this.deps.files.restore(id, image.file)) moved += 1;
      if (moved > 0) this.log.warn({ job: id, images: moved }, 'put back images whose review was not saved before a restart');
      await this.deps.jobs.markReview(id, false);
    }
  }

  /**
   * Stops taking work. A submit already on its way is let finish so its request id is saved (the
   * next start polls it instead of paying again); then polls and downloads are aborted where they
   * stand, and every pending write is flushed.
   */
  async stop(timeoutMs = 8_000): Promise<void> {
    this.stopping = true;
    this.dispatcher.halt();
    const deadline = this.now() + timeoutMs;
    while (this.runner.submitsInFlight() > 0 && this.now() < deadline - 2_000) await delay(10);
    this.dispatcher.abortAll();
    while ([...this.running.values()].some((n) => n > 0) && this.now() < deadline) await delay(10);
    await this.ledger.settled();
    await this.dispatcher.close();
  }

  // ── running batches ───────────────────────────────────────────────────────────────────────

  /** Queues a job's unfinished batches; one waiting to retry keeps its wait (also across a restart). */
  private async enqueueBatches(job: Readonly<Job>): Promise<void> {
    const now = this.now();
    const queued: Promise<void>[] = [];
    for (const batch of job.batches) {
      const decision = restart(batch, now, this.deps.settings);
      if (decision.kind !== 'stop') queued.push(this.schedule(job, batch.index, decision.kind === 'retry' ? decision.delayMs : 0));
    }
    await Promise.all(queued);
  }

  /**
   * Queues a batch's next try. A ticket that cannot be queued (Redis down) leaves the batch as saved:
   * the next start of any process queues it again.
   */
  private async schedule(job: Readonly<Job>, batchIndex: number, delayMs = 0, front = false): Promise<void> {
    const batch = job.batches[batchIndex]!;
    const ticket: BatchTicket = {
      jobId: job.id,
      batchIndex,
      tenant: job.requester.tenant,
      provider: job.request.provider,
      attempt: batch.failures + (batch.throttled ?? 0),
    };
    try {
      await this.started;
      await this.dispatcher.enqueue(ticket, { ...(delayMs > 0 ? { delayMs } : {}), front });
    } catch (error) {
      this.log.error({ err: error, job: job.id, batch: batchIndex }, 'queueing a batch failed; it is queued again on the next start');
    }
  }

  private async runTask(ticket: BatchTicket, signal: AbortSignal, release?: () => void): Promise<void> {
    const { jobId, batchIndex } = ticket;
    this.running.set(jobId, (this.running.get(jobId) ?? 0) + 1);
    try {
      await this.runner.run(jobId, batchIndex, signal, release);
    } finally {
      this.running.set(jobId, (this.running.get(jobId) ?? 1) - 1);
      if (!this.stopping) await this.maybeFinish(jobId);
    }
  }

  /**
   * Ends a job whose batches are all over. In distributed mode the last two batches may end in two
   * processes at once: the change is made under the job's lock, and only the process that made it
   * tells the listeners and frees the job's place.
   */
  private async maybeFinish(jobId: string, known?: Readonly<Job>): Promise<void> {
    if ((this.running.get(jobId) ?? 0) > 0 || this.finishing.has(jobId)) return;
    const job = known ?? this.ledger.current(jobId) ?? (this.ledger.shared ? await this.ledger.find(jobId) : undefined);
    if (!job || isJobFinished(job) || !readyToFinish(job)) return;
    if (this.finishing.has(jobId)) return;
    this.finishing.add(jobId);
    let done: Readonly<Job>;
    let finishedHere = false;
    // A store or disk error here must not leave the job "finishing" until a restart: it is retried
    // with the normal backoff, and /healthz reports it meanwhile. Stopping leaves it to the next start.
    for (let attempt = 1; ; attempt += 1) {
      try {
        done = await this.ledger.change(
          jobId,
          (j) => {
            // Ours, but its save failed: saved again (the record held here may show it finished already).
            if (finishedHere) return isJobFinished(j) ? { ...j } : finishJob(j, this.now());
            if (isJobFinished(j) || !readyToFinish(j)) return undefined;
            finishedHere = true;
            return finishJob(j, this.now());
          },
          () => (finishedHere ? { manifest: true } : {}),
        );
        break;
      } catch (error) {
        this.unsaved.set(jobId, { attempts: attempt, error: error instanceof Error ? error.message : String(error) });
        this.log.error({ err: error, job: jobId, attempt }, 'saving a finished job failed; retrying');
        if (this.stopping) {
          this.finishing.delete(jobId);
          return;
        }
        await delay(backoff(attempt, this.deps.settings));
      }
    }
    this.unsaved.delete(jobId);
    if (!finishedHere) {
      // Another process finished it (or it was not ready after all).
      this.finishing.delete(jobId);
      return;
    }
    // Given back to every tally the job was counted in: with settings, the tenant's always.
    const counted: TenantCap | undefined = this.deps.tenantSettings ? {} : undefined;
    // A retried or rerolled job's images were reserved the day it ran again (the first run's unmade ones given back then).
    await this.admission.releaseImages(done.requester.tenant, done.reopenedAt ?? done.createdAt, unmadeImages(done), counted);
    this.ledger.release(jobId);
    this.finishing.delete(jobId);
    const next = await this.admission.remove(done);
    this.log.info({ job: jobId, state: done.state, images: done.images.length, error: done.error }, 'job finished');
    this.emitProgress(done);
    this.emit('finished', copy(done));
    for (const resolve of this.waiters.get(jobId) ?? []) resolve(copy(done));
    this.waiters.delete(jobId);
    for (const id of next) await this.promote(id);
  }

  /** A waiting job given a running slot: its batches are queued. */
  private async promote(jobId: string): Promise<void> {
    // Its submit may still be saving it (in this process or another): look again for a moment.
    for (let look = 0; look < PROMOTE_LOOKUPS; look += 1) {
      const waiting = await this.ledger.find(jobId);
      if (waiting) {
        if (isJobFinished(waiting)) return;
        await this.enqueueBatches(waiting);
        this.emitProgress(waiting);
        return;
      }
      await delay(50);
    }
    this.log.error({ job: jobId }, 'a promoted job was not found; it is queued on the next start');
  }

  /** Ends a job that can no longer run, telling the adapters like any other finish. */
  private async failJob(jobId: string, reason: string): Promise<void> {
    const failed = await this.ledger.change(jobId, (j) => failJob(j, reason, this.now()), { manifest: true });
    this.emitProgress(failed);
    this.emit('finished', copy(failed));
  }

  // ── batches: the machine's decisions, applied ───────────────────────────────────────────────

  /**
   * Applies what happened to a batch (the runner's report) under the job's lock, acts on the
   * machine's decision (pause the lane, schedule the retry) and tells the listeners.
   */
  private async record(jobId: string, batchIndex: number, event: BatchEvent): Promise<Decision> {
    let decision = { kind: 'stop' } as Decision;
    let changed = false as boolean;
    const job = await this.ledger.change(
      jobId,
      (current) => {
        const next = advance(current, batchIndex, event, { now: this.now(), settings: this.deps.settings, stopping: this.stopping });
        decision = next.decision;
        changed = next.job !== undefined;
        // At once, inside the lock: a 429 stops the whole lane before another submit can pass its gate.
        const pause = decision.kind === 'retry' || decision.kind === 'fail' ? decision.pauseLaneMs : undefined;
        if (pause !== undefined) this.dispatcher.pause(current.request.provider, pause);
        return next.job;
      },
      () => saving(event, decision),
    );
    if (decision.kind === 'retry' || decision.kind === 'fail') {
      const failure = event.type === 'error' ? { kind: event.error.kind, status: event.error.details.status } : {};
      const { failures, throttled } = job.batches[batchIndex]!;
      const retry = decision.kind === 'retry';
      this.log.warn({ job: jobId, batch: batchIndex, ...failure, failures, throttled, retry }, `batch call failed: ${decision.reason}`);
    }
    // Once the step is saved (a step the store refused must not be retried as if it were), and in
    // the tenant's front: a retry keeps its turn once its delay is over.
    if (decision.kind === 'retry') void this.schedule(job, batchIndex, decision.delayMs, true);
    if (event.type === 'saved' && changed) this.emit('images', { provider: job.request.provider, count: 1 });
    if (changed) this.emitProgress(job);
    return decision;
  }

  // ── state and events ──────────────────────────────────────────────────────────────────────

  private iso(): string {
    return new Date(this.now()).toISOString();
  }

  /** The job's progress as adapters show it: counts, the batch that moved last, position, ETA. */
  progress(job: Readonly<Job>): ProgressEvent {
    const provider = this.deps.providers[job.request.provider];
    const lane = this.deps.settings.lanes[job.request.provider] ?? { concurrency: 4 };
    let queuePosition: number | undefined;
    if (job.state === 'queued' && provider) {
      const waitingIndex = this.admission.waitingIndex(job.requester.tenant, job.id);
      queuePosition =
        waitingIndex >= 0 ? this.dispatcher.depth(provider.name) + waitingIndex + 1 : this.dispatcher.queuePosition(provider.name, job.id);
    }
    const callMs = this.runner.recentCallMs(job.request.provider) ?? provider?.typicalCallMs ?? 5000;
    return computeProgress(job, { lane, queuePosition, callMs });
  }

  private emitProgress(job: Readonly<Job>): void {
    this.emit('progress', this.progress(job), job);
  }
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
