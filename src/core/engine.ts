/**
 * The engine: accepts requests, persists jobs, plans and schedules their batches, runs each batch
 * against its provider (submit → persist the request id → poll → download), retries what can be
 * retried, resumes unfinished jobs after a restart, and reviews images. Adapters only call this and
 * render its events.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Admission, plural, type AdmissionLimits } from './admission.js';
import { BatchRunner, type RetrySettings } from './batch-runner.js';
import { UserError } from './errors.js';
import { buildManifest } from './manifest.js';
import { planBatches, randomSeed } from './planner.js';
import { silentLogger, type CallRecord, type ImageStorage, type JobRepository, type Logger, type Reviewer } from './ports.js';
import { computeProgress, FINAL_BATCH, isJobFinished } from './progress.js';
import type { Provider } from './provider.js';
import type { Rate } from './rate.js';
import { FairScheduler, type LaneOptions } from './scheduler.js';
import type { ImagineRequest, Job, ProgressEvent, ProviderName, Requester, ReviewStatus } from './types.js';

export type { CallRecord, ImageStorage, JobRepository, Logger, Reviewer } from './ports.js';
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
}

export interface ChangeOptions {
  /** also rewrite the job's manifest.json */
  manifest?: boolean;
  /** wait until the store has it (default); false for changes a restart redoes anyway */
  durable?: boolean;
}

type EngineEvents = {
  call: [CallRecord];
  images: [{ provider: ProviderName; count: number }];
  /** the job is the engine's own copy: read it, never change it */
  progress: [ProgressEvent, Readonly<Job>];
  finished: [Job];
};

function newJobId(now: number): string {
  const day = new Date(now).toISOString().slice(0, 10).replace(/-/g, '');
  return `${day}-${randomBytes(5).toString('hex').slice(0, 8)}`;
}

export class Engine extends EventEmitter<EngineEvents> {
  private readonly scheduler: FairScheduler;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly random: () => number;
  /** unfinished jobs, the one copy every change goes through */
  private readonly active = new Map<string, Job>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly admission: Admission;
  private readonly runner: BatchRunner;
  /** tasks of a job currently executing, so a job finishes only when the last one settles */
  private readonly running = new Map<string, number>();
  private stopping = false;
  private readonly finishing = new Set<string>();
  /** jobs whose end could not be saved yet (store or disk errors), retried until it is */
  private readonly unsaved = new Map<string, { attempts: number; error: string }>();
  /** callers of waitFor, by job */
  private readonly waiters = new Map<string, ((job: Job) => void)[]>();

  constructor(private readonly deps: EngineDeps) {
    super();
    this.log = deps.logger ?? silentLogger;
    this.now = deps.now ?? Date.now;
    this.random = deps.random ?? Math.random;
    const lanes: Record<string, LaneOptions> = {};
    for (const name of Object.keys(deps.providers) as ProviderName[]) {
      lanes[name] = deps.settings.lanes[name] ?? { concurrency: 4 };
    }
    this.scheduler = new FairScheduler({
      lanes,
      tenantRate: deps.settings.tenantRate,
      now: this.now,
      onTaskError: (error, task) => this.log.error({ err: error, task: task.key }, 'batch task failed unexpectedly'),
    });
    this.admission = new Admission(deps.settings, deps.jobs);
    this.runner = new BatchRunner(
      {
        job: (id) => this.active.get(id),
        change: (id, apply, options) => this.change(id, apply, options),
        progress: (job) => this.emitProgress(job),
        schedule: (job, batchIndex, delayMs) => this.schedule(job, batchIndex, delayMs, true),
        stopping: () => this.stopping,
        emit: (event: 'call' | 'images', payload: never) => this.emit(event, payload),
      },
      { providers: deps.providers, files: deps.files, scheduler: this.scheduler, settings: deps.settings, log: this.log, now: this.now },
    );
  }

  get providerNames(): ProviderName[] {
    return Object.keys(this.deps.providers) as ProviderName[];
  }

  // ── requests ──────────────────────────────────────────────────────────────────────────────

