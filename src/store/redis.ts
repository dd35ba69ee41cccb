/**
 * Distributed mode's store: the core's ports over Redis, for several processes at once.
 *
 * - `RedisJobStore` (JobRepository): job records in Keyv (`@keyv/redis`), the unfinished-jobs index,
 *   the daily tallies and the review journal as plain Redis keys under `<prefix>:`.
 * - `RedisJobLocks` (JobLocks): one lock per job, so two processes never change one job at once.
 * - `RedisAdmissionBook` (AdmissionBook): who runs, who waits, per tenant and person.
 *
 * Every step two processes could race on is one Lua script (redis-scripts.ts), atomic on the server.
 * None of these classes owns a connection: whoever opened them (the composition root) closes them,
 * because one ioredis connection serves the store, the locks and the book together.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Keyv } from 'keyv';
import { delay } from '../core/delay.js';
import { silentLogger, type AdmissionBook, type AdmissionCaps, type AdmissionEntry, type JobLocks, type JobRepository, type Logger, type Placement, type PlaceResult } from '../core/ports.js';
import { isJobFinished } from '../core/progress.js';
import type { Job } from '../core/types.js';
import { EXTEND_LOCK, PLACE, READMIT, RELEASE_IMAGES, RELEASE_LOCK, REMOVE, RESERVE_IMAGES } from './redis-scripts.js';

/** Tallies are kept two days: long enough for a job that runs across midnight to give images back. */
const USAGE_TTL_MS = 2 * 86_400_000;
const JOB_ID = /^[\w-]{1,64}$/;

/**
 * Opens our own connection (store, locks, admission book). A command waits through about ten
 * reconnect attempts (ioredis's backoff: 50 ms more each, so ~3 s) and then fails: a slash command or
 * a button answers with an error instead of hanging on a Redis that is gone. BullMQ's workers need
 * the opposite (`maxRetriesPerRequest: null`, a blocking wait may last for ever): they open their own.
 *
 * A command whose reply was lost in a disconnect is not sent again: a tally or a placement would
 * count twice. It fails instead, and the caller's error path applies.
 *
 * The URL is never logged: it may carry a password.
 */
export function openRedis(url: string, logger: Logger = silentLogger): Redis {
  const redis = new Redis(url, {
    lazyConnect: false,
    maxRetriesPerRequest: 10,
    autoResendUnfulfilledCommands: false,
    connectionName: 'art-factory',
  });
  // Without a listener ioredis prints every failed reconnect to stderr; its messages name the host and
  // port, never the password.
  redis.on('error', (error: Error) => logger.warn({ err: error.message }, 'Redis connection error'));
  return redis;
}

function asNumber(reply: unknown): number {
  const n = Number(reply);
  if (!Number.isFinite(n)) throw new Error(`Redis answered ${typeof reply} where a number was expected`);
  return n;
}

function asStrings(reply: unknown): string[] {
  return Array.isArray(reply) ? reply.map(String) : [];
}

/**
 * Jobs for several processes. No group commit (Redis answers in well under a millisecond): each save
 * is the record plus one index update, in the order that keeps a crash in between harmless.
 *
 * The Keyv must throw on errors (openKeyv's Redis store does): otherwise a failed save would look
 * saved. Job records are `job:<id>` in that Keyv, as in SQLite, so its namespace is what keeps two
 * deployments on one Redis apart; the other keys live under `prefix`.
 */
export class RedisJobStore implements JobRepository {
  private readonly saving = new Set<Promise<unknown>>();

  constructor(
    private readonly redis: Redis,
    private readonly keyv: Keyv,
    private readonly prefix: string,
  ) {}

  private get activeKey(): string {
    return `${this.prefix}:jobs:active`;
  }

  private get reviewsKey(): string {
    return `${this.prefix}:reviews:open`;
  }

  private usageKey(tenant: string, day: string): string {
    return `${this.prefix}:usage:${tenant}:${day}`;
  }

  async get(id: string): Promise<Job | undefined> {
    if (!JOB_ID.test(id)) return undefined;
    return (await this.keyv.get<Job>(`job:${id}`)) ?? undefined;
  }

