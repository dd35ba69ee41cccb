/**
 * A Slack job's messages, from the first post to the last gallery page.
 *
 * Progress is a channel message (chat.postMessage) edited with chat.update under the bot token —
 * never through response_url, which allows 5 uses in 30 minutes. The message is found again through
 * job.chat.slack after a restart, so a resumed job finishes the same message. Events are taken for
 * every Slack job, not only the ones this process started.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { webApi } from '@slack/bolt';
import type { App } from '../../app.js';
import { isJobFinished } from '../../core/engine.js';
import { isUserError } from '../../core/errors.js';
import type { ImagineRequest, Job, ProgressEvent, Requester } from '../../core/types.js';
import { pageOf } from '../../core/views.js';
import { describe, isNoAccess, obeyRateLimits } from './errors.js';
import { factsOf, PLATFORM } from './facts.js';
import { postGallery, StoppedError } from './gallery.js';
import { Outbox } from '../outbox.js';
import { galleryMessage, inviteHint, NO_UNFURL, PAGE_SIZE, progressMessage, type GalleryState } from './render.js';
import { MessageUpdater } from './updates.js';

/** Answers the person who typed the command, privately (response_url: used at most once per command). */
export type Reply = (text: string) => Promise<void>;

export const GENERIC_FAILURE = 'Something went wrong on our side; the details are in the bot’s log.';

/** A gallery whose channel stays closed this long after the job finished is given up. */
const OUTBOX_MAX_AGE_MS = 7 * 86_400_000;

export interface MessagesOptions {
  /** @default 2000 — Slack's chat.update is Tier 3; one edit per message per 2 s stays well inside it */
  intervalMs?: number;
}

export class SlackMessages {
  private readonly engine: App['engine'];
  private readonly log: App['logger'];
  private readonly outbox: Outbox;
  private readonly progress: MessageUpdater<Readonly<Job>>;
  private readonly pages: MessageUpdater<{ job: Readonly<Job>; page: number }>;
  private readonly abort = new AbortController();
  /** progress messages posted by this process, before job.chat.slack is readable from the event's job */
  private readonly posted = new Map<string, { channel: string; ts: string }>();
  /** /imagine handlers between submit and post: a finished job waits for them before delivering */
  private readonly setups = new Set<Promise<unknown>>();
  private readonly delivering = new Map<string, Promise<void>>();
  private readonly tasks = new Set<Promise<unknown>>();
  /** jobs whose gallery Slack refused for want of access (shown on their progress message) */
  private readonly blocked = new Set<string>();

  constructor(
    private readonly app: App,
    private readonly client: webApi.WebClient,
    options: MessagesOptions = {},
  ) {
    this.engine = app.engine;
    this.log = app.logger;
    this.outbox = new Outbox(app.keyv, PLATFORM);
    const intervalMs = options.intervalMs ?? 2000;
    const onError = (key: string, error: string) => this.log.warn({ message: key, error }, 'slack: message edit failed');
    this.progress = new MessageUpdater({
      client,
      intervalMs,
      onError,
      render: (_, job) => {
        const target = this.targetOf(job);
        return target && { ...target, message: progressMessage(job, this.engine.progress(job as Job), this.galleryState(job)) };
      },
    });
    this.pages = new MessageUpdater({
      client,
      intervalMs,
      onError,
      render: (_, { job, page }) => {
        const facts = factsOf(job);
        const ts = facts?.pages?.[page - 1]?.ts;
        return facts && ts ? { channel: facts.channel, ts, message: galleryMessage(job, page) } : undefined;
      },
    });
  }

  /** Listens to the engine and picks up deliveries left unfinished by an earlier run. */
  attach(): void {
    this.engine.on('progress', this.onProgress);
    this.engine.on('finished', this.onFinished);
    this.track(this.recover());
  }

