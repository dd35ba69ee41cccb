/**
 * The distributed `Dispatcher`: tickets wait in BullMQ queues on Redis, one per provider
 * (`batches-<provider>`), and any process may run any of them.
 *
 * What each piece stands for:
 * - the provider account's limits are the queue's: BullMQ's global concurrency caps the calls in
 *   flight across every process, and its global rate limit the ticket starts per window;
 * - the precise rate is the send gate (`throttle`): BullMQ counts starts in a fixed window, which
 *   alone could let twice the limit into a provider's rolling window across a window edge, so every
 *   submit also waits for a place in a rolling window kept in Redis;
 * - a 429 pauses the lane everywhere: a pause key the gate honours, and `queue.rateLimit` so that no
 *   worker starts another ticket meanwhile;
 * - fairness across tenants is ours, on BullMQ priorities (dispatch-scripts.ts says how and where it
 *   is not exact);
 * - a process that dies leaves its tickets locked; the lock lapses after `lockDurationMs` and a
 *   surviving worker's stall check puts them back, where they run again (the runner reads the
 *   batch's recorded state and polls a recorded request id rather than submitting again);
 * - a cancel drops the job's entries from its ticket hash (a ticket whose entry is gone runs
 *   nothing when it starts), removes its waiting tickets, and is published so that every process
 *   aborts the job's running ones.
 */
import { randomUUID } from 'node:crypto';
import { DelayedError, Queue, WaitingError, Worker, type Job } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import type { BatchTicket, Dispatcher, EnqueueOptions, LaneOptions, TicketRunner } from '../core/dispatch.js';
import type { Rate } from '../core/rate.js';
import { delay } from '../core/delay.js';
import { silentLogger, type Logger } from '../core/ports.js';
import { RETRY_AFTER_CAP_MS } from '../core/provider.js';
import { PROVIDER_NAMES, type ProviderName } from '../core/types.js';
import { ANSWERED, GATE, LEARN, LEARN_HISTORY_MS, LEAVE_GATE, PAUSE, RedisScript, SENT, START, TAG, TENANT_START } from './dispatch-scripts.js';

export interface RedisDispatcherOptions {
  /** a `redis://` URL, or ioredis options; the dispatcher opens and closes its own connections */
  connection: string | RedisOptions;
  /** BullMQ's prefix and our own keys': every process of one bot uses the same */
  prefix: string;
  lanes: Partial<Record<ProviderName, LaneOptions>>;
  /** calls one tenant may start per period, across every provider and process (TENANT_RATE_LIMIT) */
  tenantRate?: Rate;
  /** calls of one tenant in flight at once, across every provider and process (its plan) @default no cap */
  tenantConcurrency?: (tenant: string) => Promise<number>;
  /**
   * How long a ticket stays locked without its process renewing it: a dead process's tickets are
   * taken over after about this long (and a stall check as often).
   * @default 30_000
   */
  lockDurationMs?: number;
  /**
   * Runs tickets here. A process that only takes commands (`ROLE=edge`) queues and cancels tickets
   * but runs none: it opens no workers.
   * @default true
   */
  work?: boolean;
  log?: Logger;
}

/** What a BullMQ job carries: the ticket and its fair tag. */
interface TicketData extends BatchTicket {
  tag: number;
}

type TicketJob = Job<TicketData, void, 'batch'>;

/** The queue states health and metrics report. */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'prioritized'] as const;

export type QueueCounts = { provider: ProviderName } & Record<(typeof QUEUE_STATES)[number], number>;

interface Lane {
  provider: ProviderName;
  options: LaneOptions;
  queue: Queue<TicketData, void, 'batch'>;
  worker?: Worker<TicketData, void, 'batch'>;
  /** waiting + prioritized + delayed, as last counted */
  depth: number;
  clampWarned: boolean;
  /** this process's submit on its way (see throttle) */
  submitting: Promise<void>;
  /** the gate member of the submit on its way in this process, for a 429 to name (LEARN) */
  sending?: string;
  /** whether that submit passed the gate under a limit (configured or learned) */
  sendingUnderLimit?: boolean;
  /** a 429's pause (and lesson) on its way to Redis: this process's next send waits for it */
  pausing?: Promise<void>;
  /** 429s met here: a send that passed the gate before one goes through it again */
  pauses: number;
}