  /**
   * Writes the record and keeps the unfinished-jobs index in step. An unfinished job joins the index
   * before its record is written, a finished one leaves it after: a crash in between leaves an id
   * whose record says what to do (nothing, or resume), never a live job no restart would find.
   */
  save(job: Job): Promise<void> {
    const saved = (async () => {
      const finished = isJobFinished(job);
      if (!finished) await this.redis.sadd(this.activeKey, job.id);
      if ((await this.keyv.set(`job:${job.id}`, job)) === false) throw new Error(`saving job ${job.id} failed`);
      if (finished) await this.redis.srem(this.activeKey, job.id);
    })();
    this.saving.add(saved);
    void saved.catch(() => undefined).then(() => this.saving.delete(saved));
    return saved;
  }

  async activeIds(): Promise<string[]> {
    return this.redis.smembers(this.activeKey);
  }

  /** Adds `count` to the tally if it stays within `cap`, in one step on the server: the new tally, or undefined. */
  async reserveImages(tenant: string, day: string, count: number, cap: number): Promise<number | undefined> {
    const reply = await RESERVE_IMAGES.run(this.redis, [this.usageKey(tenant, day)], [count, cap, USAGE_TTL_MS]);
    return reply === null ? undefined : asNumber(reply);
  }

  async releaseImages(tenant: string, day: string, count: number): Promise<void> {
    await RELEASE_IMAGES.run(this.redis, [this.usageKey(tenant, day)], [count]);
  }

  async imagesUsed(tenant: string, day: string): Promise<number> {
    return Number((await this.redis.get(this.usageKey(tenant, day))) ?? 0);
  }

  async markReview(jobId: string, open: boolean): Promise<void> {
    if (open) await this.redis.sadd(this.reviewsKey, jobId);
    else await this.redis.srem(this.reviewsKey, jobId);
  }

  async openReviews(): Promise<string[]> {
    return this.redis.smembers(this.reviewsKey);
  }

  /** Waits for saves on their way; closes nothing (the connections are the caller's). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.saving]);
  }
}

export interface RedisJobLocksOptions {
  /**
   * How long a lock outlives a holder that stops renewing it (a killed process). Renewed every
   * third of it while the work runs.
   * @default 15_000
   */
  ttlMs?: number;
}

/**
 * One job changed by one process at a time: `SET NX PX` with a random token, renewed while the work
 * runs, let go only by the token that took it (so a late release never frees a later holder's lock).
 *
 * The risk, stated: if renewing fails for longer than the ttl (the process stalled past it, or Redis
 * was unreachable), another process may take the lock while this work still runs, and the later
 * save wins. `run` still returns the work's result; the ttl is long next to one change of a job.
 *
 * Not reentrant: `run` inside `run` for the same job waits for itself. Waiters in one process queue
 * here and take the lock in turn; across processes there is no order, only exclusion.
 */
export class RedisJobLocks implements JobLocks {
  private readonly ttlMs: number;
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    options: RedisJobLocksOptions = {},
  ) {
    const ttlMs = options.ttlMs ?? 15_000;
    if (!Number.isInteger(ttlMs) || ttlMs < 30) throw new Error(`Expected \`ttlMs\` to be an integer of at least 30, got \`${ttlMs}\``);
    this.ttlMs = ttlMs;
  }

  run<T>(jobId: string, work: () => Promise<T>): Promise<T> {
    // Callers in this process wait here, not by polling Redis against each other.
    const previous = this.chains.get(jobId) ?? Promise.resolve();
    const next = previous.then(() => this.hold(jobId, work));
    const settled = next.catch(() => undefined);
    this.chains.set(jobId, settled);
    void settled.then(() => {
      if (this.chains.get(jobId) === settled) this.chains.delete(jobId);
    });
    return next;
  }

  private async hold<T>(jobId: string, work: () => Promise<T>): Promise<T> {
    const key = `${this.prefix}:lock:job:${jobId}`;
    const token = randomBytes(16).toString('hex');
    await this.acquire(key, token);
    let renewing: Promise<unknown> = Promise.resolve();
    const timer = setInterval(() => {
      renewing = EXTEND_LOCK.run(this.redis, [key], [token, this.ttlMs]).then(
        // 0: the lock lapsed and may be someone else's now; renewing again could not win it back.
        (held) => {
          if (held !== 1) clearInterval(timer);
        },
        // A failed round trip is not a lost lock: the next tick tries again.
        () => undefined,
      );
    }, Math.floor(this.ttlMs / 3));
    timer.unref();
    try {
      return await work();
    } finally {
      clearInterval(timer);
      await renewing;
      // A release that fails leaves the lock to lapse after its ttl.
      await RELEASE_LOCK.run(this.redis, [key], [token]).catch(() => undefined);
    }
  }

  /** Polls with a short, growing, jittered wait (2 ms → 50 ms): a change of a job takes milliseconds. */
  private async acquire(key: string, token: string): Promise<void> {
    let wait = 2;
    while ((await this.redis.set(key, token, 'PX', this.ttlMs, 'NX')) !== 'OK') {
      await delay(wait * (0.75 + Math.random() / 2));
      wait = Math.min(50, wait * 2);
    }
  }
}