  /** Accepts a validated request: persists the job and queues its batches. Answers fast. */
  async submit(request: ImagineRequest, requester: Requester): Promise<Job> {
    if (this.stopping) throw new UserError('queue_full', 'The bot is restarting; try again in a few seconds.');
    const provider = this.deps.providers[request.provider];
    if (!provider) {
      throw new UserError(
        'provider_unavailable',
        `Provider \`${request.provider}\` is not configured on this bot; available: ${this.providerNames.join(', ')}.`,
      );
    }
    this.admission.checkPerson(requester, this.active.values());
    const now = this.now();
    await this.admission.reserveImages(requester.tenant, request.count, now);
    // From here to the job's registration nothing awaits, so two requests arriving together cannot
    // both take the last place.
    let placement: 'admit' | 'wait';
    try {
      this.admission.checkPerson(requester, this.active.values());
      placement = this.admission.place(requester.tenant);
    } catch (error) {
      await this.admission.releaseImages(requester.tenant, new Date(now).toISOString(), request.count);
      throw error;
    }
    const id = newJobId(now);
    const seed = request.seed ?? randomSeed(this.random);
    const price = this.deps.settings.prices[request.model];
    const job: Job = {
      id,
      createdAt: new Date(now).toISOString(),
      updatedAt: new Date(now).toISOString(),
      requester,
      request: { ...request, seed },
      state: 'queued',
      batches: planBatches(request.count, provider.maxImagesPerCall, seed),
      images: [],
      ...(price !== undefined ? { estimatedCostUsd: round(request.count * price, 4) } : {}),
      outputDir: this.deps.files.outputDir,
    };
    this.active.set(id, job);
    this.admission.add(requester.tenant, id, placement);
    await this.change(id, () => {});
    if (placement === 'admit') this.enqueueBatches(job);
    this.log.info({ job: id, tenant: requester.tenant, count: request.count, provider: request.provider, placement }, 'job accepted');
    this.emitProgress(job);
    return structuredClone(job);
  }

  /** Cancels a job: waiting batches are dropped, running ones cancelled at the provider. */
  async cancel(jobId: string, by: Reviewer): Promise<Job> {
    const job = await this.load(jobId);
    if (isJobFinished(job)) throw new UserError('already_finished', `Job ${jobId} has already finished (${job.state}).`);
    // Marked before anything is aborted, so an aborted call is taken for a cancellation, not a failure.
    job.canceledBy = by.name ?? by.id;
    this.scheduler.cancelJob(jobId);
    await this.change(jobId, (j) => {
      j.canceledBy = by.name ?? by.id;
      for (const batch of j.batches) {
        if (batch.state === 'queued') {
          batch.state = 'canceled';
          batch.finishedAt = this.iso();
        }
      }
    });
    this.log.info({ job: jobId, by: by.id }, 'job canceled');
    await this.maybeFinish(jobId);
    return structuredClone(await this.load(jobId));
  }

  /** Approves, rejects or resets one image: moves the file, then saves store and manifest. */
  async review(jobId: string, imageIndex: number, status: ReviewStatus, by: Reviewer): Promise<Job> {
    await this.load(jobId);
    await this.deps.jobs.markReview(jobId, true);
    const job = await this.change(
      jobId,
      async (j) => {
        const image = j.images.find((img) => img.index === imageIndex);
        if (!image) throw new UserError('not_found', `Image ${imageIndex} is not part of job ${jobId}.`);
        image.file = await this.deps.files.moveTo(jobId, image.file, status);
        image.review = status === 'pending' ? { status } : { status, by: by.name ?? by.id, at: this.iso() };
      },
      { manifest: true },
    );
    await this.deps.jobs.markReview(jobId, false);
    this.log.info({ job: jobId, image: imageIndex, status, by: by.id }, 'image reviewed');
    return structuredClone(job);
  }

  /**
   * Stores an adapter's own facts about a job (message ids to edit after a restart) under its name.
   * Shallow-merged into `job.chat[platform]`.
   */
  async annotate(jobId: string, platform: string, facts: Record<string, unknown>): Promise<void> {
    await this.change(jobId, (job) => {
      const chat = (job.chat ??= {});
      chat[platform] = { ...((chat[platform] as Record<string, unknown> | undefined) ?? {}), ...facts };
    });
  }

  /** Jobs whose end is not saved yet because the store or disk fails (for /healthz). */
  unsavedJobs(): { jobId: string; attempts: number; error: string }[] {
    return [...this.unsaved].map(([jobId, state]) => ({ jobId, ...state }));
  }

  /** Provider calls waiting to start on a provider (for metrics). */
  queueDepth(provider: ProviderName): number {
    return this.deps.providers[provider] ? this.scheduler.depth(provider) : 0;
  }

  /** Unfinished jobs in this process (for an adapter re-attaching to its messages after a restart). */
  activeJobs(): Readonly<Job>[] {
    return [...this.active.values()];
  }

  async get(jobId: string): Promise<Job | undefined> {
    const job = this.active.get(jobId) ?? this.adopted(await this.deps.jobs.get(jobId));
    return job ? structuredClone(job) : undefined;
  }