interface Running {
  jobId: string;
  /** the BullMQ id and fair tag, for its turn at the send gate */
  ticketId: string;
  tag: number;
  controller: AbortController;
  /** aborted because this process stops: the ticket goes back to the queue */
  requeue: boolean;
}

/** A ticket waiting at the send gate that has not asked for this long is taken as gone (its process died). */
const WAITER_STALE_MS = 2_000;
/** How often a ticket whose turn has not come asks the gate again. */
const TURN_POLL_MS = 10;
/** BullMQ's highest priority number (the lowest priority). */
const PRIORITY_MAX = 2 ** 21 - 1;
/** V past which an empty lane starts its tags again at 0. */
const RESET_ABOVE = 1_000_000;
/** A tag recorded this long ago whose add never finished is taken as abandoned (for the reset). */
const ADD_GRACE_MS = 60_000;
/** How often `depth` is counted again. */
const DEPTH_EVERY_MS = 500;
/** How long `close` waits for queues and connections to close cleanly before it cuts them. */
const QUIT_GRACE_MS = 2_000;

/** Resolves when `work` settles or after `ms`, whichever comes first. */
export async function settledWithin(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** How long a ticket whose tenant has all its calls in flight waits before it asks again. */
const TENANT_BUSY_RETRY_MS = 500;

/**
 * A tenant's place for one call in flight: 1 (and the ticket holds it until `lease` ms from now) when
 * the ticket holds one already or fewer than `cap` are held, else 0. Places are leased, renewed while
 * the call runs, so those of a process that died free themselves as its tickets' locks lapse.
 * KEYS: 1 the tenant's places (sorted set, score = lease end). ARGV: 1 cap, 2 ticket id, 3 lease ms.
 */
const TENANT_CALL = new RedisScript(`
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
  return 1
end
return 0
`);

/** How long `close` waits for tickets to settle before it cuts the workers' connections. */
const CLOSE_GRACE_MS = 10_000;

/**
 * The gate's window is longer than the provider's: a request reaches the provider some milliseconds
 * after the gate counted it, and across processes not always in order. As `gateInterval` in
 * scheduler.ts, 1 % (at most 100 ms) — but at least 20 ms, for the hop from Redis back to the
 * process and a busy event loop there, which one process never has.
 */
function gateWindow(intervalMs: number): number {
  return Math.ceil(intervalMs + Math.min(Math.max(intervalMs * 0.01, 20), 100));
}

/** A ticket's BullMQ id: one per turn of one batch, so queueing the same turn twice queues it once. */
function ticketId(ticket: BatchTicket): string {
  if (ticket.jobId.includes(':')) throw new Error(`dispatcher: a job id may not contain ":", got "${ticket.jobId}"`);
  return `${ticket.jobId}.${ticket.batchIndex}.${ticket.attempt}`;
}

/** A job's data as stored (by whichever version of the bot queued it), or undefined if it is not a ticket. */
function readTicket(data: unknown, provider: ProviderName): TicketData | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const d = data as Record<string, unknown>;
  const integer = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
  if (typeof d.jobId !== 'string' || typeof d.tenant !== 'string' || d.provider !== provider) return undefined;
  if (!integer(d.batchIndex) || !integer(d.attempt) || !integer(d.tag)) return undefined;
  return { jobId: d.jobId, batchIndex: d.batchIndex, tenant: d.tenant, provider, attempt: d.attempt, tag: d.tag };
}

function connect(connection: string | RedisOptions, extra: RedisOptions): Redis {
  return typeof connection === 'string' ? new Redis(connection, extra) : new Redis({ ...connection, ...extra });
}

export class RedisDispatcher implements Dispatcher {
  private readonly lanes = new Map<ProviderName, Lane>();
  private readonly running = new Map<string, Running>();
  private readonly log: Logger;
  private readonly lockDurationMs: number;
  private runner: TicketRunner | undefined;
  /** our scripts and the queues: commands fail after ioredis's retries, so an enqueue can report it */
  private redis: Redis | undefined;
  /** the workers' shared connection: BullMQ wants it to retry for ever */
  private workerRedis: Redis | undefined;
  private subscriber: Redis | undefined;
  private depthTimer: NodeJS.Timeout | undefined;
  private counting = false;
  private halted = false;

