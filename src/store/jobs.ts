/**
 * Jobs in Keyv: one key per job, plus an index of unfinished jobs so a restart knows what to resume,
 * the daily image tallies, and the write-ahead mark of reviews in progress.
 *
 * Writes are group-committed: every write that arrives while one batch is on its way to the store goes
 * into the next batch, one statement for all of them, with only the latest value of each key. A save
 * resolves once the batch holding it is stored, so "saved" still means on disk; 500 jobs accepted at
 * once cost a handful of statements instead of 1500, and a job that changes ten times while the disk is
 * busy is written once or twice, never out of order.
 */
import type { Keyv } from 'keyv';
import { isJobFinished } from '../core/progress.js';
import type { Job } from '../core/types.js';

const ACTIVE_INDEX = 'jobs:active';
const REVIEW_JOURNAL = 'reviews:open';
/** Tallies are kept two days: long enough for a job that runs across midnight to give images back. */
const USAGE_TTL_MS = 2 * 86_400_000;

interface PendingWrite {
  value: unknown;
  ttl?: number;
}

export class JobStore {
  private readonly chains = new Map<string, Promise<unknown>>();
  /** writes waiting for the next batch, and the batch on its way (reads see both) */
  private pending = new Map<string, PendingWrite>();
  private writing = new Map<string, PendingWrite>();
  private nextBatch: Promise<void> | undefined;
  private lastBatch: Promise<void> = Promise.resolve();
  /** small values read or written by this process (tallies, index, journal), never job records */
  private readonly small = new Map<string, unknown>();
  /** unfinished jobs this process has put in the index, and joins and leaves not yet written */
  private readonly indexed = new Set<string>();
  private readonly indexChanges = new Map<string, boolean>();

  constructor(private readonly keyv: Keyv) {}

  /** Runs `work` after every earlier call for the same key has settled. */
  private serial<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.chains.get(key) ?? Promise.resolve();
    const next = previous.then(work, work);
    const settled = next.catch(() => undefined);
    this.chains.set(key, settled);
    void settled.then(() => {
      if (this.chains.get(key) === settled) this.chains.delete(key);
    });
    return next;
  }

  private write(key: string, value: unknown, ttl?: number): Promise<void> {
    this.pending.set(key, ttl === undefined ? { value } : { value, ttl });
    if (!key.startsWith('job:')) this.small.set(key, value);
    this.nextBatch ??= this.lastBatch.then(async () => {
      this.nextBatch = undefined;
      this.writing = this.pending;
      this.pending = new Map();
      await this.applyIndexChanges();
      const entries = [...this.writing].map(([k, w]) => ({ key: k, value: w.value, ...(w.ttl !== undefined ? { ttl: w.ttl } : {}) }));
      try {
        if (entries.length > 0) await this.keyv.setMany(entries);
      } finally {
        this.writing = new Map();
      }
    });
    const batch = this.nextBatch;
    this.lastBatch = batch.catch(() => undefined);
    return batch;
  }

  private async read<T>(key: string): Promise<T | undefined> {
    const queued = this.pending.get(key) ?? this.writing.get(key);
    if (queued) return queued.value as T;
    if (this.small.has(key)) return this.small.get(key) as T;
    const value = (await this.keyv.get<T>(key)) ?? undefined;
    if (!key.startsWith('job:')) this.small.set(key, value);
    return value;
  }

  async get(id: string): Promise<Job | undefined> {
    if (!/^[\w-]{1,64}$/.test(id)) return undefined;
    return this.read<Job>(`job:${id}`);
  }

  /** Persists a job and keeps the unfinished-jobs index in step with its state, in one batch. */
  async save(job: Job): Promise<void> {
    const finished = isJobFinished(job);
    if (finished || !this.indexed.has(job.id)) this.indexChanges.set(job.id, !finished);
    if (finished) this.indexed.delete(job.id);
    else this.indexed.add(job.id);
    await this.write(`job:${job.id}`, job);
  }

  /**
   * Joins and leaves of the index ride in the batch being written: the index is read fresh from the
   * store then (one read per batch, not per job), so a CLI beside the bot on the same store keeps
   * both processes' jobs in it.
   */
  private async applyIndexChanges(): Promise<void> {
    if (this.indexChanges.size === 0) return;
    const changes = new Map(this.indexChanges);
    this.indexChanges.clear();
    const active = new Set((await this.keyv.get<string[]>(ACTIVE_INDEX)) ?? []);
    for (const [id, member] of changes) {
      if (member) active.add(id);
      else active.delete(id);
    }
    this.writing.set(ACTIVE_INDEX, { value: [...active] });
  }

  /**
   * Adds `count` images to a tenant's tally for `day` if it stays within `cap`; returns the new tally,
   * or undefined (and adds nothing) when it would not. Serialised, so two requests cannot both fit.
   * The tally is counted in this process once read: processes sharing a store each see their own.
   */
  async reserveImages(tenant: string, day: string, count: number, cap: number): Promise<number | undefined> {
    const key = `usage:${tenant}:${day}`;
    return this.serial(key, async () => {
      const used = (await this.read<number>(key)) ?? 0;
      if (used + count > cap) return undefined;
      // Not awaited: it goes out in the same batch as the job it is for (saved right after), or before.
      this.write(key, used + count, USAGE_TTL_MS).catch(() => undefined);
      return used + count;
    });
  }

  /** Gives back images a job reserved but did not make (failed or cancelled). */
  async releaseImages(tenant: string, day: string, count: number): Promise<void> {
    const key = `usage:${tenant}:${day}`;
    await this.serial(key, async () => {
      const used = (await this.read<number>(key)) ?? 0;
      await this.write(key, Math.max(0, used - count), USAGE_TTL_MS);
    });
  }

  async imagesUsed(tenant: string, day: string): Promise<number> {
    return (await this.read<number>(`usage:${tenant}:${day}`)) ?? 0;
  }

  /** Jobs with a review whose file move may not have been saved (a write-ahead mark). */
  async markReview(jobId: string, open: boolean): Promise<void> {
    await this.serial(REVIEW_JOURNAL, async () => {
      const ids = new Set((await this.read<string[]>(REVIEW_JOURNAL)) ?? []);
      if (open === ids.has(jobId)) return;
      if (open) ids.add(jobId);
      else ids.delete(jobId);
      await this.write(REVIEW_JOURNAL, [...ids]);
    });
  }

  async openReviews(): Promise<string[]> {
    return (await this.read<string[]>(REVIEW_JOURNAL)) ?? [];
  }

  async activeIds(): Promise<string[]> {
    await this.lastBatch;
    return (await this.keyv.get<string[]>(ACTIVE_INDEX)) ?? [];
  }

  async close(): Promise<void> {
    await Promise.all([...this.chains.values()]);
    await this.lastBatch;
    await this.keyv.disconnect();
  }
}