  /** A tenant's unfinished jobs (optionally one user's), oldest first, with their progress. */
  listJobs(tenant: string, userId?: string): { job: Job; progress: ProgressEvent }[] {
    return [...this.active.values()]
      .filter((job) => job.requester.tenant === tenant && (!userId || job.requester.userId === userId))
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
      .map((job) => ({ job: structuredClone(job), progress: this.progress(job) }));
  }

  /** Resolves with the job once it has finished. */
  async waitFor(jobId: string): Promise<Job> {
    const job = await this.load(jobId);
    if (isJobFinished(job)) return structuredClone(job);
    return new Promise((resolve) => {
      const waiting = this.waiters.get(jobId) ?? [];
      waiting.push(resolve);
      this.waiters.set(jobId, waiting);
    });
  }

  // ── lifecycle ─────────────────────────────────────────────────────────────────────────────

  /** Picks up every unfinished job from the store: polls calls already submitted, queues the rest. */
  async resume(): Promise<number> {
    await this.repairReviews();
    const ids = await this.deps.jobs.activeIds();
    let resumed = 0;
    for (const id of ids) {
      if (this.active.has(id)) continue;
      const job = this.adopted(await this.deps.jobs.get(id));
      if (!job || isJobFinished(job)) continue;
      if (!this.deps.providers[job.request.provider]) {
        await this.failJob(job, `provider ${job.request.provider} is no longer configured`);
        continue;
      }
      await this.deps.files.sweep(id);
      this.active.set(id, job);
      resumed += 1;
      if (job.canceledBy || job.batches.every((b) => FINAL_BATCH.has(b.state))) {
        await this.maybeFinish(id);
        continue;
      }
      // Resumed jobs keep their place even past the running limit: they were accepted already.
      if (this.admission.readmit(job.requester.tenant, id, job.state === 'running') === 'admit') this.enqueueBatches(job);
      this.emitProgress(job);
    }
    if (resumed > 0) this.log.info({ jobs: resumed }, 'resumed unfinished jobs');
    return resumed;
  }

