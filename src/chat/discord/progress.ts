/**
 * Renders the engine's events into each Discord job's progress message, at most one edit per message
 * per interval and always the latest state (LatestThrottle), then posts the gallery when the job
 * finishes. The message is found through `job.chat.discord`, so a restarted process (new client, same
 * store) keeps editing the same message.
 */
import type { Outbox } from '../outbox.js';
import { DiscordAPIError } from 'discord.js';
import { isJobFinished, type Engine } from '../../core/engine.js';
import { LatestThrottle } from '../../core/throttle.js';
import type { Job, ProgressEvent } from '../../core/types.js';
import { gallerySummary, progressView } from '../../core/views.js';
import { postGallery } from './gallery.js';
import { progressBody, type MessageBody } from './render.js';
import { describeError, factsOf, type MessageTarget, type Transport } from './transport.js';

export interface Log {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface RelayDeps {
  engine: Engine;
  /** jobs whose gallery is not posted yet, kept in the store across restarts */
  outbox: Outbox;
  transport: Transport;
  jobDir: (jobId: string) => string;
  log: Log;
  /** @default 1500 */
  intervalMs?: number;
  /** keeps a promise alive until stop() (gallery uploads, catch-ups) */
  track: (work: Promise<unknown>) => void;
}

interface Edit {
  target: MessageTarget & { gone?: boolean };
  body: MessageBody;
}

/**
 * Unknown Message / Unknown Channel (deleted), Missing Access / Missing Permissions (the bot token
 * may not edit there, and no other route is left): editing again would only fail again.
 */
const GONE_CODES: ReadonlySet<number | string> = new Set([10008, 10003, 50001, 50013]);
function isGone(error: unknown): boolean {
  return error instanceof DiscordAPIError && GONE_CODES.has(error.code);
}

/** How long an idle finished job's throttle slot is kept (reviews re-render its summary). */
const IDLE_MS = 60_000;
/** Finished jobs remembered so a late duplicate 'finished' cannot post a second gallery. */
const FINISHED_MEMORY = 2_000;

export class ProgressRelay {
  /** jobs this process answered, with their interaction token while it lives */
  private readonly targets = new Map<string, MessageTarget>();
  private readonly finished = new Set<string>();
  private readonly touched = new Map<string, number>();
  private readonly throttle: LatestThrottle<Edit>;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly onProgress = (event: ProgressEvent, job: Readonly<Job>) => this.progress(event, job);
  private readonly onFinished = (job: Job) => this.deps.track(this.finish(job));

  constructor(private readonly deps: RelayDeps) {
    this.throttle = new LatestThrottle<Edit>({
      intervalMs: deps.intervalMs ?? 1500,
      send: (_, edit) => this.send(edit),
      onError: (jobId, error) => deps.log.warn({ job: jobId, err: describeError(error) }, 'discord progress edit failed'),
    });
  }

  attach(): void {
    this.deps.engine.on('progress', this.onProgress);
    this.deps.engine.on('finished', this.onFinished);
    this.sweeper = setInterval(() => this.sweep(), IDLE_MS);
    this.sweeper.unref();
  }

  /** Stops listening to the engine; work already started (a final edit, a gallery) may finish. */
  detach(): void {
    this.deps.engine.off('progress', this.onProgress);
    this.deps.engine.off('finished', this.onFinished);
    clearInterval(this.sweeper);
  }

  /** Drops every waiting edit and its timer; nothing is sent after this. */
  close(): void {
    this.detach();
    this.closed = true;
    for (const key of this.touched.keys()) this.throttle.forget(key);
    this.touched.clear();
  }

  /**
   * A new job's message, known once submit has returned. The events emitted before (the engine
   * emits inside submit) found no target and were dropped: catchUp() shows the current state.
   */
  async register(jobId: string, target: MessageTarget): Promise<void> {
    this.targets.set(jobId, target);
    await this.deps.outbox.add(jobId);
  }

  /**
   * Galleries a restart cut off: a job that finished while no process was there to post its gallery
   * (or in the middle of posting it) is delivered now. Call once the client can send.
   */
  async redeliver(): Promise<void> {
    for (const id of await this.deps.outbox.list()) {
      const job = await this.deps.engine.get(id);
      if (!job) await this.deps.outbox.remove(id);
      else if (isJobFinished(job)) this.deps.track(this.finish(job));
    }
  }

