/**
 * Runs one batch against its provider by doing what the batch machine (batch-state.ts) decides:
 * submit (through the provider's gate), poll, fetch the result, download each output into the job
 * folder. It reports every outcome to the recorder (the engine), which applies it to the job under the job's lock
 * and answers with the next decision. The runner owns the I/O; the policy is the machine's.
 */
import {
  afterStatus,
  afterStatusError,
  type BatchEvent,
  type CachedOutput,
  type Decision,
  type DownloadItem,
  type PollDecision,
  type RetrySettings,
} from './batch-state.js';
import { delay } from './delay.js';
import type { CallRecord, ImageReader, ImageStorage, Logger } from './ports.js';
import { promptOf } from './planner.js';
import { asImageError, asProviderError, MAX_TIMER_MS, ProviderError, UPSCALE_SCALE, type BatchCall, type CallStatus, type OutputImage, type Provider } from './provider.js';
import type { Dispatcher } from './dispatch.js';
import { isJobFinished } from './progress.js';
import type { AspectRatio, Batch, ImagineRequest, Job, OutputFormat, ProviderName } from './types.js';

/**
 * What makes one image: the call (provider, model, parameters, prompt, seed, size) and the image's
 * place in that call's output. The same identity gives the same picture, so it need not be paid twice.
 */
export interface ImageIdentity {
  provider: ProviderName;
  model: string;
  prompt: string;
  negative?: string;
  aspectRatio: AspectRatio;
  format: OutputFormat;
  quality?: number;
  /** the call's seed and how many images it asked for */
  seed: number;
  count: number;
  /** 0-based position in the call's output */
  output: number;
  /** LoRAs and their scales, in order (none: absent, so earlier entries keep matching) */
  loras?: string;
  /** a draft (small) image is not the full-size one */
  draft?: boolean;
}

/** An image delivered by an earlier job, as the cache knows it. */
export interface CachedImage {
  jobId: string;
  /** as the job recorded it when saved (a review may have moved it since) */
  file: string;
  nsfw: boolean;
  seed?: number;
}

/**
 * Images already delivered, by what made them (src/store/cache.ts, in the Keyv store). A call of a job
 * whose seed was given, all of whose images are known, is answered from their files instead of sent.
 */
export interface ImageCache {
  /** the image kept for each identity, in the same order (undefined where there is none) */
  find(identities: readonly ImageIdentity[]): Promise<(CachedImage | undefined)[]>;
  /** its bytes, wherever a review moved it; undefined when it is gone */
  read(image: CachedImage): Promise<Buffer | undefined>;
  remember(entries: readonly { identity: ImageIdentity; image: CachedImage }[]): Promise<void>;
}

/** The identity of output `output` of a call of this request. */
export function imageIdentity(
  provider: ProviderName,
  request: Readonly<ImagineRequest>,
  call: { seed: number; count: number; prompt?: number },
  output: number,
): ImageIdentity {
  return {
    provider,
    model: request.model,
    prompt: promptOf(request, call),
    ...(request.negative ? { negative: request.negative } : {}),
    aspectRatio: request.aspectRatio,
    format: request.format ?? 'png',
    ...(request.quality !== undefined ? { quality: request.quality } : {}),
    seed: call.seed,
    count: call.count,
    output,
    ...(request.loras?.length ? { loras: request.loras.map((l) => `${l.id}:${l.scale}`).join(',') } : {}),
    ...(request.draft ? { draft: true } : {}),
  };
}

/** The format a job's images are kept in (converted on saving when the provider sent another); an upscale's in `final/`. */
function wantedFormat(request: Readonly<ImagineRequest>, batch?: Pick<Batch, 'upscale'>): { format: OutputFormat; quality?: number; folder?: 'final' } {
  return {
    format: request.format ?? 'png',
    ...(request.quality !== undefined ? { quality: request.quality } : {}),
    ...(batch?.upscale ? { folder: 'final' as const } : {}),
  };
}

