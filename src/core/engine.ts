/**
 * The engine: accepts requests, persists jobs, plans and schedules their batches, runs each batch
 * against its provider (submit → persist the request id → poll → download), retries what can be
 * retried, resumes unfinished jobs after a restart, and reviews images. Adapters only call this and
 * render its events.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from './errors.js';
import { buildManifest } from './manifest.js';
import { planBatches, randomSeed, seedAt } from './planner.js';
import { asProviderError, ProviderError, type OutputImage, type Provider } from './provider.js';
import type { Rate } from './rate.js';
import { FairScheduler, type LaneOptions } from './scheduler.js';
import type { Batch, ImagineRequest, Job, ProgressEvent, ProviderName, Requester, ReviewStatus } from './types.js';

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
}

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

export interface EngineSettings {
  lanes: Partial<Record<ProviderName, LaneOptions>>;
  tenantRate?: Rate;
  /** failed tries per batch before it fails for good */
  maxAttempts: number;
  /** longest one provider call may take from submit to result */
  callTimeoutMs: number;
  tenantMaxRunningJobs: number;
  tenantMaxQueuedJobs: number;
  /** images one tenant may request per UTC day @default unlimited */
  tenantDailyImages?: number;
  /** jobs one person may have queued or running at once, per tenant @default unlimited */
  userMaxActiveJobs?: number;
  /** USD per image by model id */
  prices: Record<string, number>;
  /** first retry delay @default 1000; later ones grow ×1.5 up to retryMaxMs */
  retryBaseMs?: number;
  /** @default 10000 */
  retryMaxMs?: number;
  /** time between status polls @default a tenth of the provider's typical call, 20 ms to 1 s */
  pollIntervalMs?: number;
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

type EngineEvents = {
  call: [CallRecord];
  images: [{ provider: ProviderName; count: number }];
  /** the job is the engine's own copy: read it, never change it */
  progress: [ProgressEvent, Readonly<Job>];
  finished: [Job];
};

const FINAL_BATCH: ReadonlySet<Batch['state']> = new Set(['done', 'failed', 'canceled']);

export function isJobFinished(job: Pick<Job, 'state'>): boolean {
  return job.state === 'completed' || job.state === 'failed' || job.state === 'canceled';
}