  async catchUp(jobId: string): Promise<void> {
    const job = await this.deps.engine.get(jobId);
    const target = this.targets.get(jobId);
    if (!job || !target) return;
    if (isJobFinished(job)) await this.finish(job);
    else this.push(job.id, target, progressBody(progressView(job, this.deps.engine.progress(job))));
  }

  /** A 429 on a message: no edit of it before the Retry-After has passed. */
  holdForMessage(messageId: string, ms: number): void {
    for (const [jobId, target] of this.targets) if (target.messageId === messageId) this.throttle.holdFor(jobId, ms);
  }

  /** After a review: the progress message's summary line follows, throttled like progress. */
  refreshSummary(job: Job): void {
    const target = this.targets.get(job.id) ?? copyOf(factsOf(job.chat));
    if (!target) return;
    this.push(job.id, target, progressBody(progressView(job, this.deps.engine.progress(job)), gallerySummary(job)));
  }

  private targetOf(job: Readonly<Job>): MessageTarget | undefined {
    if (job.requester.platform !== 'discord') return undefined;
    let target = this.targets.get(job.id);
    if (!target && !this.finished.has(job.id)) {
      // A job from before a restart: its message is in the store.
      target = copyOf(factsOf(job.chat));
      if (target) this.targets.set(job.id, target);
    }
    return target;
  }

  private async send(edit: Edit): Promise<void> {
    if (edit.target.gone) return;
    try {
      await this.deps.transport.edit(edit.target, edit.body);
    } catch (error) {
      if (!isGone(error)) throw error;
      edit.target.gone = true;
      this.deps.log.info({ message: edit.target.messageId }, 'discord progress message is gone; no more edits to it');
    }
  }

  private push(jobId: string, target: MessageTarget, body: MessageBody): void {
    if (this.closed) return;
    this.touched.set(jobId, Date.now());
    this.throttle.push(jobId, { target, body });
  }

  private progress(event: ProgressEvent, job: Readonly<Job>): void {
    if (isJobFinished(job)) return; // the final state is rendered by finish(), with its summary
    const target = this.targetOf(job);
    if (target) this.push(job.id, target, progressBody(progressView(job, event)));
  }

  /** Final state (flushed at once), then the gallery, once per job. */
  private async finish(job: Job): Promise<void> {
    const target = this.targetOf(job);
    if (!target || this.finished.has(job.id)) return;
    this.remember(job.id);
    const view = progressView(job, this.deps.engine.progress(job));
    const summary = gallerySummary(job);
    this.push(job.id, target, progressBody(view, summary));
    await this.throttle.flush(job.id);
    try {
      if (!factsOf(job.chat)?.gallery && job.images.length > 0) {
        const gallery = await postGallery(this.deps, job, target);
        await this.deps.engine.annotate(job.id, 'discord', { gallery });
      }
    } catch (error) {
      this.deps.log.error({ job: job.id, err: describeError(error) }, 'discord gallery could not be posted');
      const note = 'The gallery could not be posted here; the images are in the output folder.';
      this.push(job.id, target, progressBody({ ...view, failures: [...view.failures, note] }, summary));
      await this.throttle.flush(job.id);
    } finally {
      // From here on, the message is reached through the store (bot token); the interaction token goes.
      this.targets.delete(job.id);
      await this.deps.outbox.remove(job.id);
    }
  }

  private remember(jobId: string): void {
    this.finished.add(jobId);
    if (this.finished.size > FINISHED_MEMORY) this.finished.delete(this.finished.values().next().value!);
  }

  /** Forgets throttle slots of finished jobs nobody has touched for a while. */
  private sweep(): void {
    const cutoff = Date.now() - IDLE_MS;
    for (const [jobId, at] of this.touched) {
      if (at < cutoff && !this.targets.has(jobId)) {
        this.throttle.forget(jobId);
        this.touched.delete(jobId);
      }
    }
  }
}

function copyOf(facts: ReturnType<typeof factsOf>): MessageTarget | undefined {
  return facts ? { ...facts } : undefined;
}