/** What the runner needs from whoever owns the jobs (the engine): read a job, record what happened. */
export interface BatchRecorder {
  /** the job as it stands: a read-only snapshot, or undefined once it is gone */
  job(jobId: string): Promise<Readonly<Job> | undefined>;
  /** applies what happened to a batch under the job's lock, and answers what to do next */
  record(jobId: string, batchIndex: number, event: BatchEvent): Promise<Decision>;
  /** one provider request, for the metrics */
  call(record: CallRecord): void;
}

export interface RunnerDeps {
  recorder: BatchRecorder;
  providers: Partial<Record<ProviderName, Provider>>;
  /** `read`: an approved draft's bytes, sent to the upscaler (without it, an upscale fails) */
  files: ImageStorage & Partial<Pick<ImageReader, 'read'>>;
  /** the provider's gate: submits wait here for a pause to end and a place in the rate window */
  gate: Pick<Dispatcher, 'throttle'>;
  settings: RetrySettings;
  log: Logger;
  now: () => number;
  /** images already delivered, served instead of a call (CACHE=off: none) */
  cache?: ImageCache;
}

/** One try of one batch: what every step of it needs to know. */
interface Run {
  jobId: string;
  batchIndex: number;
  job: Readonly<Job>;
  provider: Provider;
  /** the model this batch calls: the job's, or the provider's upscaler for an upscale */
  model: string;
  signal: AbortSignal;
  /** outputs of the call, once fetched */
  outputs: OutputImage[];
  /** the call they were fetched from */
  requestId?: string;
  /** the batch was served from the cache: no call was made */
  cached?: boolean;
}

export class BatchRunner {
  /** submits between "sent" and "request id saved" */
  private submitting = 0;
  /** recent call durations per provider, for ETAs */
  private readonly callMs = new Map<ProviderName, number>();

  constructor(private readonly deps: RunnerDeps) {}

  /** Submits on their way whose request id is not saved yet (a shutdown lets them finish). */
  submitsInFlight(): number {
    return this.submitting;
  }

  /** How long a call to this provider takes these days, once one has finished. */
  recentCallMs(provider: ProviderName): number | undefined {
    return this.callMs.get(provider);
  }

  /** One try of a batch; settles its own failures (each is recorded, and maybe retried). */
  async run(jobId: string, batchIndex: number, signal: AbortSignal, release?: () => void): Promise<void> {
    const job = await this.deps.recorder.job(jobId);
    if (!job || isJobFinished(job) || signal.aborted) return;
    const provider = this.deps.providers[job.request.provider]!;
    const model = job.batches[batchIndex]?.upscale?.model ?? job.request.model;
    const run: Run = { jobId, batchIndex, job, provider, model, signal, outputs: [] };
    const started = this.deps.now();
    let decision = await this.deps.recorder.record(jobId, batchIndex, { type: 'start' });
    for (;;) {
      try {
        switch (decision.kind) {
          case 'submit':
            decision = (await this.reuse(run, decision)) ?? (await this.submit(run, decision));
            continue;
          case 'poll':
            decision = await this.poll(run, decision);
            continue;
          case 'download':
            // The provider is done with the call: its slot may start the next while this one saves.
            release?.();
            decision = await this.download(run, decision);
            continue;
          case 'cancel':
            if (decision.requestId) await provider.cancel(decision.requestId, model).catch(() => {});
            return;
          case 'done':
            if (run.requestId !== undefined) await provider.settled?.(run.requestId, model).catch(() => {});
            if (run.cached) return;
            this.recordCallTime(provider.name, this.deps.now() - started);
            await this.remember(run);
            return;
          default:
            // retry, fail, stop: the engine has acted on them already
            return;
        }
      } catch (error) {
        decision = await this.deps.recorder.record(jobId, batchIndex, this.failure(error, run));
      }
    }
  }

  private failure(error: unknown, run: Run, dropCall = false): BatchEvent {
    return { type: 'error', error: asProviderError(error), aborted: run.signal.aborted, ...(dropCall ? { dropCall } : {}) };
  }

