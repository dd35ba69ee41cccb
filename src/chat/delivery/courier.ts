/**
 * One platform's delivery of its jobs — the lifecycle every platform shares, so that each one only
 * posts and edits (platform.ts):
 * - progress: one latest-only throttle slot per message (edits.ts). The message's address is in memory
 *   once posted, else read back from `job.chat[platform]` (facts.ts): a restart edits the same message.
 * - finish: the final state at once, then the gallery page by page, each page recorded as it goes out,
 *   so a restart continues where it stopped instead of posting a page twice.
 * - outbox: a job is in it from its first post until its gallery is delivered. At start the finished
 *   ones are delivered; an entry whose job is gone, or finished over 7 days ago, is dropped and logged.
 * - retries: a gallery is tried 3 times, 2 s then 4 s apart; then its message says so and the next
 *   start tries again. Without access (NoAccess) it waits for retry() instead.
 * - stop: no new work, a gallery stops between two pages, work in flight gets a bounded wait; what is
 *   cut off stays in the outbox.
 * - several processes (distributed mode, shared.ts): posting a job's progress message and delivering
 *   its gallery happen under one lock per job and platform, so a second process (the other finisher, or
 *   a start-up redelivery) waits, then reads the job again and finds the message and the pages
 *   recorded; edits of one message are spaced across processes (EditGate) and render the job as stored
 *   when they go out, so an older state never follows a newer one another process showed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Keyv } from 'keyv';
import { isJobFinished, type Engine } from '../../core/engine.js';
import type { Job, ProgressEvent } from '../../core/types.js';
import type { Logger } from '../../logger.js';
import { progressCard } from './card.js';
import { Edits } from './edits.js';
import { readFacts, type Facts } from './facts.js';
import { Outbox } from './outbox.js';
import { NoAccess, type DeliveryPlatform, type GalleryPoster, type GalleryState, type PlatformName, type ProgressCard } from './platform.js';
import { EditGate, type SharedDelivery } from './shared.js';

export type DeliveryLog = Pick<Logger, 'info' | 'warn' | 'error'>;

export interface CourierOptions {
  /** tries at a finished job's gallery before it waits for the next start @default 3 */
  attempts?: number;
  /** the wait after the first failed try, doubled after each @default 2000 */
  retryBaseMs?: number;
  /** how long stop() waits for work in flight @default 5000 */
  stopTimeoutMs?: number;
  /** an outbox entry whose job finished this long ago is dropped @default 7 days */
  maxAgeMs?: number;
  now?: () => number;
}

export class Courier<T extends Record<string, unknown>, P = never> {
  readonly name: PlatformName;
  /** messages posted or registered by this process, before the job's stored facts can be read */
  private readonly targets = new Map<string, T>();
  /** follow() calls in progress: a job that finishes meanwhile waits for its message */
  private readonly starting = new Map<string, Promise<unknown>>();
  /** one delivery per job at a time; one asked for meanwhile (access given as a refused try ends) runs after */
  private readonly delivering = new Set<string>();
  private readonly again = new Set<string>();
  /** the gallery delivery running for each job (a rerun waits for it before it starts the next gallery) */
  private readonly inFlight = new Map<string, Promise<void>>();
  /** galleries that wait for access, or for the next start */
  private readonly trouble = new Map<string, 'blocked' | 'failed'>();
  private readonly tasks = new Set<Promise<unknown>>();
  private readonly abort = new AbortController();
  private readonly edits: Edits;
  private readonly outbox: Outbox;
  private readonly log: DeliveryLog;
  private readonly now: () => number;
  private stopped = false;

  constructor(
    private readonly platform: DeliveryPlatform<T, P>,
    private readonly deps: { engine: Engine; keyv: Keyv; log: DeliveryLog; shared?: SharedDelivery | undefined },
    private readonly options: CourierOptions = {},
    private readonly onStop: () => void = () => {},
  ) {
    this.name = platform.name;
    this.log = deps.log;
    this.now = options.now ?? (() => Date.now());
    const { shared } = deps;
    this.outbox = new Outbox(deps.keyv, platform.name, shared?.locks);
    this.edits = new Edits({
      intervalMs: platform.editIntervalMs,
      now: this.now,
      onError: (key, error) => this.log.warn({ edit: key, err: this.describe(error) }, `${this.name}: message edit failed`),
      onGone: (key) => this.log.info({ edit: key }, `${this.name}: the message is gone; no more edits to it`),
      ...(shared ? { gate: new EditGate(shared, platform.name, platform.editIntervalMs) } : {}),
    });
  }

  /** Delivers what a restart cut off. Called once, when the platform can send. */
  open(): void {
    this.track(this.redeliver());
  }