  constructor(private readonly options: RedisDispatcherOptions) {
    this.log = options.log ?? silentLogger;
    this.lockDurationMs = options.lockDurationMs ?? 30_000;
    if (!/^[\w-]+$/.test(options.prefix)) throw new Error(`dispatcher: expected a prefix of letters, digits, _ or -, got "${options.prefix}"`);
    for (const [provider, lane] of Object.entries(options.lanes)) {
      if (!lane) continue;
      if (!Number.isSafeInteger(lane.concurrency) || lane.concurrency < 1) {
        throw new Error(`dispatcher: expected the ${provider} lane's concurrency to be an integer ≥ 1, got ${lane.concurrency}`);
      }
    }
  }

  private key(...parts: string[]): string {
    return [this.options.prefix, ...parts].join(':');
  }

  private lane(provider: ProviderName): Lane {
    const lane = this.lanes.get(provider);
    if (!lane) throw new Error(`dispatcher: no lane for provider "${provider}" (not started, or not configured)`);
    return lane;
  }

  private get commands(): Redis {
    if (!this.redis) throw new Error('dispatcher: not started');
    return this.redis;
  }

  async start(run: TicketRunner): Promise<void> {
    if (this.runner) throw new Error('dispatcher: started twice');
    this.runner = run;
    const { connection, prefix } = this.options;
    const onError = (error: unknown) => this.log.warn({ err: error }, 'dispatcher: Redis connection error');
    this.redis = connect(connection, {}).on('error', onError);

    for (const provider of PROVIDER_NAMES) {
      const options = this.options.lanes[provider];
      if (!options) continue;
      const queue = new Queue<TicketData, void, 'batch'>(`batches-${provider}`, {
        connection: this.redis,
        prefix,
        defaultJobOptions: {
          removeOnComplete: true,
          removeOnFail: true,
          // The runner settles a batch's own errors; what fails here is the dispatcher's Redis work
          // around it (a blip): BullMQ tries again, keeping the ticket's priority.
          attempts: 3,
          backoff: { type: 'exponential', delay: 1_000 },
        },
      });
      queue.on('error', (error) => this.log.warn({ err: error, provider }, 'dispatcher: queue error'));
      // Settings of the queue, not of this process: the last process to start writes them (all read
      // the same configuration).
      await queue.setGlobalConcurrency(options.concurrency);
      // BullMQ's window is fixed, so it may start up to twice the limit across a window edge; the
      // send gate holds the extra back (a ticket waiting there holds one of the lane's slots, which
      // costs nothing while the rate, not the slots, is what binds). Spacing starts evenly instead
      // would give up the first window's burst: 1.3× the floor for a 100-call job.
      if (options.rateLimit) await queue.setGlobalRateLimit(options.rateLimit.limit, options.rateLimit.intervalMs);
      else await queue.removeGlobalRateLimit();
      this.lanes.set(provider, { provider, options, queue, depth: 0, clampWarned: false, submitting: Promise.resolve(), pauses: 0 });
    }

    if (this.options.work ?? true) await this.startWorkers(onError);
    await this.countDepths();
    this.depthTimer = setInterval(() => void this.countDepths(), DEPTH_EVERY_MS);
    this.depthTimer.unref();
  }