  /**
   * Sends the call through the provider's gate and records its request id before the gate lets the
   * next submit through. A failed submit is recorded there too: a 429 pauses the whole lane before
   * another tenant's submit can pass.
   */
  private async submit(run: Run, decision: Extract<Decision, { kind: 'submit' }>): Promise<Decision> {
    const { request } = run.job;
    const batch = run.job.batches[run.batchIndex]!;
    const { folder: _folder, ...format } = wantedFormat(request);
    const call: BatchCall = {
      prompt: promptOf(request, batch),
      negative: request.negative,
      model: run.model,
      aspectRatio: request.aspectRatio,
      count: decision.count,
      seed: decision.seed,
      ...format,
      ...(request.draft && !batch.upscale ? { draft: true } : {}),
      ...(request.loras?.length && !batch.upscale ? { loras: request.loras } : {}),
      ...(batch.upscale ? { upscale: await this.draftOf(run.job, batch.upscale.image) } : {}),
    };
    return this.deps.gate.throttle(
      run.provider.name,
      async () => {
        this.submitting += 1;
        try {
          let requestId: string;
          try {
            requestId = await this.track(run.provider, 'submit', () => run.provider.submit(call, run.signal));
          } catch (error) {
            return await this.deps.recorder.record(run.jobId, run.batchIndex, this.failure(error, run));
          }
          return await this.deps.recorder.record(run.jobId, run.batchIndex, { type: 'submitted', requestId });
        } finally {
          this.submitting -= 1;
        }
      },
      run.signal,
    );
  }

  /** The approved image an upscale sends, as it is kept now (its review moved it to `approved/`). */
  private async draftOf(job: Readonly<Job>, index: number): Promise<NonNullable<BatchCall['upscale']>> {
    const image = job.images.find((img) => img.index === index);
    if (!image || !this.deps.files.read) throw new ProviderError('invalid', `image ${index} of job ${job.id} cannot be read for upscaling`);
    return { image: await this.deps.files.read(job.id, image.file), contentType: image.contentType, scale: UPSCALE_SCALE };
  }

  /**
   * Waits for the call to end, then fetches its outputs; the machine says how long to wait and when to
   * give up. The provider's push (`watch`) is tried first, until the deadline; polling takes over when
   * it fails or the deadline passes, and decides from there as it always did.
   */
  private async poll(run: Run, decision: Extract<Decision, { kind: 'poll' }>): Promise<Decision> {
    const { provider, signal, model } = run;
    const { requestId, deadline } = decision;
    let transient = 0;
    const context = () => ({ now: this.deps.now(), deadline, settings: this.deps.settings, typicalCallMs: provider.typicalCallMs });
    let pushed = await this.watch(run, requestId, deadline);
    for (;;) {
      let next: PollDecision;
      try {
        const status = pushed ?? (await this.track(provider, 'status', () => provider.status(requestId, model, signal)));
        pushed = undefined;
        transient = 0;
        next = afterStatus(status, context());
      } catch (error) {
        transient += 1;
        next = afterStatusError(asProviderError(error), transient, signal.aborted, context());
      }
      switch (next.kind) {
        case 'wait':
          await delay(next.ms, signal);
          continue;
        case 'fetch': {
          run.outputs = await this.track(provider, 'result', () => provider.result(requestId, model, signal));
          run.requestId = requestId;
          return this.deps.recorder.record(run.jobId, run.batchIndex, { type: 'fetched', outputs: run.outputs.length });
        }
        case 'abandon':
          await provider.cancel(requestId, model).catch(() => {});
          return this.deps.recorder.record(run.jobId, run.batchIndex, this.failure(next.error, run, true));
        case 'give_up':
          return this.deps.recorder.record(run.jobId, run.batchIndex, this.failure(next.error, run, next.dropCall));
      }
    }
  }