  /** Engine event: a job of this platform moved. Its final state goes out with its summary, from deliver(). */
  progress(event: ProgressEvent, job: Readonly<Job>): void {
    const target = this.stopped || isJobFinished(job) ? undefined : this.targetOf(job);
    if (target) this.pushProgress(job, target, progressCard(job, event));
  }

  /** Engine event: a job of this platform finished. */
  finished(job: Readonly<Job>): void {
    this.deliver(job.id);
  }

  /**
   * Shows a new job: records `target` (a message the platform already has, e.g. Discord's deferred
   * reply) or posts the progress message, then catches up with what happened meanwhile. Rejects with
   * the platform's error when the message cannot be posted; the job stays in the outbox and is
   * delivered once it can be (retry(), or the next start).
   */
  async follow(job: Readonly<Job>, target?: T): Promise<void> {
    if (this.stopped) return;
    const start = this.start(job, target);
    const settled = start.catch(() => undefined);
    this.starting.set(job.id, settled);
    try {
      await start;
    } finally {
      if (this.starting.get(job.id) === settled) this.starting.delete(job.id);
    }
  }

  /**
   * A review changed a job (a button, the review page, the CLI: the engine's `reviewed`, routed here by
   * Delivery): the summary follows on its progress message, and the pages holding those images are re-rendered.
   */
  reviewed(job: Readonly<Job>, images: number | readonly number[]): void {
    const target = this.stopped ? undefined : this.targetOf(job);
    if (!target) return;
    this.pushProgress(job, target, this.cardOf(job));
    const gallery = this.platform.gallery;
    if (gallery?.edit) this.track(this.editPages(gallery, job, target, typeof images === 'number' ? [images] : images));
  }

  /**
   * A finished job runs again ("Retry failed", "Reroll"): its progress message follows it as before,
   * and when it ends a new gallery is posted (the old pages' buttons then answer GONE, so nobody
   * reviews a stale page). Registered like a start: a finish arriving meanwhile waits for it.
   */
  rerun(job: Readonly<Job>): Promise<void> {
    if (this.stopped) return Promise.resolve();
    // A gallery still going out for the run before: it finishes first, then the next one is begun.
    const before = this.inFlight.get(job.id)?.catch(() => undefined);
    const reset = (async () => {
      await before;
      await this.exclusive(job.id, async () => {
        await this.outbox.add(job.id);
        await this.deps.engine.annotate(job.id, this.name, { pages: [], delivered: false });
      });
    })();
    const settled = reset.catch((error: unknown) => this.log.error({ job: job.id, err: error }, `${this.name}: a rerun job's gallery could not be reset`));
    this.starting.set(job.id, settled);
    void settled.finally(() => {
      if (this.starting.get(job.id) === settled) this.starting.delete(job.id);
    });
    return settled;
  }

  /** Tries again what waits in the outbox for the jobs `which` picks (e.g. the bot was just given access). */
  async retry(which: (job: Readonly<Job>) => boolean): Promise<void> {
    for (const id of await this.outbox.list()) {
      const job = await this.deps.engine.get(id);
      if (!job || !which(job)) continue;
      if (isJobFinished(job)) this.deliver(id);
      else if (!this.targetOf(job)) {
        await this.postUnlessPosted(id).catch((error: unknown) =>
          this.log.warn({ job: id, err: this.describe(error) }, `${this.name}: the progress message still cannot be posted`),
        );
      }
    }
  }

  /** What is stored about a job's messages, read through the platform's schemas. */
  factsOf(job: Pick<Job, 'chat'>): Facts<T, P> {
    return readFacts(job.chat?.[this.name], this.platform.target, this.platform.gallery?.page);
  }

  /** Takes no new work, lets what is in flight finish (bounded), then drops waiting edits. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.onStop();
    this.abort.abort();
    const timeout = sleep(this.options.stopTimeoutMs ?? 5000, undefined, { ref: false });
    await Promise.race([Promise.allSettled([...this.tasks]), timeout]);
    this.edits.close();
  }

  private async start(job: Readonly<Job>, given: T | undefined): Promise<void> {
    // Under the delivery lock: a process that finishes the job meanwhile finds it either not in the
    // outbox yet (and leaves it to us) or with its message recorded — never half-way, posting a second.
    await this.exclusive(job.id, async () => {
      await this.outbox.add(job.id);
      if (given) {
        this.targets.set(job.id, given);
        await this.save(job.id, given);
      } else {
        await this.post(job);
      }
    });
    // Events emitted before the message was known found no target: show the state now.
    const current = await this.deps.engine.get(job.id);
    if (!current || this.stopped) return;
    const target = this.targets.get(job.id);
    if (isJobFinished(current)) this.deliver(job.id);
    else if (target) this.pushProgress(current, target, this.cardOf(current));
  }

  private async post(job: Readonly<Job>): Promise<T> {
    const card = await this.withDelivery(job, this.cardOf(job));
    const target = await this.platform.postProgress(job, card);
    this.targets.set(job.id, target);
    await this.edits.posted(job.id, JSON.stringify(card));
    await this.save(job.id, target);
    return target;
  }

  /** Posts the progress message of a job that has none, as stored now (another process may have posted it). */
  private async postUnlessPosted(jobId: string): Promise<void> {
    await this.exclusive(jobId, async () => {
      const job = await this.deps.engine.get(jobId);
      if (job && !this.targetOf(job)) await this.post(job);
    });
  }