  async stop(): Promise<void> {
    this.engine.off('progress', this.onProgress);
    this.engine.off('finished', this.onFinished);
    this.abort.abort();
    this.progress.stop();
    this.pages.stop();
    // Steps in flight are short HTTP calls; do not let one hanging call hold the shutdown.
    await Promise.race([Promise.allSettled([...this.tasks]), sleep(5_000, undefined, { ref: false })]);
  }

  /**
   * After /imagine was acknowledged: submit, then post the progress message. Resolves to the job's id
   * when one was submitted (whether or not its message could be posted). Never throws.
   */
  async startJob(request: ImagineRequest, requester: Requester, reply: Reply): Promise<string | undefined> {
    const setup = this.setUp(request, requester, reply);
    this.setups.add(setup);
    try {
      return await setup;
    } finally {
      this.setups.delete(setup);
    }
  }

  private async setUp(request: ImagineRequest, requester: Requester, reply: Reply): Promise<string | undefined> {
    let job: Job;
    try {
      job = await this.engine.submit(request, requester);
    } catch (error) {
      if (!isUserError(error)) this.log.error({ err: error }, 'slack: /imagine failed');
      await this.answer(reply, isUserError(error) ? error.message : GENERIC_FAILURE);
      return undefined;
    }
    const channel = requester.channelId ?? '';
    try {
      await this.outbox.add(job.id);
      await this.postProgress(this.live(job), channel);
    } catch (error) {
      if (isNoAccess(error)) {
        await this.answer(reply, inviteHint(job.id));
      } else {
        this.log.error({ job: job.id, error: describe(error) }, 'slack: could not post the progress message');
        await this.answer(reply, `Job \`${job.id}\` is running, but I could not post its progress here; its gallery will follow when I can.`);
      }
    }
    return job.id;
  }

  /** A review changed a job: re-render that image's gallery page and the summary above the thread. */
  reviewed(job: Job, image: number): void {
    const page = pageOf(job, image, PAGE_SIZE);
    this.pages.push(`${job.id}:${page}`, { job, page });
    this.progress.push(job.id, job);
  }

  /** The bot was added to a channel: post what was waiting for it there. */
  async channelOpened(channel: string): Promise<void> {
    for (const id of await this.outbox.list()) {
      const job = await this.engine.get(id);
      if (!job || (factsOf(job)?.channel ?? job.requester.channelId) !== channel) continue;
      if (isJobFinished(job)) this.deliver(id);
      else if (!this.targetOf(job)) {
        await this.postProgress(this.live(job), channel).catch((error: unknown) =>
          this.log.warn({ job: id, error: describe(error) }, 'slack: progress message still cannot be posted'),
        );
      }
    }
  }

  private readonly onProgress = (_: ProgressEvent, job: Readonly<Job>): void => {
    if (job.requester.platform !== PLATFORM || !this.targetOf(job)) return;
    this.progress.push(job.id, job);
  };

  private readonly onFinished = (job: Job): void => {
    if (job.requester.platform === PLATFORM) this.deliver(job.id);
  };

  /** Final state, then the gallery; one delivery per job at a time. */
  private deliver(jobId: string): void {
    if (this.delivering.has(jobId) || this.abort.signal.aborted) return;
    const delivery = this.deliverWithRetries(jobId).finally(() => this.delivering.delete(jobId));
    this.delivering.set(jobId, delivery);
    this.track(delivery);
  }

