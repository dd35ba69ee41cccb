/**
 * Fair, rate-limited dispatch of provider calls.
 *
 * One lane per provider, built from two p-queues: the limiter holds a batch's slot for its whole call
 * (max concurrent calls), and the gate lets submits through one at a time and at most N in any rolling
 * window, each counted from its send until its answer (SendWindow: whatever the network's jitter, no
 * window of the provider's sees more than N). With no configured N, the first 429 teaches one and each
 * later 429 lowers it. The gate wraps the submit request and the saving of its request id, not the
 * batch: a resumed batch that only polls takes no token, and a crash can lose the id of at most one
 * paid call per provider (the one being saved). Fairness is ours: each tenant has its own queue and
 * the lane takes the next batch round-robin across tenants, only at the moment the limiter can start
 * it — so a guild that queues 1000 images holds one place in the rotation, not the next 250 slots.
 */
import PQueue from 'p-queue';
import { delay } from './delay.js';
import type { BatchTicket, Dispatcher, EnqueueOptions, LaneOptions, TicketRunner } from './dispatch.js';
import type { Rate } from './rate.js';
import { MAX_TIMER_MS, RETRY_AFTER_CAP_MS } from './provider.js';
import type { ProviderName } from './types.js';

export type { LaneOptions } from './dispatch.js';

export interface ScheduledTask {
  /** unique per task, e.g. `<jobId>:<batchIndex>` */
  key: string;
  jobId: string;
  tenant: string;
  /** epoch ms before which the task must not start (retry backoff) */
  notBefore?: number;
  /**
   * Runs the call. `release` says the provider is done with it (its outputs are fetched): the lane's
   * slot and the tenant's place go to the next call while this one downloads and saves its images.
   */
  run(signal: AbortSignal, release: () => void): Promise<void>;
}

export interface SchedulerOptions {
  lanes: Record<string, LaneOptions>;
  /** calls per period for one tenant, across all lanes */
  tenantRate?: Rate;
  /**
   * Calls of one tenant in flight at once, across all lanes and its jobs (its plan), asked at each
   * start; a tenant at its cap is skipped like one at its rate, and served again once a call of its
   * ends. @default no cap
   */
  tenantConcurrency?: (tenant: string) => number;
  now?: () => number;
  /** a task's own error handling failed; tasks are expected to settle their errors themselves */
  onTaskError?: (error: unknown, task: ScheduledTask) => void;
}

/** Start times in a rolling window: the tenant-side twin of p-queue's strict interval. */
class SlidingWindow {
  private readonly starts: number[] = [];
  constructor(private readonly rate: Rate) {}
  /** 0 if a call may start now, else ms until one may */
  waitMs(now: number): number {
    while (this.starts.length > 0 && this.starts[0]! <= now - this.rate.intervalMs) this.starts.shift();
    return this.starts.length < this.rate.limit ? 0 : this.starts[0]! + this.rate.intervalMs - now;
  }
  record(now: number): void {
    this.starts.push(now);
  }
}

/**
 * Requests reach the provider a few milliseconds after the gate lets them go, not always in order;
 * a window this much longer than the provider's absorbs clock granularity (1 %, at most 100 ms).
 */
function gateInterval(intervalMs: number): number {
  return Math.ceil(intervalMs + Math.min(intervalMs * 0.01, 100));
}

/** Sends kept for the window and for learning a limit: at most this many, and none older than this. */
const KEPT_SENDS = 10_000;
const KEPT_SENDS_MS = 3_600_000;

/**
 * The provider's view of the rate: each accepted send, from when it left until its answer came back.
 * The provider saw it somewhere in between, so a send counts against the window until its answer,
 * not from its start: whatever the network's jitter, no window of the provider's sees more than the
 * limit. Sends pass the gate one at a time, so answers are recorded in order.
 */
class SendWindow {
  private readonly sends: { sent: number; answered: number }[] = [];

  /** 0 if a send may leave now under `rate`, else ms until one may */
  waitMs(rate: Rate, now: number): number {
    const interval = gateInterval(rate.intervalMs);
    let counted = 0;
    for (let i = this.sends.length - 1; i >= 0 && this.sends[i]!.answered > now - interval; i -= 1) counted += 1;
    if (counted < rate.limit) return 0;
    // the send whose leaving brings the count under the limit
    return this.sends[this.sends.length - rate.limit]!.answered + interval - now;
  }