  /**
   * Runs `work` as the only delivery step of this job on this platform in any process (distributed
   * mode); in one process the courier's own bookkeeping (`starting`, `delivering`) is enough.
   */
  private exclusive<R>(jobId: string, work: () => Promise<R>): Promise<R> {
    const { shared } = this.deps;
    return shared ? shared.locks.run(`delivery-${this.name}-${jobId}`, work) : work();
  }

  private async save(jobId: string, target: T): Promise<void> {
    // A message that needs no address (the playground's page) has nothing to store.
    if (Object.keys(target).length === 0) return;
    // If this fails, the job runs and this process still edits the message; only a restart would lose it.
    await this.deps.engine.annotate(jobId, this.name, target).catch((error: unknown) =>
      this.log.error({ job: jobId, err: error }, `${this.name}: where the message is could not be saved`),
    );
  }

  private deliver(jobId: string): void {
    if (this.stopped) return;
    if (this.delivering.has(jobId)) {
      this.again.add(jobId);
      return;
    }
    this.delivering.add(jobId);
    const delivery = this.deliverWithRetries(jobId).finally(() => {
      this.delivering.delete(jobId);
      if (this.inFlight.get(jobId) === delivery) this.inFlight.delete(jobId);
      if (this.again.delete(jobId)) this.deliver(jobId);
    });
    this.inFlight.set(jobId, delivery);
    this.track(delivery);
  }