function newJobId(now: number): string {
  const day = new Date(now).toISOString().slice(0, 10).replace(/-/g, '');
  return `${day}-${randomBytes(5).toString('hex').slice(0, 8)}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export class Engine extends EventEmitter<EngineEvents> {
  private readonly scheduler: FairScheduler;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly random: () => number;
  /** unfinished jobs, the one copy every change goes through */
  private readonly active = new Map<string, Job>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /** per tenant: jobs whose batches are in the scheduler, and jobs waiting for a running slot */
  private readonly admitted = new Map<string, Set<string>>();
  private readonly backlog = new Map<string, string[]>();
  /** tasks of a job currently executing, so a job finishes only when the last one settles */
  private readonly running = new Map<string, number>();
  /** recent call durations per provider, for ETAs */
  private readonly callMs = new Map<ProviderName, number>();
  private stopping = false;
  /** submits between "sent" and "request id saved" */
  private submitting = 0;
  private readonly finishing = new Set<string>();
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
    this.checkUserLimit(requester);
    const now = this.now();
    const day = new Date(now).toISOString().slice(0, 10);
    const cap = this.deps.settings.tenantDailyImages;
    if (cap !== undefined) await this.reserveDaily(requester.tenant, day, request.count, cap, now);
    // From here to the job's registration nothing awaits, so two requests arriving together cannot
    // both take the last place.
    let placement: 'admit' | 'wait';
    try {
      this.checkUserLimit(requester);
      placement = this.place(requester.tenant);
    } catch (error) {
      if (cap !== undefined) await this.deps.jobs.releaseImages(requester.tenant, day, request.count);
      throw error;
    }
    const id = newJobId(now);
    const seed = request.seed ?? randomSeed(this.random);
    const job: Job = {
      id,
      createdAt: new Date(now).toISOString(),
      updatedAt: new Date(now).toISOString(),
      requester,
      request: { ...request, seed },
      state: 'queued',
      batches: planBatches(request.count, provider.maxImagesPerCall, seed),
      images: [],
      estimatedCostUsd: round(request.count * (this.deps.settings.prices[request.model] ?? 0), 4),
    };
    this.active.set(id, job);
    if (placement === 'admit') this.admittedOf(requester.tenant).add(id);
    else this.backlogOf(requester.tenant).push(id);
    await this.change(id, () => {}, { manifest: true });
    if (placement === 'admit') this.enqueueBatches(job);
    this.log.info({ job: id, tenant: requester.tenant, count: request.count, provider: request.provider, placement }, 'job accepted');
    this.emitProgress(job);
    return structuredClone(job);
  }

  private checkUserLimit(requester: Requester): void {
    const max = this.deps.settings.userMaxActiveJobs;
    if (max === undefined) return;
    let mine = 0;
    for (const job of this.active.values()) {
      if (job.requester.tenant === requester.tenant && job.requester.userId === requester.userId) mine += 1;
    }
    if (mine >= max) {
      throw new UserError(
        'quota',
        `You already have ${plural(mine, 'job')} queued or running here (the most one person may have is ${max}). ` +
          'Try again when one finishes; /jobs shows them.',
      );
    }
  }

  private async reserveDaily(tenant: string, day: string, count: number, cap: number, now: number): Promise<void> {
    if ((await this.deps.jobs.reserveImages(tenant, day, count, cap)) !== undefined) return;
    const used = await this.deps.jobs.imagesUsed(tenant, day);
    const midnight = Date.parse(`${day}T00:00:00.000Z`) + 86_400_000;
    const left = Math.max(0, cap - used);
    throw new UserError(
      'quota',
      `This job asks for ${plural(count, 'image')}, but only ${left} of today's ${cap} are left here. ` +
        `The daily count starts again at 00:00 UTC, in ${formatWait(midnight - now)}${left > 0 ? `; or ask for ${left} or fewer` : ''}.`,
    );
  }

  private place(tenant: string): 'admit' | 'wait' {
    const { tenantMaxRunningJobs, tenantMaxQueuedJobs } = this.deps.settings;
    const running = this.admittedOf(tenant).size;
    const waiting = this.backlogOf(tenant).length;
    if (running < tenantMaxRunningJobs) return 'admit';
    if (waiting < tenantMaxQueuedJobs) return 'wait';
    throw new UserError(
      'queue_full',
      `The queue is full here: ${plural(running, 'job')} running and ${waiting} waiting (the most allowed is ` +
        `${tenantMaxRunningJobs} + ${tenantMaxQueuedJobs}). Try again when one finishes.`,
    );
  }

  private admittedOf(tenant: string): Set<string> {
    let set = this.admitted.get(tenant);
    if (!set) this.admitted.set(tenant, (set = new Set()));
    return set;
  }

  private backlogOf(tenant: string): string[] {
    let list = this.backlog.get(tenant);
    if (!list) this.backlog.set(tenant, (list = []));
    return list;
  }

  /** Cancels a job: waiting batches are dropped, running ones cancelled at the provider. */
  async cancel(jobId: string, by: Reviewer): Promise<Job> {
    const job = await this.load(jobId);
    if (isJobFinished(job)) throw new UserError('already_finished', `Job ${jobId} has already finished (${job.state}).`);
    // Marked before anything is aborted, so an aborted call is taken for a cancellation, not a failure.
    job.canceledBy = by.name ?? by.id;
    const tenant = job.requester.tenant;
    const waiting = this.backlogOf(tenant);
    const wasWaiting = waiting.includes(jobId);
    if (wasWaiting) waiting.splice(waiting.indexOf(jobId), 1);
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

  /** Provider calls waiting to start on a provider (for metrics). */
  queueDepth(provider: ProviderName): number {
    return this.deps.providers[provider] ? this.scheduler.depth(provider) : 0;
  }

  /** Unfinished jobs in this process (for an adapter re-attaching to its messages after a restart). */
  activeJobs(): Readonly<Job>[] {
    return [...this.active.values()];
  }

  async get(jobId: string): Promise<Job | undefined> {
    const job = this.active.get(jobId) ?? (await this.deps.jobs.get(jobId));
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
      const job = await this.deps.jobs.get(id);
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
      const admitted = this.admittedOf(job.requester.tenant);
      if (admitted.size < this.deps.settings.tenantMaxRunningJobs || job.state === 'running') {
        admitted.add(id);
        this.enqueueBatches(job);
      } else {
        this.backlogOf(job.requester.tenant).push(id);
      }
      this.emitProgress(job);
    }
    if (resumed > 0) this.log.info({ jobs: resumed }, 'resumed unfinished jobs');
    return resumed;
  }

  /** A review cut off between moving its file and saving: the file goes back where the record says. */
  private async repairReviews(): Promise<void> {
    for (const id of await this.deps.jobs.openReviews()) {
      const job = await this.deps.jobs.get(id);
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
    while (this.submitting > 0 && this.now() < deadline - 2_000) await sleep(10);
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
      await this.runBatch(jobId, batchIndex, signal);
    } catch (error) {
      await this.afterFailure(jobId, batchIndex, error, signal);
    } finally {
      this.running.set(jobId, (this.running.get(jobId) ?? 1) - 1);
      if (!this.stopping) await this.maybeFinish(jobId);
    }
  }

  private async runBatch(jobId: string, batchIndex: number, signal: AbortSignal): Promise<void> {
    const job = this.active.get(jobId);
    if (!job || job.canceledBy || signal.aborted) return;
    const batch = job.batches[batchIndex]!;
    if (FINAL_BATCH.has(batch.state)) return;
    const provider = this.deps.providers[job.request.provider]!;
    const model = job.request.model;
    const started = this.now();

    if (!batch.requestId) {
      const count = batch.size - batch.delivered;
      // The attempt is saved before the call: a crash right after submitting still counts it.
      await this.change(jobId, (j) => {
        const b = j.batches[batchIndex]!;
        b.state = 'submitted';
        b.attempts += 1;
        b.submittedAt = new Date(started).toISOString();
        if (j.state === 'queued') j.state = 'running';
      });
      this.emitProgress(job);
      const call = {
        prompt: job.request.prompt,
        negative: job.request.negative,
        model,
        aspectRatio: job.request.aspectRatio,
        count,
        seed: seedAt(batch.seed, batch.delivered),
      };
      const requestId = await this.scheduler.throttle(
        provider.name,
        async () => {
          this.submitting += 1;
          try {
            const id = await this.track(provider, 'submit', () => provider.submit(call, signal));
            await this.change(jobId, (j) => {
              const b = j.batches[batchIndex]!;
              b.requestId = id;
              b.requestIds.push(id);
            });
            return id;
          } finally {
            this.submitting -= 1;
          }
        },
        signal,
      );
      this.emitProgress(job);
    } else if (job.state === 'queued') {
      await this.change(jobId, (j) => void (j.state = 'running'));
    }

    const requestId = batch.requestId!;
    const deadline = Date.parse(batch.submittedAt ?? new Date(started).toISOString()) + this.deps.settings.callTimeoutMs;
    await this.poll(provider, jobId, batch.index, requestId, model, deadline, signal);
    const outputs = await this.track(provider, 'result', () => provider.result(requestId, model, signal));
    await this.saveOutputs(provider, jobId, batchIndex, outputs, signal);

    const wanted = batch.size - batch.delivered;
    if (wanted > 0) {
      // A partial output keeps what came and asks again for the rest, as a new call.
      await this.change(jobId, (j) => void (j.batches[batchIndex]!.requestId = undefined));
      throw new ProviderError('failed', `partial output: the provider returned ${outputs.length} of ${outputs.length + wanted} images`);
    }
    this.recordCallTime(provider.name, this.now() - started);
    await this.change(
      jobId,
      (j) => {
        const b = j.batches[batchIndex]!;
        b.state = 'done';
        b.error = undefined;
        b.finishedAt = this.iso();
      },
      { manifest: true },
    );
    this.emitProgress(job);
  }

  /** Polls until the call ends. Transient status errors are waited out; the call is kept, not resent. */
  private async poll(
    provider: Provider,
    jobId: string,
    batchIndex: number,
    requestId: string,
    model: string,
    deadline: number,
    signal: AbortSignal,
  ): Promise<void> {
    const interval = this.deps.settings.pollIntervalMs ?? Math.min(1000, Math.max(20, (provider.typicalCallMs ?? 5000) / 10));
    let transient = 0;
    for (;;) {
      let status;
      try {
        status = await this.track(provider, 'status', () => provider.status(requestId, model, signal));
        transient = 0;
      } catch (error) {
        const failure = asProviderError(error);
        if (signal.aborted || !failure.retryable) throw failure;
        transient += 1;
        if (this.now() > deadline) await this.abandon(provider, jobId, batchIndex, requestId, model);
        await sleep(Math.max(failure.details.retryAfterMs ?? 0, this.backoff(transient)), undefined, { signal });
        continue;
      }
      if (status.state === 'succeeded') return;
      if (status.state === 'failed' || status.state === 'canceled') {
        await this.change(jobId, (j) => void (j.batches[batchIndex]!.requestId = undefined));
        throw new ProviderError('failed', status.state === 'failed' ? `the provider reported: ${status.error}` : 'the call was cancelled at the provider');
      }
      // Checked after a status, not before: a call that finished while we were down is still collected.
      if (this.now() > deadline) await this.abandon(provider, jobId, batchIndex, requestId, model);
      await sleep(interval, undefined, { signal });
    }
  }

  /** Gives up on a call that took too long: cancels it at the provider and forgets it, so it is sent again. */
  private async abandon(provider: Provider, jobId: string, batchIndex: number, requestId: string, model: string): Promise<never> {
    await provider.cancel(requestId, model).catch(() => {});
    await this.change(jobId, (j) => void (j.batches[batchIndex]!.requestId = undefined));
    throw new ProviderError('timeout', `no result within ${Math.round(this.deps.settings.callTimeoutMs / 1000)} s; the call was cancelled`);
  }

  private async saveOutputs(provider: Provider, jobId: string, batchIndex: number, outputs: OutputImage[], signal: AbortSignal): Promise<void> {
    const job = this.active.get(jobId)!;
    const batch = job.batches[batchIndex]!;
    const width = String(job.request.count).length < 3 ? 3 : String(job.request.count).length;
    for (const output of outputs.slice(0, batch.size - batch.delivered)) {
      const number = batch.start + batch.delivered + 1;
      const stored = await this.deps.files.writeImage(jobId, String(number).padStart(width, '0'), await this.track(provider, 'download', () => provider.download(output, signal)));
      await this.change(jobId, (j) => {
        const b = j.batches[batchIndex]!;
        j.images = j.images.filter((img) => img.index !== number);
        j.images.push({
          index: number,
          batchIndex,
          file: stored.file,
          width: stored.width,
          height: stored.height,
          seed: output.seed ?? b.seed,
          nsfw: output.nsfw,
          contentType: stored.contentType,
          review: { status: 'pending' },
        });
        j.images.sort((a, b2) => a.index - b2.index);
        b.delivered += 1;
        if (output.nsfw) b.nsfw = true;
      });
      this.emit('images', { provider: provider.name, count: 1 });
      this.emitProgress(job);
    }
  }

  private async afterFailure(jobId: string, batchIndex: number, error: unknown, signal: AbortSignal): Promise<void> {
    const job = this.active.get(jobId);
    if (!job) return;
    const batch = job.batches[batchIndex]!;
    const provider = this.deps.providers[job.request.provider]!;
    if (job.canceledBy) {
      if (batch.requestId) await provider.cancel(batch.requestId, job.request.model).catch(() => {});
      await this.change(jobId, (j) => {
        const b = j.batches[batchIndex]!;
        if (!FINAL_BATCH.has(b.state)) Object.assign(b, { state: 'canceled', finishedAt: this.iso() });
      });
      return;
    }
    // Shutting down: leave the batch as persisted (its request id, if any, is polled on the next start).
    if (this.stopping && signal.aborted) return;

    let failure = asProviderError(error);
    if (error instanceof Error && error.name === 'UnreadableImageError') failure = new ProviderError('failed', error.message);
    // A call the provider no longer knows (purged, or the local provider restarted) is sent again.
    const lost = failure.kind === 'not_found' && batch.requestId !== undefined;
    if (lost) failure = new ProviderError('failed', `the provider no longer knows call ${batch.requestId}; sending it again`);
    const failures = batch.failures + 1;
    if (failure.kind === 'rate_limited') {
      this.scheduler.pause(provider.name, failure.details.retryAfterMs ?? this.backoff(failures));
    }
    const retry = failure.retryable && failures < this.deps.settings.maxAttempts;
    this.log.warn(
      { job: jobId, batch: batchIndex, kind: failure.kind, status: failure.details.status, failures, retry },
      `batch call failed: ${failure.message}`,
    );
    await this.change(
      jobId,
      (j) => {
        const b = j.batches[batchIndex]!;
        b.failures = failures;
        b.error = failure.message;
        if (lost) b.requestId = undefined;
        if (retry) {
          b.state = b.requestId ? 'submitted' : 'queued';
        } else {
          b.state = 'failed';
          b.requestId = undefined;
          b.finishedAt = this.iso();
        }
      },
      { manifest: !retry },
    );
    if (retry) {
      const delay = Math.max(this.backoff(failures), failure.details.retryAfterMs ?? 0);
      this.schedule(job, batchIndex, delay, true);
    }
    this.emitProgress(job);
  }

  /** Runs one provider request and reports it to the metrics. */
  private async track<T>(provider: Provider, operation: CallRecord['operation'], request: () => Promise<T>): Promise<T> {
    try {
      const result = await request();
      this.emit('call', { provider: provider.name, operation, outcome: 'ok' });
      return result;
    } catch (error) {
      const failure = asProviderError(error);
      this.emit('call', { provider: provider.name, operation, outcome: 'error', kind: failure.kind, status: failure.details.status });
      throw error;
    }
  }

  /** 1 s, 1.5 s, 2.25 s … capped at 10 s (both configurable). */
  private backoff(failures: number): number {
    const base = this.deps.settings.retryBaseMs ?? 1000;
    const max = this.deps.settings.retryMaxMs ?? 10_000;
    return Math.min(max, base * 1.5 ** Math.max(0, failures - 1));
  }

  private async maybeFinish(jobId: string): Promise<void> {
    const job = this.active.get(jobId);
    if (!job || isJobFinished(job) || (this.running.get(jobId) ?? 0) > 0 || this.finishing.has(jobId)) return;
    const backlogged = this.backlogOf(job.requester.tenant).includes(jobId);
    if (!job.canceledBy && (backlogged || !job.batches.every((b) => FINAL_BATCH.has(b.state)))) return;
    this.finishing.add(jobId);
    if (job.canceledBy) {
      for (const batch of job.batches) if (!FINAL_BATCH.has(batch.state)) batch.state = 'canceled';
    }
    const failed = job.batches.filter((b) => b.state === 'failed');
    const missing = failed.reduce((sum, b) => sum + b.size - b.delivered, 0);
    await this.change(
      jobId,
      (j) => {
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
      },
      { manifest: true },
    );
    const unused = job.request.count - job.images.length;
    if (this.deps.settings.tenantDailyImages !== undefined && unused > 0) {
      await this.deps.jobs.releaseImages(job.requester.tenant, job.createdAt.slice(0, 10), unused);
    }
    this.active.delete(jobId);
    this.finishing.delete(jobId);
    this.admittedOf(job.requester.tenant).delete(jobId);
    this.log.info({ job: jobId, state: job.state, images: job.images.length, error: job.error }, 'job finished');
    this.emitProgress(job);
    this.emit('finished', structuredClone(job));
    for (const resolve of this.waiters.get(jobId) ?? []) resolve(structuredClone(job));
    this.waiters.delete(jobId);
    this.admitNext(job.requester.tenant);
  }

  private async failJob(job: Job, reason: string): Promise<void> {
    job.state = 'failed';
    job.error = reason;
    job.finishedAt = this.iso();
    await this.deps.jobs.save(job);
    await this.deps.files.writeManifest(job.id, buildManifest(job));
  }

  private admitNext(tenant: string): void {
    const waiting = this.backlogOf(tenant);
    while (waiting.length > 0 && this.admittedOf(tenant).size < this.deps.settings.tenantMaxRunningJobs) {
      const next = this.active.get(waiting.shift()!);
      if (!next) continue;
      this.admittedOf(tenant).add(next.id);
      this.enqueueBatches(next);
      this.emitProgress(next);
    }
  }

  // ── state and events ──────────────────────────────────────────────────────────────────────

  private async load(jobId: string): Promise<Job> {
    const job = this.active.get(jobId) ?? (await this.deps.jobs.get(jobId));
    if (!job) throw new UserError('not_found', `Job ${jobId} does not exist (any more).`);
    return job;
  }

  /** Applies a change to a job and persists it, one change per job at a time. */
  private change(jobId: string, apply: (job: Job) => void | Promise<void>, options: { manifest?: boolean } = {}): Promise<Job> {
    const previous = this.locks.get(jobId) ?? Promise.resolve();
    const next = previous.then(async () => {
      const job = this.active.get(jobId) ?? (await this.deps.jobs.get(jobId));
      if (!job) throw new UserError('not_found', `Job ${jobId} does not exist (any more).`);
      await apply(job);
      job.updatedAt = this.iso();
      // The manifest first: if the process dies between the two writes, the store (which drives
      // resuming) is the one behind, and redoing the change rewrites both.
      if (options.manifest) await this.deps.files.writeManifest(jobId, buildManifest(job));
      await this.deps.jobs.save(job);
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

  private recordCallTime(provider: ProviderName, ms: number): void {
    const previous = this.callMs.get(provider);
    this.callMs.set(provider, previous === undefined ? ms : previous * 0.8 + ms * 0.2);
  }

  /** The job's progress as adapters show it: counts, the batch that moved last, position, ETA. */
  progress(job: Job): ProgressEvent {
    const provider = this.deps.providers[job.request.provider];
    const lane = this.deps.settings.lanes[job.request.provider] ?? { concurrency: 4 };
    const done = job.batches.filter((b) => b.state === 'done').length;
    const failedBatches = job.batches.filter((b) => b.state === 'failed');
    const imagesFailed = failedBatches.reduce((sum, b) => sum + b.size - b.delivered, 0);
    const moving = [...job.batches].filter((b) => b.state === 'submitted').sort((a, b) => a.index - b.index)[0];
    const last = moving ?? [...job.batches].reverse().find((b) => b.state !== 'queued');
    let queuePosition: number | undefined;
    if (job.state === 'queued' && provider) {
      const backlogIndex = this.backlogOf(job.requester.tenant).indexOf(job.id);
      queuePosition =
        backlogIndex >= 0
          ? this.scheduler.depth(provider.name) + backlogIndex + 1
          : this.scheduler.queuePosition(provider.name, job.id);
    }
    const remaining = job.batches.filter((b) => !FINAL_BATCH.has(b.state)).length;
    let etaMs: number | undefined;
    if (remaining > 0 && provider && !isJobFinished(job)) {
      const callMs = this.callMs.get(provider.name) ?? provider.typicalCallMs ?? 5000;
      const parallel = Math.max(1, Math.min(lane.concurrency, remaining));
      let perCall = callMs / parallel;
      if (lane.rateLimit) perCall = Math.max(perCall, lane.rateLimit.intervalMs / lane.rateLimit.limit);
      etaMs = Math.round(remaining * perCall + (queuePosition ? (queuePosition * callMs) / lane.concurrency : 0));
    }
    return {
      jobId: job.id,
      state: job.state,
      ...(queuePosition !== undefined ? { queuePosition } : {}),
      batchesTotal: job.batches.length,
      batchesDone: done,
      batchesFailed: failedBatches.length,
      ...(last ? { currentBatch: { index: last.index + 1, state: last.state, attempt: last.attempts } } : {}),
      imagesDone: job.images.length,
      imagesTotal: job.request.count,
      imagesFailed,
      ...(etaMs !== undefined ? { etaMs } : {}),
      failures: failedBatches.map((b) => `Batch ${b.index + 1}: ${b.error ?? 'failed'}`),
    };
  }

  private emitProgress(job: Job): void {
    this.emit('progress', this.progress(job), job);
  }
}

function formatWait(ms: number): string {
  const minutes = Math.max(1, Math.ceil(ms / 60_000));
  return minutes < 60 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