  record(sent: number, answered: number): void {
    this.sends.push({ sent, answered });
    while (this.sends.length > KEPT_SENDS || (this.sends.length > 0 && this.sends[0]!.answered < answered - KEPT_SENDS_MS)) this.sends.shift();
  }

  /**
   * What one 429 tells of an unknown limit, `freeAt` being when its Retry-After says a place frees:
   * the provider's oldest counted send leaves its window then. Taken as that oldest: the first send of
   * the latest busy stretch (one with no send in the window before it), so a limit met from idle is
   * learned in one 429, whatever the window's length. Answers the sends since then over that window.
   */
  learn(freeAt: number): Rate | undefined {
    for (let k = this.sends.length - 1; k >= 0; k -= 1) {
      const oldest = this.sends[k]!.sent;
      const window = freeAt - oldest;
      const before = this.sends[k - 1];
      if (window > 0 && (!before || before.answered <= oldest - window)) return { limit: this.sends.length - k, intervalMs: window };
    }
    return undefined;
  }

  /** sends counted by `rate` now */
  counted(rate: Rate, now: number): number {
    const interval = gateInterval(rate.intervalMs);
    return this.sends.filter((send) => send.answered > now - interval).length;
  }
}

class Lane {
  readonly limiter: PQueue;
  readonly gate: PQueue;
  /** tenant → its waiting tasks, oldest first */
  readonly queues = new Map<string, ScheduledTask[]>();
  /** round-robin ring of tenants with waiting tasks; `cursor` is the next to serve */
  ring: string[] = [];
  cursor = 0;
  pausedUntil = 0;
  timer: NodeJS.Timeout | undefined;
  timerAt = 0;
  readonly running = new Map<string, AbortController>();
  /** tasks running, including those whose slot was released while they save their images */
  readonly detached = new Set<Promise<unknown>>();
  readonly sends = new SendWindow();
  /** the limit as learned from 429s, when none was configured */
  learned: Rate | undefined;
  /** 429s met so far: a send that met one is not counted as accepted */
  pauses = 0;

  constructor(readonly name: string, readonly options: LaneOptions) {
    this.limiter = new PQueue({ concurrency: options.concurrency });
    this.gate = new PQueue({ concurrency: 1 });
  }

  /** the rate the gate keeps: the configured one, else the one learned from 429s */
  rate(): Rate | undefined {
    return this.options.rateLimit ?? this.learned;
  }

  waiting(): number {
    let total = 0;
    for (const queue of this.queues.values()) total += queue.length;
    return total;
  }
}

export class FairScheduler {
  private readonly lanes = new Map<string, Lane>();
  private readonly tenantWindows = new Map<string, SlidingWindow>();
  /** calls in flight per tenant, across lanes (kept only with a tenant concurrency) */
  private readonly tenantCalls = new Map<string, number>();
  private readonly now: () => number;
  private stopped = false;

  constructor(private readonly options: SchedulerOptions) {
    this.now = options.now ?? Date.now;
    for (const [name, laneOptions] of Object.entries(options.lanes)) {
      const lane = new Lane(name, laneOptions);
      // Each start or finish may free a slot: look for the next task then, not before.
      lane.limiter.on('next', () => this.pump(lane));
      lane.limiter.on('active', () => this.pump(lane));
      this.lanes.set(name, lane);
    }
  }

  private lane(name: string): Lane {
    const lane = this.lanes.get(name);
    if (!lane) throw new Error(`no scheduler lane for provider "${name}"`);
    return lane;
  }

  /** Queues a call. `front` puts it before the tenant's other calls (a retry keeps its turn). */
  enqueue(laneName: string, task: ScheduledTask, options: { front?: boolean } = {}): void {
    const lane = this.lane(laneName);
    let queue = lane.queues.get(task.tenant);
    if (!queue) {
      queue = [];
      lane.queues.set(task.tenant, queue);
      // A new tenant joins at the cursor: its first call is the next to start. A tenant only waits
      // in the ring while it has calls queued, so a newcomer has had no turn yet; each later turn
      // comes round-robin like everyone's.
      lane.ring.splice(lane.cursor, 0, task.tenant);
    }
    if (options.front) queue.unshift(task);
    else queue.push(task);
    this.pump(lane);
  }