  private async deliverWithRetries(jobId: string): Promise<void> {
    // A job can finish while follow() is still posting the message it must end in.
    await this.starting.get(jobId);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.exclusive(jobId, () => this.deliverOnce(jobId));
      } catch (error) {
        if (this.stopped) return; // stays in the outbox: the next start continues
        if (error instanceof NoAccess) {
          this.log.info({ job: jobId, err: this.describe(error) }, `${this.name}: the gallery waits until the bot has access`);
          return this.showTrouble(jobId, 'blocked');
        }
        this.log.warn({ job: jobId, attempt, err: this.describe(error) }, `${this.name}: gallery delivery failed`);
        if (attempt >= (this.options.attempts ?? 3)) return this.showTrouble(jobId, 'failed');
        await sleep((this.options.retryBaseMs ?? 2000) * 2 ** (attempt - 1), undefined, { signal: this.abort.signal }).catch(() => undefined);
      }
    }
  }

  private async deliverOnce(jobId: string): Promise<void> {
    // The lock may have been a long wait: nothing new once stopping (the outbox keeps the job).
    if (this.stopped) return;
    const job = await this.deps.engine.get(jobId);
    if (!job) return this.outbox.remove(jobId);
    if (!isJobFinished(job)) return;
    const facts = this.factsOf(job);
    let target = this.targets.get(jobId) ?? facts.target;
    if (target) {
      this.pushProgress(job, target, this.cardOf(job));
      await this.edits.flush(jobId);
    } else {
      // Never posted (no access then, or a restart between submit and post): its final state is its first
      // message — but only for a job this platform took on.
      if (!(await this.outbox.has(jobId))) return;
      target = await this.post(job);
    }
    if (this.platform.gallery && !facts.delivered) {
      if (job.images.length > 0) await this.postGallery(this.platform.gallery, job, target, facts.pages);
      await this.deps.engine.annotate(jobId, this.name, { delivered: true });
    }
    this.trouble.delete(jobId);
    await this.outbox.remove(jobId);
    await this.refresh(jobId); // the message now says where the gallery is
    this.targets.delete(jobId);
  }

  private async postGallery(gallery: GalleryPoster<T, P>, first: Readonly<Job>, target: T, earlier: (P | undefined)[]): Promise<void> {
    let pages = earlier;
    const save = async (index: number, record: P) => {
      // A new array each time: the one handed to the engine is the engine's from then on.
      pages = Array.from({ length: Math.max(pages.length, index + 1) }, (_, i) => (i === index ? record : pages[i]));
      await this.deps.engine.annotate(first.id, this.name, { pages });
    };
    let job = first;
    for (const layout of await gallery.layout(first, target)) {
      if (this.stopped) throw new Error('stopped between two pages');
      const index = layout.page - 1;
      // Fresh: a review may have changed an image of this page while the earlier ones went out.
      if (index > 0) job = (await this.deps.engine.get(first.id)) ?? job;
      const before = pages[index];
      const record = await gallery.post({ job, target, layout, earlier: before, save: (r) => save(index, r) });
      if (JSON.stringify(record) !== JSON.stringify(before)) await save(index, record);
    }
  }

  private async editPages(gallery: GalleryPoster<T, P>, job: Readonly<Job>, target: T, images: readonly number[]): Promise<void> {
    const layouts = (await gallery.layout(job, target)).filter((l) => l.images.some((image) => images.includes(image)));
    const edit = gallery.edit?.bind(gallery);
    if (!edit) return;
    for (const layout of layouts) {
      const page = this.factsOf(job).pages[layout.page - 1];
      if (page === undefined) continue;
      const reviewsOn = (j: Readonly<Job>) => JSON.stringify(j.images.filter((i) => layout.images.includes(i.index)).map((i) => i.review));
      this.edits.push(`${job.id}:${layout.page}`, reviewsOn(job), async () => {
        if (!this.deps.shared) return edit(target, page, job, layout);
        // A review in another process may be newer than this one and already shown: render the page as stored now.
        const now = (await this.deps.engine.get(job.id)) ?? job;
        await edit(target, page, now, layout);
        return reviewsOn(now);
      });
    }
  }

  private async showTrouble(jobId: string, state: 'blocked' | 'failed'): Promise<void> {
    this.trouble.set(jobId, state);
    await this.refresh(jobId);
  }

  /** Shows the job's current state on its progress message. */
  private async refresh(jobId: string): Promise<void> {
    const job = await this.deps.engine.get(jobId);
    const target = job && this.targetOf(job);
    if (job && target) this.pushProgress(job, target, this.cardOf(job));
  }

  /** Galleries a restart cut off, and what the outbox should no longer hold. */
  private async redeliver(): Promise<void> {
    const maxAgeMs = this.options.maxAgeMs ?? 7 * 86_400_000;
    for (const id of await this.outbox.list()) {
      const job = await this.deps.engine.get(id);
      const why = !job
        ? 'the job is no longer in the store'
        : Date.parse(job.finishedAt ?? '') < this.now() - maxAgeMs
          ? `still undelivered after ${Math.round(maxAgeMs / 86_400_000)} days`
          : undefined;
      if (why) {
        this.log.warn({ job: id, finishedAt: job?.finishedAt }, `${this.name}: dropped from the outbox: ${why}`);
        await this.outbox.remove(id);
      } else if (job && isJobFinished(job)) {
        this.deliver(id);
      }
    }
  }

  private targetOf(job: Readonly<Job>): T | undefined {
    return this.targets.get(job.id) ?? this.factsOf(job).target;
  }

  private cardOf(job: Readonly<Job>): ProgressCard {
    const gallery: GalleryState = !isJobFinished(job)
      ? 'none'
      : !this.platform.gallery || this.factsOf(job).delivered
        ? 'posted'
        : (this.trouble.get(job.id) ?? 'posting');
    return progressCard(job, this.deps.engine.progress(job), gallery);
  }

  private pushProgress(job: Readonly<Job>, target: T, card: ProgressCard): void {
    this.edits.push(job.id, JSON.stringify(card), async () => {
      if (!this.deps.shared) return this.platform.editProgress(target, job, await this.withDelivery(job, card));
      // Other processes change this job and edit this message too, each from its own events: the job
      // as stored when the edit goes out is never older than what an earlier edit showed.
      const stored = await this.deps.engine.get(job.id);
      const [now, fresh] = stored ? [stored, this.cardOf(stored)] : [job, card];
      await this.platform.editProgress(target, now, await this.withDelivery(now, fresh));
      return JSON.stringify(fresh);
    });
  }

  /**
   * A finished card with its delivery links, made as the message goes out: presigned links differ at
   * each signing, so they are not part of what decides whether the message changed.
   */
  private async withDelivery(job: Readonly<Job>, card: ProgressCard): Promise<ProgressCard> {
    if (!card.view.finished) return card;
    const delivery = await this.deps.engine.delivery(job);
    return delivery ? { ...card, delivery } : card;
  }

  private describe(error: unknown): unknown {
    return this.platform.describeError ? this.platform.describeError(error) : error;
  }

  private track(task: Promise<unknown>): void {
    const settled = task.catch((error: unknown) => this.log.error({ err: this.describe(error) }, `${this.name}: delivery failed`));
    this.tasks.add(settled);
    void settled.finally(() => this.tasks.delete(settled));
  }
}