  private async startWorkers(onError: (error: unknown) => void): Promise<void> {
    const { connection, prefix } = this.options;
    this.workerRedis = connect(connection, { maxRetriesPerRequest: null }).on('error', onError);
    this.subscriber = connect(connection, {}).on('error', onError);
    // A cancel published by any process aborts this process's running tickets of that job.
    this.subscriber.on('message', (_channel: string, jobId: string) => this.abortJob(jobId));
    await this.subscriber.subscribe(this.key('cancel'));

    for (const lane of this.lanes.values()) {
      const worker = new Worker<TicketData, void, 'batch'>(lane.queue.name, (job, token) => this.process(lane, job, token), {
        connection: this.workerRedis,
        prefix,
        // The global concurrency caps the sum across processes; this process may take all of it.
        concurrency: lane.options.concurrency,
        lockDuration: this.lockDurationMs,
        stalledInterval: this.lockDurationMs,
        // A ticket is never failed for stalling: a dead process is not the batch's fault, and the
        // batch counts its own failures.
        maxStalledCount: Number.MAX_SAFE_INTEGER,
        removeOnComplete: { count: 0 },
        removeOnFail: { count: 0 },
        // An idle worker looks again every second even when nothing woke it (a ticket handed back, a
        // slot freed in a process that takes nothing more), instead of every 5.
        drainDelay: 1,
        // BullMQ honours `queue.rateLimit` (a pause) only where a limiter is set: a lane without a rate
        // gets one that never limits by count. (A worker's limiter duration would override the queue's
        // global one, so a lane with a rate has none.)
        ...(lane.options.rateLimit ? {} : { limiter: { max: Number.MAX_SAFE_INTEGER, duration: 1_000 } }),
      });
      worker.on('error', (error) => this.log.warn({ err: error, provider: lane.provider }, 'dispatcher: worker error'));
      worker.on('failed', (job, error) =>
        this.log.error(
          { err: error, provider: lane.provider, ticket: job?.id, attempts: job?.attemptsMade },
          'dispatcher: a ticket failed in the dispatcher (tried 3 times, then its batch waits for the next start)',
        ),
      );
      lane.worker = worker;
    }
  }

  async enqueue(ticket: BatchTicket, options: EnqueueOptions = {}): Promise<void> {
    const lane = this.lane(ticket.provider);
    const redis = this.commands;
    const id = ticketId(ticket);
    const keys = lane.queue.keys;
    const adding = this.key('fair', lane.provider, 'adding');
    const tag = Number(
      await TAG.run(
        redis,
        [
          this.key('fair', lane.provider, 'v'),
          this.key('fair', lane.provider, 'f'),
          this.key('tickets', ticket.jobId),
          adding,
          keys.wait!,
          keys.prioritized!,
          keys.delayed!,
          keys.active!,
          keys.paused!,
        ],
        [ticket.tenant, options.front ? '1' : '0', id, lane.provider, RESET_ABOVE, ADD_GRACE_MS],
      ),
    );
    if (tag > PRIORITY_MAX && !lane.clampWarned) {
      lane.clampWarned = true;
      this.log.warn({ provider: lane.provider, tag }, 'dispatcher: fair tags passed BullMQ priorities; tickets past them run first come, first served');
    }
    const data: TicketData = {
      jobId: ticket.jobId,
      batchIndex: ticket.batchIndex,
      tenant: ticket.tenant,
      provider: ticket.provider,
      attempt: ticket.attempt,
      tag,
    };
    try {
      // An id BullMQ already holds is ignored: queueing the same turn twice queues it once.
      await lane.queue.add('batch', data, {
        jobId: id,
        priority: Math.min(Math.max(1, tag), PRIORITY_MAX),
        ...(options.delayMs !== undefined && options.delayMs > 0 ? { delay: Math.ceil(options.delayMs) } : {}),
      });
    } finally {
      await redis.zrem(adding, id).catch(() => undefined);
    }
  }

  async cancelJob(jobId: string): Promise<void> {
    this.abortJob(jobId);
    const key = this.key('tickets', jobId);
    // Read and drop in one step: a ticket queued after this is a new turn and runs.
    const result = await this.commands.multi().hgetall(key).del(key).exec();
    const entries = (result?.[0]?.[1] ?? {}) as Record<string, string>;
    await Promise.all(
      Object.entries(entries).map(async ([id, value]) => {
        const lane = this.lanes.get(value.slice(0, value.lastIndexOf(':')) as ProviderName);
        // Removing frees the queue; a ticket that is not removed (running, or its lane not here) finds
        // its entry gone when it starts, and runs nothing.
        await lane?.queue.remove(id);
      }),
    );
    await this.commands.publish(this.key('cancel'), jobId);
  }