  /** Drops a job's waiting calls and aborts its running ones; returns how many were waiting. */
  cancelJob(jobId: string): number {
    let dropped = 0;
    for (const lane of this.lanes.values()) {
      for (const [tenant, queue] of lane.queues) {
        const kept = queue.filter((task) => task.jobId !== jobId);
        dropped += queue.length - kept.length;
        if (kept.length === 0) this.removeTenant(lane, tenant);
        else lane.queues.set(tenant, kept);
      }
      for (const [key, controller] of lane.running) if (key.startsWith(`${jobId}:`)) controller.abort();
    }
    return dropped;
  }

  /**
   * Runs one request that counts against the provider's rate (a submit): waits for a pause to end and
   * for a place in the window, then sends it. It counts from its send until `request` settles (the
   * answer, and the request id saved), unless it met a 429 (the provider did not count it).
   */
  async throttle<T>(laneName: string, request: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const lane = this.lane(laneName);
    for (let wait = lane.pausedUntil - this.now(); wait > 0; wait = lane.pausedUntil - this.now()) {
      await delay(wait, signal);
    }
    return lane.gate.add<T>(
      async () => {
        for (;;) {
          const rate = lane.rate();
          const wait = Math.max(lane.pausedUntil - this.now(), rate ? lane.sends.waitMs(rate, this.now()) : 0);
          if (wait <= 0) break;
          await delay(wait, signal);
        }
        const sent = this.now();
        const pauses = lane.pauses;
        try {
          return await request();
        } finally {
          if (lane.pauses === pauses) lane.sends.record(sent, this.now());
        }
      },
      signal ? { signal } : {},
    );
  }

  /**
   * Stops starting calls on a lane for `ms` (a 429's Retry-After). Calls already sent go on. With no
   * configured limit, the 429 teaches one (SendWindow.learn), and each later 429 lowers it by one: the
   * lane converges on the provider's limit instead of paying a pause per 429.
   */
  pause(laneName: string, ms: number): void {
    const lane = this.lane(laneName);
    const now = this.now();
    const until = now + Math.min(Math.max(0, ms), RETRY_AFTER_CAP_MS);
    lane.pauses += 1;
    if (!lane.options.rateLimit) this.learnLimit(lane, now, until);
    if (until <= lane.pausedUntil) return;
    lane.pausedUntil = until;
    lane.limiter.pause();
    lane.gate.pause();
    this.wakeAt(lane, until);
  }

  private learnLimit(lane: Lane, now: number, freeAt: number): void {
    const known = lane.learned;
    if (!known) {
      lane.learned = lane.sends.learn(freeAt);
    } else if (lane.sends.counted(known, now) > 0) {
      // A 429 inside the learned limit: the limit is lower than thought. (One with nothing counted
      // was not about the rate: a place ahead of it, at the provider, was the cause.)
      lane.learned = { limit: Math.max(1, known.limit - 1), intervalMs: known.intervalMs };
    }
  }

  /** The rate a lane keeps now: configured, or learned from 429s; undefined for none. */
  rateOf(laneName: string): Rate | undefined {
    return this.lane(laneName).rate();
  }

  isPaused(laneName: string): boolean {
    return this.lane(laneName).pausedUntil > this.now();
  }

  /**
   * Where a job's next waiting call stands in its lane (1 = next to start), counting the turns
   * round-robin gives the other tenants first. undefined when the job has nothing waiting.
   */
  queuePosition(laneName: string, jobId: string): number | undefined {
    const lane = this.lane(laneName);
    for (const [tenant, queue] of lane.queues) {
      const k = queue.findIndex((task) => task.jobId === jobId);
      if (k < 0) continue;
      const ourTurn = (lane.ring.indexOf(tenant) - lane.cursor + lane.ring.length) % lane.ring.length;
      let ahead = k;
      lane.ring.forEach((other, i) => {
        if (other === tenant) return;
        const turn = (i - lane.cursor + lane.ring.length) % lane.ring.length;
        ahead += Math.min(lane.queues.get(other)?.length ?? 0, turn < ourTurn ? k + 1 : k);
      });
      return ahead + lane.limiter.size + 1;
    }
    return undefined;
  }