  /**
   * The call's final status from the provider's push, or undefined when it has none, the push failed,
   * the deadline passed or the task was aborted: the poll loop then asks for itself.
   */
  private async watch(run: Run, requestId: string, deadline: number): Promise<CallStatus | undefined> {
    const { provider, signal } = run;
    const waitMs = deadline - this.deps.now();
    // Past the deadline (a call resumed late) one status poll decides: no push to wait for.
    if (!provider.watch || signal.aborted || waitMs <= 0) return undefined;
    const watching = new AbortController();
    const stop = () => watching.abort();
    signal.addEventListener('abort', stop, { once: true });
    const timer = setTimeout(stop, Math.min(MAX_TIMER_MS, waitMs));
    try {
      const status = await provider.watch(requestId, run.model, watching.signal);
      this.deps.recorder.call({ provider: provider.name, operation: 'watch', outcome: 'ok' });
      return status;
    } catch (error) {
      // A watch we stopped (deadline, cancel, shutdown) is not a failure of the push.
      if (!watching.signal.aborted) {
        const failure = asProviderError(error);
        this.deps.recorder.call({ provider: provider.name, operation: 'watch', outcome: 'error', kind: failure.kind, status: failure.details.status });
        this.deps.log.debug({ job: run.jobId, batch: run.batchIndex, requestId, error: failure.message }, 'status push failed; polling');
      }
      return undefined;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', stop);
    }
  }