  async throttle<T>(provider: ProviderName, request: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const lane = this.lane(provider);
    await lane.pausing;
    const waiters = [this.key('gate', provider, 'waiters'), this.key('gate', provider, 'asked')];
    const keys = [this.key('gate', provider), this.key('pause', provider), ...waiters, this.key('fair', provider, 'v')];
    // The ticket this submit is for (found by its signal): its tag orders it among the waiters.
    const ticket = signal ? [...this.running.values()].find((running) => running.controller.signal === signal) : undefined;
    const member = randomUUID();
    let window = 0;
    /** Waits at the gate until this send may go (and is counted); answers the 429s seen by then. */
    const pass = async (): Promise<number> => {
      const pauses = lane.pauses;
      try {
        for (;;) {
          signal?.throwIfAborted();
          // Configured, or learned from a 429 (this process's or another's) while this send waited.
          const rate = await this.rateOf(provider);
          // With no limit known, sends are kept an hour for the first 429 to learn from (GATE, LEARN).
          window = rate ? gateWindow(rate.intervalMs) : LEARN_HISTORY_MS;
          const wait = Number(
            await GATE.run(this.commands, keys, [rate?.limit ?? 0, window, member, ticket?.ticketId ?? '', ticket?.tag ?? 0, WAITER_STALE_MS]),
          );
          if (wait === 0) return pauses;
          // Asked again at least twice per staleness period, so a live waiter keeps its place.
          await delay(wait < 0 ? TURN_POLL_MS : Math.min(wait, WAITER_STALE_MS / 2), signal);
        }
      } catch (error) {
        if (ticket) await LEAVE_GATE.run(this.commands, waiters, [ticket.ticketId]).catch(() => undefined);
        throw error;
      }
    };
    let passedAt = await pass();
    // One submit at a time per provider in this process, from its send to its request id being saved
    // (the runner saves it inside `request`): a kill can then cost at most one paid call per process,
    // the one whose id was not saved yet. Taken after the gate, so a ticket waiting here has its turn.
    const submit = lane.submitting.then(async () => {
      // A 429 came while this send waited here: it goes through the gate again, under the pause and
      // the limit that 429 taught, instead of meeting the same 429.
      // So does one let through with no limit known while another process learned one meanwhile.
      await lane.pausing;
      const learnedSince = window === LEARN_HISTORY_MS && !lane.options.rateLimit && (await this.learnedRate(provider)) !== undefined;
      if (lane.pauses !== passedAt || learnedSince) {
        await this.commands.zrem(keys[0]!, member);
        passedAt = await pass();
      }
      // Counted from the moment it leaves (it may have waited here since the gate), then from its answer
      // (ANSWERED); with no limit known it is recorded only now, for a 429 to learn from (SENT, LEARN).
      await SENT.run(this.commands, [keys[0]!], [member]).catch(() => undefined);
      // The send a 429 during `request` is about (submits of a provider go one at a time here).
      lane.sending = member;
      lane.sendingUnderLimit = window !== LEARN_HISTORY_MS;
      return request();
    });
    lane.submitting = submit.then(
      () => undefined,
      () => undefined,
    );
    try {
      return await submit;
    } finally {
      if (lane.sending === member) lane.sending = undefined;
      // Counted from the answer on: see ANSWERED. A failure to record it leaves the send counted from
      // its leaving, as before. With no limit known it keeps its leaving time: what a 429 learns from.
      if (window !== LEARN_HISTORY_MS) {
        await ANSWERED.run(this.commands, [keys[0]!], [window, member]).catch((error: unknown) =>
          this.log.warn({ err: error, provider }, 'dispatcher: recording an answer in the send gate failed'),
        );
      }
    }
  }

  /** The limit learned from 429s for a provider with none configured ("limit:window:since" in Redis), if any. */
  private async learnedRate(provider: ProviderName): Promise<Rate | undefined> {
    const text = await this.commands.get(this.key('learned', provider)).catch(() => null);
    const match = /^(\d+):(\d+):\d+$/.exec(text ?? '');
    return match ? { limit: Number(match[1]), intervalMs: Number(match[2]) } : undefined;
  }

  /** The rate a lane keeps now: configured, or learned from 429s (by any process); undefined for none. */
  async rateOf(provider: ProviderName): Promise<Rate | undefined> {
    return this.lane(provider).options.rateLimit ?? this.learnedRate(provider);
  }