  /** Calls waiting (not started) on a lane. */
  depth(laneName: string): number {
    const lane = this.lane(laneName);
    return lane.waiting() + lane.limiter.size;
  }

  inFlight(laneName: string): number {
    return this.lane(laneName).limiter.pending;
  }

  /** Resolves when nothing is waiting or running on any lane. */
  async idle(): Promise<void> {
    for (;;) {
      const busy = [...this.lanes.values()].filter(
        (lane) => lane.waiting() > 0 || lane.limiter.size > 0 || lane.limiter.pending > 0 || lane.detached.size > 0,
      );
      if (busy.length === 0) return;
      await Promise.all(
        busy.map((lane) =>
          lane.waiting() > 0 ? new Promise((r) => setTimeout(r, 20)) : Promise.all([lane.limiter.onIdle(), ...lane.detached]),
        ),
      );
    }
  }

  /** Starts nothing more: waiting calls stay waiting (they are persisted), running ones go on. */
  halt(): void {
    this.stopped = true;
    for (const lane of this.lanes.values()) {
      clearTimeout(lane.timer);
      lane.limiter.pause();
      lane.limiter.clear();
    }
  }

  /** Aborts every running call where it stands. */
  abortAll(): void {
    for (const lane of this.lanes.values()) {
      // Not cleared: each waiting submit carries its call's signal and is rejected by the abort below.
      lane.gate.pause();
      for (const controller of lane.running.values()) controller.abort();
    }
  }

  stop(): void {
    this.halt();
    this.abortAll();
  }

  private removeTenant(lane: Lane, tenant: string): void {
    lane.queues.delete(tenant);
    const index = lane.ring.indexOf(tenant);
    if (index < 0) return;
    lane.ring.splice(index, 1);
    if (index < lane.cursor) lane.cursor -= 1;
    if (lane.cursor >= lane.ring.length) lane.cursor = 0;
  }

  private tenantWindow(tenant: string): SlidingWindow | undefined {
    if (!this.options.tenantRate) return undefined;
    let window = this.tenantWindows.get(tenant);
    if (!window) {
      window = new SlidingWindow(this.options.tenantRate);
      this.tenantWindows.set(tenant, window);
    }
    return window;
  }

  private wakeAt(lane: Lane, at: number): void {
    if (lane.timer && lane.timerAt <= at) return;
    clearTimeout(lane.timer);
    lane.timerAt = at;
    lane.timer = setTimeout(() => {
      lane.timer = undefined;
      lane.timerAt = 0;
      this.pump(lane);
    }, Math.min(MAX_TIMER_MS, Math.max(0, at - this.now())));
  }

  /** Hands tasks to the limiter while it could start them at once, taking tenants in turn. */
  private pump(lane: Lane): void {
    if (this.stopped) return;
    const now = this.now();
    if (lane.pausedUntil > now) return this.wakeAt(lane, lane.pausedUntil);
    if (lane.limiter.isPaused) lane.limiter.start();
    if (lane.gate.isPaused) lane.gate.start();

    let earliest = Infinity;
    // Keep at most one task waiting inside the limiter, so the choice of tenant is made at the last moment.
    while (lane.ring.length > 0 && lane.limiter.size === 0 && lane.limiter.pending < lane.options.concurrency) {
      let picked: ScheduledTask | undefined;
      for (let tried = 0; tried < lane.ring.length && !picked; tried += 1) {
        const tenant = lane.ring[lane.cursor]!;
        const queue = lane.queues.get(tenant)!;
        const head = queue[0]!;
        // At its plan's calls in flight: no wake-up time; the end of one of its calls pumps every lane.
        if (this.atTenantCap(tenant)) {
          lane.cursor = (lane.cursor + 1) % lane.ring.length;
          continue;
        }
        const wait = Math.max(head.notBefore ? head.notBefore - now : 0, this.tenantWindow(tenant)?.waitMs(now) ?? 0);
        if (wait > 0) {
          earliest = Math.min(earliest, now + wait);
          lane.cursor = (lane.cursor + 1) % lane.ring.length;
          continue;
        }
        picked = queue.shift()!;
        this.tenantWindow(tenant)?.record(now);
        if (queue.length === 0) this.removeTenant(lane, tenant);
        else lane.cursor = (lane.cursor + 1) % lane.ring.length;
      }
      if (!picked) break;
      this.start(lane, picked);
    }
    if (earliest !== Infinity) this.wakeAt(lane, earliest);
  }