/**
 * The admission book in Redis, each method one Lua script. `waitingIndex` must answer at once (the
 * progress view asks it synchronously), so it reads a local mirror of each tenant's waiting list as
 * the last script here returned it: approximate, since another process may have admitted or queued
 * jobs since. `refresh` re-reads a tenant's list when that matters.
 */
export class RedisAdmissionBook implements AdmissionBook {
  /** tenant → its waiting jobs as last seen; tenants with none are dropped, so it stays small */
  private readonly waiting = new Map<string, string[]>();

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private keys(entry: AdmissionEntry): string[] {
    const base = `${this.prefix}:adm`;
    return [`${base}:run:${entry.tenant}`, `${base}:wait:${entry.tenant}`, `${base}:user:${entry.tenant}:${entry.userId}`];
  }

  private mirror(tenant: string, reply: unknown): void {
    const list = asStrings(reply);
    if (list.length > 0) this.waiting.set(tenant, list);
    else this.waiting.delete(tenant);
  }

  async place(entry: AdmissionEntry, caps: AdmissionCaps): Promise<PlaceResult> {
    const reply = (await PLACE.run(this.redis, this.keys(entry), [
      entry.jobId,
      caps.maxRunning,
      caps.maxWaiting,
      caps.maxPerPerson ?? '',
    ])) as [string, number, number, unknown];
    const [kind, a, b, waiting] = reply;
    this.mirror(entry.tenant, waiting);
    if (kind === 'admit' || kind === 'wait') return { placement: kind };
    if (kind === 'person') return { refused: 'person', mine: asNumber(a) };
    return { refused: 'full', running: asNumber(a), waiting: asNumber(b) };
  }

  async readmit(entry: AdmissionEntry, wasRunning: boolean, caps: AdmissionCaps): Promise<Placement> {
    const [placement, waiting] = (await READMIT.run(this.redis, this.keys(entry), [entry.jobId, wasRunning ? '1' : '0', caps.maxRunning])) as [Placement, unknown];
    this.mirror(entry.tenant, waiting);
    return placement;
  }

  async remove(entry: AdmissionEntry, caps: AdmissionCaps): Promise<string[]> {
    const [promoted, waiting] = (await REMOVE.run(this.redis, this.keys(entry), [entry.jobId, caps.maxRunning])) as [unknown, unknown];
    this.mirror(entry.tenant, waiting);
    return asStrings(promoted);
  }

  /** Position among the tenant's waiting jobs as last seen here (0-based); -1 when not waiting or not known. */
  waitingIndex(tenant: string, jobId: string): number {
    return this.waiting.get(tenant)?.indexOf(jobId) ?? -1;
  }

  /** Re-reads a tenant's waiting list from Redis into the mirror; returns it. */
  async refresh(tenant: string): Promise<string[]> {
    const list = await this.redis.lrange(`${this.prefix}:adm:wait:${tenant}`, 0, -1);
    this.mirror(tenant, list);
    return list;
  }
}