  /** A review cut off between moving its file and saving: the file goes back where the record says. */
  private async repairReviews(): Promise<void> {
    for (const id of await this.deps.jobs.openReviews()) {
      const job = this.adopted(await this.deps.jobs.get(id));
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
    this.scheduler.halt();
    const deadline = this.now() + timeoutMs;
    while (this.runner.submitting > 0 && this.now() < deadline - 2_000) await sleep(10);
    this.scheduler.abortAll();
    while ([...this.running.values()].some((n) => n > 0) && this.now() < deadline) await sleep(10);
    await Promise.all([...this.locks.values()]);
  }

  // ── running batches ───────────────────────────────────────────────────────────────────────

  private enqueueBatches(job: Job): void {
    for (const batch of job.batches) if (!FINAL_BATCH.has(batch.state)) this.schedule(job, batch.index);
  }

  private schedule(job: Job, batchIndex: number, delayMs = 0, front = false): void {
    this.scheduler.enqueue(
      job.request.provider,
      {
        key: `${job.id}:${batchIndex}`,
        jobId: job.id,
        tenant: job.requester.tenant,
        notBefore: delayMs > 0 ? this.now() + delayMs : undefined,
        run: (signal) => this.runTask(job.id, batchIndex, signal),
      },
      { front },
    );
  }

  private async runTask(jobId: string, batchIndex: number, signal: AbortSignal): Promise<void> {
    this.running.set(jobId, (this.running.get(jobId) ?? 0) + 1);
    try {
      await this.runner.run(jobId, batchIndex, signal);
    } finally {
      this.running.set(jobId, (this.running.get(jobId) ?? 1) - 1);
      if (!this.stopping) await this.maybeFinish(jobId);
    }
  }

  private async maybeFinish(jobId: string): Promise<void> {
    const job = this.active.get(jobId);
    if (!job || isJobFinished(job) || (this.running.get(jobId) ?? 0) > 0 || this.finishing.has(jobId)) return;
    if (!job.canceledBy && !job.batches.every((b) => FINAL_BATCH.has(b.state))) return;
    this.finishing.add(jobId);
    if (job.canceledBy) {
      for (const batch of job.batches) if (!FINAL_BATCH.has(batch.state)) batch.state = 'canceled';
    }
    const failed = job.batches.filter((b) => b.state === 'failed');
    const missing = failed.reduce((sum, b) => sum + b.size - b.delivered, 0);
    const finish = (j: Job) => {
      j.finishedAt = this.iso();
      if (j.canceledBy) {
        j.state = 'canceled';
        j.error = `canceled by ${j.canceledBy} with ${plural(j.images.length, 'image')} delivered`;
      } else if (j.images.length === 0) {
        j.state = 'failed';
        j.error = `all ${plural(j.request.count, 'image')} failed: ${failed[0]?.error ?? 'unknown error'}`;
      } else {
        j.state = 'completed';
        j.error = missing > 0 ? `completed with ${plural(missing, 'image')} failed: ${failed[0]?.error ?? 'unknown error'}` : undefined;
      }
    };
    // A store or disk error here must not leave the job "finishing" until a restart: it is retried
    // with the normal backoff, and /healthz reports it meanwhile. Stopping leaves it to the next start.
    for (let attempt = 1; ; attempt += 1) {
      try {
        await this.change(jobId, finish, { manifest: true });
        break;
      } catch (error) {
        this.unsaved.set(jobId, { attempts: attempt, error: error instanceof Error ? error.message : String(error) });
        this.log.error({ err: error, job: jobId, attempt }, 'saving a finished job failed; retrying');
        const base = this.deps.settings.retryBaseMs ?? 1000;
        const wait = Math.min(this.deps.settings.retryMaxMs ?? 10_000, base * 1.5 ** (attempt - 1));
        if (this.stopping) {
          this.finishing.delete(jobId);
          return;
        }
        await sleep(wait);
      }
    }
    this.unsaved.delete(jobId);
    await this.admission.releaseImages(job.requester.tenant, job.createdAt, job.request.count - job.images.length);
    this.active.delete(jobId);
    this.finishing.delete(jobId);
    const next = this.admission.remove(job.requester.tenant, jobId);
    this.log.info({ job: jobId, state: job.state, images: job.images.length, error: job.error }, 'job finished');
    this.emitProgress(job);
    this.emit('finished', structuredClone(job));
    for (const resolve of this.waiters.get(jobId) ?? []) resolve(structuredClone(job));
    this.waiters.delete(jobId);
    for (const id of next) {
      const waiting = this.active.get(id);
      if (!waiting) continue;
      this.enqueueBatches(waiting);
      this.emitProgress(waiting);
    }
  }

  /** Ends a job that can no longer run, telling the adapters like any other finish. */
  private async failJob(job: Job, reason: string): Promise<void> {
    job.state = 'failed';
    job.error = reason;
    job.finishedAt = this.iso();
    await this.deps.files.writeManifest(job.id, buildManifest(job));
    await this.deps.jobs.save(job);
    this.emitProgress(job);
    this.emit('finished', structuredClone(job));
  }

  // ── state and events ──────────────────────────────────────────────────────────────────────

  /** A job read from the store keeps writing to the folder it was started with. */
  private adopted(job: Job | undefined): Job | undefined {
    if (job?.outputDir) this.deps.files.adopt(job.id, job.outputDir);
    return job;
  }

  private async load(jobId: string): Promise<Job> {
    const job = this.active.get(jobId) ?? this.adopted(await this.deps.jobs.get(jobId));
    if (!job) throw new UserError('not_found', `Job ${jobId} does not exist (any more).`);
    return job;
  }

  /** Applies a change to a job and persists it, one change per job at a time. */
  private change(jobId: string, apply: (job: Job) => void | Promise<void>, options: ChangeOptions = {}): Promise<Job> {
    const previous = this.locks.get(jobId) ?? Promise.resolve();
    const next = previous.then(async () => {
      const job = this.active.get(jobId) ?? this.adopted(await this.deps.jobs.get(jobId));
      if (!job) throw new UserError('not_found', `Job ${jobId} does not exist (any more).`);
      await apply(job);
      job.updatedAt = this.iso();
      // The manifest first: if the process dies between the two writes, the store (which drives
      // resuming) is the one behind, and redoing the change rewrites both.
      if (options.manifest) await this.deps.files.writeManifest(jobId, buildManifest(job));
      const saved = this.deps.jobs.save(job);
      if (options.durable === false) {
        // Not needed for a correct restart (it is redone or recomputed): written with the next save.
        saved.catch((error: unknown) => this.log.error({ err: error, job: jobId }, 'saving a job failed'));
      } else {
        await saved;
      }
      return job;
    });
    const settled = next.catch(() => undefined);
    this.locks.set(jobId, settled);
    void settled.then(() => {
      if (this.locks.get(jobId) === settled) this.locks.delete(jobId);
    });
    return next;
  }

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
        waitingIndex >= 0 ? this.scheduler.depth(provider.name) + waitingIndex + 1 : this.scheduler.queuePosition(provider.name, job.id);
    }
    const callMs = this.runner.callMs.get(job.request.provider) ?? provider?.typicalCallMs ?? 5000;
    return computeProgress(job, { lane, queuePosition, callMs });
  }

  private emitProgress(job: Job): void {
    this.emit('progress', this.progress(job), job);
  }
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