  /** The tenant has as many calls in flight as its plan allows. */
  private atTenantCap(tenant: string): boolean {
    const cap = this.options.tenantConcurrency?.(tenant);
    return cap !== undefined && (this.tenantCalls.get(tenant) ?? 0) >= cap;
  }

  private start(lane: Lane, task: ScheduledTask): void {
    const controller = new AbortController();
    const counted = this.options.tenantConcurrency !== undefined;
    if (counted) this.tenantCalls.set(task.tenant, (this.tenantCalls.get(task.tenant) ?? 0) + 1);
    let freed = false;
    // The tenant's place: given back once, when the provider is done with the call or the task ends.
    const free = () => {
      if (freed || !counted) return;
      freed = true;
      const left = (this.tenantCalls.get(task.tenant) ?? 1) - 1;
      if (left > 0) this.tenantCalls.set(task.tenant, left);
      else this.tenantCalls.delete(task.tenant);
      // The tenant may have calls waiting on any lane, skipped while it was at its cap (this lane's
      // own 'next' came before this count went down).
      for (const each of this.lanes.values()) this.pump(each);
    };
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    void lane.limiter
      .add(async () => {
        if (controller.signal.aborted) return;
        lane.running.set(task.key, controller);
        const work = task
          .run(controller.signal, () => {
            release();
            free();
          })
          .catch((error: unknown) => this.options.onTaskError?.(error, task))
          .finally(() => {
            lane.running.delete(task.key);
            lane.detached.delete(work);
          });
        lane.detached.add(work);
        // The slot is held until the provider is done with the call, not until its images are saved.
        await Promise.race([work, released]);
      })
      .catch((error: unknown) => this.options.onTaskError?.(error, task))
      .finally(free);
    lane.running.set(task.key, controller);
  }
}

/** The one-process dispatcher: the fair scheduler above, running tickets in this process. */
export class LocalDispatcher implements Dispatcher {
  readonly scheduler: FairScheduler;
  private run: TicketRunner | undefined;
  private readonly now: () => number;

  constructor(options: SchedulerOptions) {
    this.scheduler = new FairScheduler(options);
    this.now = options.now ?? Date.now;
  }

  start(run: TicketRunner): Promise<void> {
    this.run = run;
    return Promise.resolve();
  }

  enqueue(ticket: BatchTicket, options: EnqueueOptions = {}): Promise<void> {
    const run = this.run;
    if (!run) throw new Error('dispatcher: enqueue before start');
    this.scheduler.enqueue(
      ticket.provider,
      {
        key: `${ticket.jobId}:${ticket.batchIndex}`,
        jobId: ticket.jobId,
        tenant: ticket.tenant,
        notBefore: options.delayMs !== undefined && options.delayMs > 0 ? this.now() + options.delayMs : undefined,
        run: (signal, release) => run(ticket, signal, release),
      },
      { front: options.front ?? false },
    );
    return Promise.resolve();
  }

  cancelJob(jobId: string): Promise<void> {
    this.scheduler.cancelJob(jobId);
    return Promise.resolve();
  }

  throttle<T>(provider: ProviderName, request: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.scheduler.throttle(provider, request, signal);
  }

  pause(provider: ProviderName, ms: number): void {
    this.scheduler.pause(provider, ms);
  }

  queuePosition(provider: ProviderName, jobId: string): number | undefined {
    return this.scheduler.queuePosition(provider, jobId);
  }

  depth(provider: ProviderName): number {
    return this.scheduler.depth(provider);
  }

  halt(): void {
    this.scheduler.halt();
  }

  abortAll(): void {
    this.scheduler.abortAll();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