  pause(provider: ProviderName, ms: number): void {
    const lane = this.lane(provider);
    const capped = Math.ceil(Math.min(Math.max(0, ms), RETRY_AFTER_CAP_MS));
    const learn = async () => {
      if (lane.options.rateLimit) return;
      // With no configured limit, the 429 teaches one to every process (LEARN).
      const args = [capped, lane.sending ?? '', lane.sendingUnderLimit ? '1' : ''];
      await LEARN.run(this.commands, [this.key('gate', provider), this.key('learned', provider)], args).catch((error: unknown) =>
        this.log.warn({ err: error, provider }, 'dispatcher: learning a limit from a 429 failed'),
      );
    };
    const pause = async () => {
      if (capped <= 0) return;
      const left = Number(await PAUSE.run(this.commands, [this.key('pause', provider)], [capped]));
      await lane.queue.rateLimit(left);
    };
    lane.pauses += 1;
    const pausing = Promise.all([learn(), pause()]).then(
      () => undefined,
      (error: unknown) => this.log.error({ err: error, provider, ms: capped }, 'dispatcher: pausing a provider failed'),
    );
    lane.pausing = pausing;
    void pausing.finally(() => {
      if (lane.pausing === pausing) lane.pausing = undefined;
    });
  }

  /**
   * Not told: the order is a priority set in Redis that a synchronous call cannot read, and the
   * rank of a job's next ticket would cost a query per ticket per progress update.
   */
  queuePosition(_provider: ProviderName, _jobId: string): number | undefined {
    return undefined;
  }

  depth(provider: ProviderName): number {
    return this.lanes.get(provider)?.depth ?? 0;
  }

  /** Each provider queue's tickets by state, counted now (for /healthz and /metrics). */
  async queueCounts(): Promise<QueueCounts[]> {
    return Promise.all(
      [...this.lanes.values()].map(async (lane) => {
        const counts = await lane.queue.getJobCounts(...QUEUE_STATES);
        return { provider: lane.provider, ...Object.fromEntries(QUEUE_STATES.map((state) => [state, counts[state] ?? 0])) } as QueueCounts;
      }),
    );
  }

  halt(): void {
    if (this.halted) return;
    this.halted = true;
    for (const lane of this.lanes.values()) {
      lane.worker?.pause(true).catch((error: unknown) => this.log.warn({ err: error, provider: lane.provider }, 'dispatcher: pausing a worker failed'));
    }
  }

  /** Also halts: a process that gives its tickets back must not take them again. */
  abortAll(): void {
    this.halt();
    for (const running of this.running.values()) {
      running.requeue = true;
      running.controller.abort();
    }
  }

