/**
 * Runs one batch against its provider: submit (through the provider's gate, saving the request id
 * before anything else), poll, fetch the result, download each image into the job folder. Decides
 * what a failure means: retry with backoff (pausing the provider on a 429), ask again for the rest of
 * a partial output, send a lost call again, or fail the batch for good with its reason.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { seedAt } from './planner.js';
import type { CallRecord, ImageStorage, Logger } from './ports.js';
import { FINAL_BATCH } from './progress.js';
import { asImageError, asProviderError, ProviderError, RETRY_AFTER_CAP_MS, type OutputImage, type Provider } from './provider.js';
import { oneLine } from './views.js';
import type { FairScheduler } from './scheduler.js';
import type { Job, ProviderName } from './types.js';

/** 429s a batch may meet, as a multiple of the attempt limit, before it gives up */
const THROTTLE_ALLOWANCE = 4;

export interface RetrySettings {
  /** failed tries per batch before it fails for good */
  maxAttempts: number;
  /** longest one provider call may take from submit to result */
  callTimeoutMs: number;
  /** first retry delay @default 1000; later ones grow ×1.5 up to retryMaxMs */
  retryBaseMs?: number;
  /** @default 10000 */
  retryMaxMs?: number;
  /** time between status polls @default a tenth of the provider's typical call, 20 ms to 1 s */
  pollIntervalMs?: number;
}

/** What the runner needs from the engine that owns the jobs. */
export interface BatchHost {
  job(jobId: string): Job | undefined;
  change(jobId: string, apply: (job: Job) => void | Promise<void>, options?: { manifest?: boolean; durable?: boolean }): Promise<Job>;
  progress(job: Job): void;
  schedule(job: Job, batchIndex: number, delayMs: number): void;
  stopping(): boolean;
  emit(event: 'call', record: CallRecord): boolean;
  emit(event: 'images', images: { provider: ProviderName; count: number }): boolean;
}

export class BatchRunner {
  /** submits between "sent" and "request id saved" */
  submitting = 0;
  /** recent call durations per provider, for ETAs */
  readonly callMs = new Map<ProviderName, number>();

  constructor(
    private readonly host: BatchHost,
    private readonly deps: {
      providers: Partial<Record<ProviderName, Provider>>;
      files: ImageStorage;
      scheduler: FairScheduler;
      settings: RetrySettings;
      log: Logger;
      now: () => number;
    },
  ) {}

  private now(): number {
    return this.deps.now();
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }

  private get log(): Logger {
    return this.deps.log;
  }

  private get scheduler(): FairScheduler {
    return this.deps.scheduler;
  }

  /** One try of a batch; never throws (a failure is recorded on the batch and maybe retried). */
  async run(jobId: string, batchIndex: number, signal: AbortSignal): Promise<void> {
    try {
      await this.runBatch(jobId, batchIndex, signal);
    } catch (error) {
      await this.afterFailure(jobId, batchIndex, error, signal);
    }
  }