  /**
   * Downloads the outputs the machine asks for, all at once (a call is on disk after its slowest
   * download, not the sum), then records each in output order. A refused output (not an allowed host,
   * too large, not an image) is recorded as such and the others are still kept; any other failure is
   * the try's, raised once the outputs that did arrive are recorded (a retry fetches only the rest).
   */
  private async download(run: Run, decision: Extract<Decision, { kind: 'download' }>): Promise<Decision> {
    const { jobId, batchIndex } = run;
    const outcomes = await Promise.allSettled(decision.outputs.map((item) => this.keep(run, item)));
    let next: Decision = decision;
    let failure: Error | undefined;
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected') {
        failure ??= asImageError(outcome.reason);
        continue;
      }
      next = await this.deps.recorder.record(jobId, batchIndex, outcome.value);
      // Cancelled or stopped meanwhile: the rest is not recorded (a resumed batch fetches it again).
      if (next.kind !== 'download') break;
    }
    if (failure !== undefined && next.kind === 'download') throw failure;
    return next;
  }

  /** Downloads one output into its image's file: `saved`, or `refused` when the output may not be kept. */
  private async keep(run: Run, item: DownloadItem): Promise<Extract<BatchEvent, { type: 'saved' | 'refused' }>> {
    const { provider, signal, jobId, batchIndex } = run;
    const output = run.outputs[item.output]!;
    const digits = Math.max(3, String(run.job.request.count).length);
    let stored: Awaited<ReturnType<ImageStorage['writeImage']>>;
    try {
      const bytes = await this.track(provider, 'download', () => provider.download(output, signal));
      stored = await this.deps.files.writeImage(jobId, String(item.image).padStart(digits, '0'), bytes, wantedFormat(run.job.request, run.job.batches[batchIndex]));
    } catch (error) {
      const failure = asImageError(error);
      if (failure.kind !== 'refused' || signal.aborted) throw failure;
      this.deps.log.warn({ job: jobId, batch: batchIndex, output: item.output }, `image refused: ${failure.message}`);
      return { type: 'refused', output: item.output, reason: failure.message };
    }
    const image = {
      file: stored.file,
      width: stored.width,
      height: stored.height,
      contentType: stored.contentType,
      nsfw: output.nsfw,
      ...(output.seed !== undefined ? { seed: output.seed } : {}),
      // provider text: kept as a string of bounded length, shown only escaped
      ...(typeof output.revisedPrompt === 'string' && output.revisedPrompt ? { revisedPrompt: output.revisedPrompt.slice(0, 4000) } : {}),
    };
    return { type: 'saved', output: item.output, image, index: item.image };
  }

  /**
   * The call about to be sent, answered from the cache when its job's seed was given and every image
   * it would make was delivered before: each is copied (never linked: a review of one job must not
   * move another's file) into its image's file, and the batch is done without a call. Undefined when
   * any image is missing or cannot be copied: the whole call is sent then, since a call for only the
   * rest would be another call (another size), making other pictures.
   */
  private async reuse(run: Run, decision: Extract<Decision, { kind: 'submit' }>): Promise<Decision | undefined> {
    const { cache } = this.deps;
    const { job, jobId, batchIndex } = run;
    const batch = job.batches[batchIndex]!;
    if (!cache || !job.seedGiven || run.signal.aborted || batch.upscale) return undefined;
    const outputs = Array.from({ length: decision.count }, (_, output) => output);
    let images: CachedOutput[];
    try {
      const found = await cache.find(outputs.map((output) => imageIdentity(job.request.provider, job.request, { ...decision, ...(batch.prompt !== undefined ? { prompt: batch.prompt } : {}) }, output)));
      if (found.length !== outputs.length || found.some((hit) => hit === undefined)) return undefined;
      const digits = Math.max(3, String(job.request.count).length);
      images = await Promise.all(
        found.map(async (hit, output): Promise<CachedOutput> => {
          const bytes = await cache.read(hit!);
          if (!bytes) throw new Error(`${hit!.file} of job ${hit!.jobId} is gone`);
          const index = batch.start + batch.delivered + output + 1;
          const stored = await this.deps.files.writeImage(jobId, String(index).padStart(digits, '0'), bytes, wantedFormat(job.request));
          return {
            file: stored.file,
            width: stored.width,
            height: stored.height,
            contentType: stored.contentType,
            nsfw: hit!.nsfw,
            ...(hit!.seed !== undefined ? { seed: hit!.seed } : {}),
            output,
            index,
            from: { jobId: hit!.jobId, file: hit!.file },
          };
        }),
      );
    } catch (error) {
      this.deps.log.warn({ job: jobId, batch: batchIndex, err: error }, 'cached images could not be copied; calling the provider');
      return undefined;
    }
    run.cached = true;
    this.deps.log.info({ job: jobId, batch: batchIndex, images: images.length }, 'batch served from the image cache');
    return this.deps.recorder.record(jobId, batchIndex, { type: 'cached', images });
  }

  /**
   * Indexes the images of a batch that one call made whole (output k of the call seeded `batch.seed`
   * for `batch.size` images), for later jobs to reuse. Images of top-up calls are not indexed: the
   * call that made them is not the one a new job would send. A failure only costs a later call.
   */
  private async remember(run: Run): Promise<void> {
    const { cache } = this.deps;
    if (!cache) return;
    try {
      const job = await this.deps.recorder.job(run.jobId);
      const batch = job?.batches[run.batchIndex];
      if (!job || !batch || batch.cached || batch.upscale) return;
      const images = job.images.filter((image) => image.batchIndex === batch.index);
      const calls = new Set(images.map((image) => image.requestId));
      if (images.length !== batch.size || calls.size !== 1 || images.some((image) => image.cached || image.output === undefined)) return;
      const call = { seed: batch.seed, count: batch.size, ...(batch.prompt !== undefined ? { prompt: batch.prompt } : {}) };
      await cache.remember(
        images.map((image) => ({
          identity: imageIdentity(job.request.provider, job.request, call, image.output!),
          image: { jobId: job.id, file: image.file, nsfw: image.nsfw, ...(image.seed !== undefined ? { seed: image.seed } : {}) },
        })),
      );
    } catch (error) {
      this.deps.log.warn({ job: run.jobId, batch: run.batchIndex, err: error }, 'indexing images for the cache failed');
    }
  }

  /** Runs one provider request and reports it to the metrics. */
  private async track<T>(provider: Provider, operation: CallRecord['operation'], request: () => Promise<T>): Promise<T> {
    try {
      const result = await request();
      this.deps.recorder.call({ provider: provider.name, operation, outcome: 'ok' });
      return result;
    } catch (error) {
      const failure = asProviderError(error);
      this.deps.recorder.call({ provider: provider.name, operation, outcome: 'error', kind: failure.kind, status: failure.details.status });
      throw error;
    }
  }

  private recordCallTime(provider: ProviderName, ms: number): void {
    const previous = this.callMs.get(provider);
    this.callMs.set(provider, previous === undefined ? ms : previous * 0.8 + ms * 0.2);
  }
}