  async close(): Promise<void> {
    this.halt();
    clearInterval(this.depthTimer);
    const workers = [...this.lanes.values()].flatMap((lane) => (lane.worker ? [lane.worker] : []));
    // Closing waits for the running tickets to settle (and be handed back); one that ignores its
    // abort must not hold the process: its lock lapses and another process takes it over.
    let timer: NodeJS.Timeout | undefined;
    const settled = await Promise.race([
      Promise.allSettled(workers.map((worker) => worker.close())).then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), CLOSE_GRACE_MS))),
    ]);
    clearTimeout(timer);
    if (!settled) {
      this.log.warn({ running: this.running.size }, 'dispatcher: tickets still running at close; another process takes them over');
      await Promise.allSettled(workers.map((worker) => worker.disconnect()));
    }
    // With Redis gone, closing a queue or quitting a client waits for a reconnect that may never come:
    // each gets a moment, then the connections are cut.
    await settledWithin(Promise.allSettled([...this.lanes.values()].map((lane) => lane.queue.close())), QUIT_GRACE_MS);
    const clients = [this.subscriber, this.workerRedis, this.redis].filter((client) => client !== undefined);
    await settledWithin(Promise.allSettled(clients.map((client) => client.quit())), QUIT_GRACE_MS);
    for (const client of clients) client.disconnect();
  }

  /** Runs one ticket in a worker of this process. */
  private async process(lane: Lane, job: TicketJob, token: string | undefined): Promise<void> {
    const id = job.id ?? '';
    const ticket = readTicket(job.data, lane.provider);
    if (!ticket) {
      this.log.error({ provider: lane.provider, ticket: id }, 'dispatcher: dropped a queued ticket that is not a batch ticket');
      return;
    }
    // Fetched after halt (a fetch already under way): straight back for another process.
    if (this.halted) return this.putBack(lane, job, token);
    const running: Running = { jobId: ticket.jobId, ticketId: id, tag: ticket.tag, controller: new AbortController(), requeue: false };
    this.running.set(id, running);
    const places = this.key('tenant-calls', ticket.tenant);
    let renewing: NodeJS.Timeout | undefined;
    try {
      const tickets = this.key('tickets', ticket.jobId);
      const live = Number(await START.run(this.commands, [tickets], [id]));
      if (live !== 1) return;
      // Its tenant has all its plan's calls in flight: back to the queue for a moment, holding no slot
      // (asked again every TENANT_BUSY_RETRY_MS, a poll; the ticket keeps its fair tag). Taken before
      // the rate's start, so a ticket sent back here has not used up one of the tenant's starts.
      const { tenantConcurrency } = this.options;
      if (tenantConcurrency) {
        const cap = await tenantConcurrency(ticket.tenant);
        if (Number(await TENANT_CALL.run(this.commands, [places], [cap, id, this.lockDurationMs])) !== 1) {
          await job.moveToDelayed(Date.now() + TENANT_BUSY_RETRY_MS, token);
          throw new DelayedError();
        }
        renewing = setInterval(() => {
          TENANT_CALL.run(this.commands, [places], [Number.MAX_SAFE_INTEGER, id, this.lockDurationMs]).catch((error: unknown) =>
            this.log.warn({ err: error, ticket: id }, 'dispatcher: renewing a tenant’s call place failed'),
          );
        }, Math.max(100, Math.floor(this.lockDurationMs / 3)));
        renewing.unref();
      }
      // Over its tenant's rate: back to the queue until it may start, holding no slot meanwhile.
      const { tenantRate } = this.options;
      if (tenantRate) {
        const wait = Number(await TENANT_START.run(this.commands, [this.key('tenant', ticket.tenant)], [tenantRate.limit, tenantRate.intervalMs, randomUUID()]));
        if (wait > 0) {
          await job.moveToDelayed(Date.now() + wait, token);
          throw new DelayedError();
        }
      }
      if (!running.requeue) {
        const { tag: _tag, ...batch } = ticket;
        try {
          await this.runner!(batch, running.controller.signal);
        } catch (error) {
          this.log.error({ err: error, ticket: id }, 'dispatcher: a ticket failed unexpectedly');
        }
      }
      if (running.requeue) return await this.putBack(lane, job, token);
      await this.commands.hdel(tickets, id);
    } finally {
      this.running.delete(id);
      if (renewing !== undefined) {
        clearInterval(renewing);
        await this.commands.zrem(places, id).catch((error: unknown) => this.log.warn({ err: error, ticket: id }, 'dispatcher: freeing a tenant’s call place failed'));
      }
    }
  }

  /** Hands a running ticket back to the queue, keeping its priority and its place among its equals. */
  private async putBack(lane: Lane, job: TicketJob, token: string | undefined): Promise<never> {
    await job.moveToWait(token);
    // BullMQ puts a prioritized job back without waking the workers blocked on the queue's marker
    // (it does for a plain one): add the marker it adds when a job becomes available, so another
    // process takes the ticket now rather than at its next poll.
    await this.commands.zadd(lane.queue.keys.marker!, 0, '0');
    throw new WaitingError();
  }

  private abortJob(jobId: string): void {
    for (const running of this.running.values()) if (running.jobId === jobId) running.controller.abort();
  }

  private async countDepths(): Promise<void> {
    if (this.counting) return;
    this.counting = true;
    try {
      await Promise.all(
        [...this.lanes.values()].map(async (lane) => {
          const counts = await lane.queue.getJobCounts('waiting', 'prioritized', 'delayed');
          lane.depth = (counts.waiting ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0);
        }),
      );
    } catch (error) {
      this.log.debug({ err: error }, 'dispatcher: counting queued tickets failed');
    } finally {
      this.counting = false;
    }
  }
}