  private async runBatch(jobId: string, batchIndex: number, signal: AbortSignal): Promise<void> {
    const job = this.host.job(jobId);
    if (!job || job.canceledBy || signal.aborted) return;
    const batch = job.batches[batchIndex]!;
    if (FINAL_BATCH.has(batch.state)) return;
    const provider = this.deps.providers[job.request.provider]!;
    const model = job.request.model;
    const started = this.now();

    if (!batch.requestId) {
      const count = batch.size - batch.delivered;
      // Written with the request id below (or redone after a crash, when the call is sent again).
      await this.host.change(
        jobId,
        (j) => {
          const b = j.batches[batchIndex]!;
          b.state = 'submitted';
          b.attempts += 1;
          b.submittedAt = new Date(started).toISOString();
          if (j.state === 'queued') j.state = 'running';
        },
        { durable: false },
      );
      this.host.progress(job);
      const call = {
        prompt: job.request.prompt,
        negative: job.request.negative,
        model,
        aspectRatio: job.request.aspectRatio,
        count,
        seed: seedAt(batch.seed, batch.delivered),
      };
      await this.scheduler.throttle(
        provider.name,
        async () => {
          this.submitting += 1;
          try {
            const id = await this.track(provider, 'submit', () => provider.submit(call, signal));
            await this.host.change(jobId, (j) => {
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
      this.host.progress(job);
    } else if (job.state === 'queued') {
      await this.host.change(jobId, (j) => void (j.state = 'running'), { durable: false });
    }

    const requestId = batch.requestId!;
    const deadline = Date.parse(batch.submittedAt ?? new Date(started).toISOString()) + this.deps.settings.callTimeoutMs;
    await this.poll(provider, jobId, batch.index, requestId, model, deadline, signal);
    const outputs = await this.track(provider, 'result', () => provider.result(requestId, model, signal));
    const { refused, reason } = await this.saveOutputs(provider, jobId, batchIndex, requestId, outputs, signal);

    const wanted = batch.size - batch.delivered;
    if (refused > 0 && wanted > 0) {
      // Asking again would pay for the same refusal: the batch ends with what it kept.
      throw new ProviderError('refused', `${refused} of ${outputs.length} images refused: ${reason}`);
    }
    if (wanted > 0) {
      // A partial output keeps what came and asks again for the rest, as a new call.
      await this.host.change(jobId, (j) => void (j.batches[batchIndex]!.requestId = undefined));
      throw new ProviderError('failed', `partial output: the provider returned ${outputs.length} of ${outputs.length + wanted} images`);
    }
    this.recordCallTime(provider.name, this.now() - started);
    await this.host.change(
      jobId,
      (j) => {
        const b = j.batches[batchIndex]!;
        b.state = 'done';
        b.error = undefined;
        b.finishedAt = this.iso();
      },
      // The manifest follows at the job's end (and at each review): a whole file per batch costs
      // more than the few calls it would save a reader after a crash.
    );
    this.host.progress(job);
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
        const wait = Math.min(RETRY_AFTER_CAP_MS, Math.max(failure.details.retryAfterMs ?? 0, this.backoff(transient)));
        await sleep(wait, undefined, { signal });
        continue;
      }
      if (status.state === 'succeeded') return;
      if (status.state === 'failed' || status.state === 'canceled') {
        await this.host.change(jobId, (j) => void (j.batches[batchIndex]!.requestId = undefined));
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
    await this.host.change(jobId, (j) => void (j.batches[batchIndex]!.requestId = undefined));
    throw new ProviderError('timeout', `no result within ${Math.round(this.deps.settings.callTimeoutMs / 1000)} s; the call was cancelled`);
  }

  /**
   * Downloads and keeps the outputs of one call. Outputs kept on an earlier try of the same call are
   * skipped by their index in the call, so a download that failed part-way is retried for the missing
   * outputs only: nothing paid for is lost, nothing is saved twice. A refused output (not an allowed
   * host, too large, not an image) fails that image; the others are still kept. Returns the reason of
   * the first refusal, if any.
   */
  private async saveOutputs(
    provider: Provider,
    jobId: string,
    batchIndex: number,
    requestId: string,
    outputs: OutputImage[],
    signal: AbortSignal,
  ): Promise<{ refused: number; reason?: string }> {
    const job = this.host.job(jobId)!;
    const batch = job.batches[batchIndex]!;
    const width = String(job.request.count).length < 3 ? 3 : String(job.request.count).length;
    const refusal: { refused: number; reason?: string } = { refused: 0 };
    for (const [position, output] of outputs.entries()) {
      if (batch.delivered >= batch.size) break;
      if (job.images.some((img) => img.batchIndex === batchIndex && img.requestId === requestId && img.output === position)) continue;
      const number = batch.start + batch.delivered + 1;
      let stored: Awaited<ReturnType<ImageStorage['writeImage']>>;
      try {
        const bytes = await this.track(provider, 'download', () => provider.download(output, signal));
        stored = await this.deps.files.writeImage(jobId, String(number).padStart(width, '0'), bytes);
      } catch (error) {
        const failure = asImageError(error);
        if (failure.kind !== 'refused' || signal.aborted) throw failure;
        refusal.refused += 1;
        refusal.reason ??= failure.message;
        this.log.warn({ job: jobId, batch: batchIndex, output: position }, `image refused: ${failure.message}`);
        continue;
      }
      await this.host.change(jobId, (j) => {
        const b = j.batches[batchIndex]!;
        j.images = j.images.filter((img) => img.index !== number);
        j.images.push({
          index: number,
          batchIndex,
          file: stored.file,
          width: stored.width,
          height: stored.height,
          seed: output.seed ?? b.seed,
          requestId,
          output: position,
          nsfw: output.nsfw,
          contentType: stored.contentType,
          review: { status: 'pending' },
        });
        j.images.sort((a, b2) => a.index - b2.index);
        b.delivered += 1;
        if (output.nsfw) b.nsfw = true;
        // Not awaited to disk: after a crash the call is polled again and its images fetched again.
      }, { durable: false });
      this.host.emit('images', { provider: provider.name, count: 1 });
      this.host.progress(job);
    }
    return refusal;
  }

  private async afterFailure(jobId: string, batchIndex: number, error: unknown, signal: AbortSignal): Promise<void> {
    const job = this.host.job(jobId);
    if (!job) return;
    const batch = job.batches[batchIndex]!;
    const provider = this.deps.providers[job.request.provider]!;
    if (job.canceledBy) {
      if (batch.requestId) await provider.cancel(batch.requestId, job.request.model).catch(() => {});
      await this.host.change(jobId, (j) => {
        const b = j.batches[batchIndex]!;
        if (!FINAL_BATCH.has(b.state)) Object.assign(b, { state: 'canceled', finishedAt: this.iso() });
      });
      return;
    }
    // Shutting down: leave the batch as persisted (its request id, if any, is polled on the next start).
    if (this.host.stopping() && signal.aborted) return;

    let failure = asProviderError(error);
    // A call the provider no longer knows (purged, or the local provider restarted) is sent again.
    const lost = failure.kind === 'not_found' && batch.requestId !== undefined;
    if (lost) failure = new ProviderError('failed', `the provider no longer knows call ${batch.requestId}; sending it again`);
    // A 429 is pacing, not a fault of the call: it has its own, larger allowance, so a batch that
    // waits its turn through a busy minute does not fail for it.
    const throttled = (batch.throttled ?? 0) + (failure.kind === 'rate_limited' ? 1 : 0);
    const failures = batch.failures + (failure.kind === 'rate_limited' ? 0 : 1);
    // A provider's 429 may ask for up to 5 minutes; anyone else's Retry-After (an image host's, a 503's)
    // is honoured only up to the normal backoff's ceiling.
    const retryAfterCap = failure.kind === 'rate_limited' ? RETRY_AFTER_CAP_MS : (this.deps.settings.retryMaxMs ?? 10_000);
    const retryAfterMs = failure.details.retryAfterMs === undefined ? undefined : Math.min(retryAfterCap, failure.details.retryAfterMs);
    // Only the provider's own API answers get here as rate_limited (image hosts never do: asImageError).
    if (failure.kind === 'rate_limited') this.scheduler.pause(provider.name, retryAfterMs ?? this.backoff(throttled));
    const { maxAttempts } = this.deps.settings;
    const retry =
      failure.retryable && (failure.kind === 'rate_limited' ? throttled < maxAttempts * THROTTLE_ALLOWANCE : failures < maxAttempts);
    this.log.warn(
      { job: jobId, batch: batchIndex, kind: failure.kind, status: failure.details.status, failures, retry },
      `batch call failed: ${failure.message}`,
    );
    await this.host.change(
      jobId,
      (j) => {
        const b = j.batches[batchIndex]!;
        b.failures = failures;
        if (throttled > 0) b.throttled = throttled;
        b.error = oneLine(failure.message);
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
      const delay = Math.max(this.backoff(failures + throttled), retryAfterMs ?? 0);
      this.host.schedule(job, batchIndex, delay);
    }
    this.host.progress(job);
  }

  /** Runs one provider request and reports it to the metrics. */
  private async track<T>(provider: Provider, operation: CallRecord['operation'], request: () => Promise<T>): Promise<T> {
    try {
      const result = await request();
      this.host.emit('call', { provider: provider.name, operation, outcome: 'ok' });
      return result;
    } catch (error) {
      const failure = asProviderError(error);
      this.host.emit('call', { provider: provider.name, operation, outcome: 'error', kind: failure.kind, status: failure.details.status });
      throw error;
    }
  }

  /** 1 s, 1.5 s, 2.25 s … capped at 10 s (both configurable). */
  private backoff(failures: number): number {
    const base = this.deps.settings.retryBaseMs ?? 1000;
    const max = this.deps.settings.retryMaxMs ?? 10_000;
    return Math.min(max, base * 1.5 ** Math.max(0, failures - 1));
  }

  private recordCallTime(provider: ProviderName, ms: number): void {
    const previous = this.callMs.get(provider);
    this.callMs.set(provider, previous === undefined ? ms : previous * 0.8 + ms * 0.2);
  }
}