  private async deliverWithRetries(jobId: string): Promise<void> {
    // A job can finish before its /imagine handler has posted the message it must end in.
    await Promise.allSettled([...this.setups]);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.deliverOnce(jobId);
      } catch (error) {
        if (error instanceof StoppedError || this.abort.signal.aborted) return;
        if (isNoAccess(error)) {
          this.log.info({ job: jobId, error: describe(error) }, 'slack: gallery waits until the bot is invited');
          // The progress message may exist (chat:write.public) while uploads are refused: say so there.
          this.blocked.add(jobId);
          const job = await this.engine.get(jobId);
          if (job && this.targetOf(job)) this.progress.push(jobId, job);
          return;
        }
        this.log.warn({ job: jobId, attempt, error: describe(error) }, 'slack: gallery delivery failed');
        if (attempt >= 3) return; // stays in the outbox: the next start tries again
        await sleep(1000 * 2 ** attempt, undefined, { signal: this.abort.signal }).catch(() => undefined);
      }
    }
  }

  private async deliverOnce(jobId: string): Promise<void> {
    const job = await this.engine.get(jobId);
    if (!job || !isJobFinished(job)) return;
    let facts = factsOf(job);
    const channel = facts?.channel ?? job.requester.channelId;
    if (!channel) return this.outbox.remove(jobId);
    let ts = this.targetOf(job)?.ts;
    if (!ts) {
      // Never posted (no access at the time, or a restart right after submit): the final state is the first.
      ts = await this.postProgress(job, channel);
    } else {
      this.progress.push(jobId, job);
      await this.progress.flush(jobId);
    }
    if (!facts?.delivered) {
      await postGallery({ client: this.client, engine: this.engine, jobDir: (id) => this.app.files.jobDir(id), signal: this.abort.signal }, jobId, channel, ts);
      await this.engine.annotate(jobId, PLATFORM, { delivered: true });
    }
    this.posted.delete(jobId);
    this.blocked.delete(jobId);
    await this.outbox.remove(jobId);
    const done = await this.engine.get(jobId);
    facts = done && factsOf(done);
    if (done && facts?.delivered) this.progress.push(jobId, done); // "review them in the thread"
  }

  /** Posts the progress message in its current state and remembers it (memory first, then the store). */
  private async postProgress(job: Readonly<Job>, channel: string): Promise<string> {
    const message = progressMessage(job, this.engine.progress(job as Job), this.galleryState(job));
    const res = await obeyRateLimits(
      () => this.client.chat.postMessage({ channel, text: message.text, blocks: message.blocks, ...NO_UNFURL }),
      this.abort.signal,
    );
    if (!res.ts) throw new Error('chat.postMessage answered without a ts');
    this.posted.set(job.id, { channel, ts: res.ts });
    this.progress.posted(job.id, message);
    await this.engine.annotate(job.id, PLATFORM, { channel, ts: res.ts });
    // Events that arrived while posting: sent a full interval later, and only if they changed anything.
    this.progress.push(job.id, this.live(job));
    return res.ts;
  }

  private targetOf(job: Readonly<Job>): { channel: string; ts: string } | undefined {
    const mine = this.posted.get(job.id);
    if (mine) return mine;
    const facts = factsOf(job);
    return facts?.ts ? { channel: facts.channel, ts: facts.ts } : undefined;
  }

  private galleryState(job: Readonly<Job>): GalleryState {
    if (!isJobFinished(job)) return 'none';
    if (factsOf(job)?.delivered) return 'posted';
    return this.blocked.has(job.id) ? 'blocked' : 'posting';
  }

  /** The engine's own copy of a running job (always current), else the copy we have. */
  private live(job: Readonly<Job>): Readonly<Job> {
    return this.engine.activeJobs().find((j) => j.id === job.id) ?? job;
  }

  private async recover(): Promise<void> {
    for (const id of await this.outbox.list()) {
      const job = await this.engine.get(id);
      if (!job || Date.parse(job.finishedAt ?? '') < Date.now() - OUTBOX_MAX_AGE_MS) {
        await this.outbox.remove(id);
        continue;
      }
      if (isJobFinished(job)) this.deliver(id);
    }
  }

  private async answer(reply: Reply, text: string): Promise<void> {
    await reply(text).catch((error: unknown) => this.log.warn({ error: describe(error) }, 'slack: could not answer the user'));
  }

  private track(task: Promise<unknown>): void {
    const settled = task.catch((error: unknown) => this.log.error({ error: describe(error) }, 'slack: background task failed'));
    this.tasks.add(settled);
    void settled.finally(() => this.tasks.delete(settled));
  }
}
