/**
 * Jobs in Keyv: one key per job, plus an index of unfinished jobs so a restart knows what to resume.
 *
 * Writes of one job are coalesced: while one is on its way, later saves wait for a single next write
 * of the latest state instead of queueing one write each — a job that changes ten times while the disk
 * is busy is written twice, not ten times, and never out of order. The index is touched only when a
 * job joins or leaves it, read fresh each time, so a CLI beside the bot on the same store keeps both
 * processes' jobs in it.
 */
import type { Keyv } from 'keyv';
import type { Job } from '../core/types.js';

const ACTIVE_INDEX = 'jobs:active';
const REVIEW_JOURNAL = 'reviews:open';

export function isFinished(job: Pick<Job, 'state'>): boolean {
  return job.state === 'completed' || job.state === 'failed' || job.state === 'canceled';
}

interface WriteSlot {
  /** the write in progress (or the last one), settled or not */
  tail: Promise<void>;
  /** the write that will follow it, taking whatever value is latest when it starts */
  next?: { value: unknown; done: Promise<void> };
}

export class JobStore {
  private readonly chains = new Map<string, Promise<unknown>>();
  private readonly writes = new Map<string, WriteSlot>();
  /** unfinished jobs this process has put in the index */
  private readonly indexed = new Set<string>();
  /** index changes waiting for the next update, and that update */
  private readonly indexChanges = new Map<string, boolean>();
  private indexFlush: Promise<void> | undefined;

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

  async get(id: string): Promise<Job | undefined> {
    if (!/^[\w-]{1,64}$/.test(id)) return undefined;
    return (await this.keyv.get<Job>(`job:${id}`)) ?? undefined;
  }

  /** Resolves once a write holding (at least) `value` is stored; see the note at the top. */
  private write(key: string, value: unknown): Promise<void> {
    const slot = this.writes.get(key) ?? { tail: Promise.resolve() };
    if (slot.next) {
      slot.next.value = value;
      return slot.next.done;
    }
    const next: { value: unknown; done: Promise<void> } = { value, done: Promise.resolve() };
    next.done = slot.tail.then(async () => {
      if (slot.next === next) slot.next = undefined; // saves from now on go to the write after this one
      await this.keyv.set(key, next.value);
    });
    slot.next = next;
    const tail = next.done.catch(() => undefined);
    slot.tail = tail;
    this.writes.set(key, slot);
    void tail.then(() => {
      if (slot.tail === tail && !slot.next) this.writes.delete(key);
    });
    return next.done;
  }

  /** Persists a job and keeps the unfinished-jobs index in step with its state. */
  async save(job: Job): Promise<void> {
    await this.write(`job:${job.id}`, job);
    const finished = isFinished(job);
    if (!finished && this.indexed.has(job.id)) return;
    await this.updateIndex(job.id, !finished);
    if (finished) this.indexed.delete(job.id);
    else this.indexed.add(job.id);
  }

  /**
   * Index changes are applied in groups: all the joins and leaves that arrive while one update is on
   * its way go into the next single read-modify-write (500 jobs accepted at once cost a few writes).
   */
  private updateIndex(jobId: string, member: boolean): Promise<void> {
    this.indexChanges.set(jobId, member);
    this.indexFlush ??= this.serial(ACTIVE_INDEX, async () => {
      this.indexFlush = undefined;
      const changes = new Map(this.indexChanges);
      this.indexChanges.clear();
      const active = new Set((await this.keyv.get<string[]>(ACTIVE_INDEX)) ?? []);
      for (const [id, isMember] of changes) {
        if (isMember) active.add(id);
        else active.delete(id);
      }
      await this.keyv.set(ACTIVE_INDEX, [...active]);
    });
    return this.indexFlush;
  }

  /**
   * Adds `count` images to a tenant's tally for `day` if it stays within `cap`; returns the new tally,
   * or undefined (and adds nothing) when it would not. Serialised, so two requests cannot both fit.
   */
  async reserveImages(tenant: string, day: string, count: number, cap: number): Promise<number | undefined> {
    const key = `usage:${tenant}:${day}`;
    return this.serial(key, async () => {
      const used = (await this.keyv.get<number>(key)) ?? 0;
      if (used + count > cap) return undefined;
      // Kept two days: long enough for a job that runs across midnight to give its unused images back.
      await this.keyv.set(key, used + count, 2 * 86_400_000);
      return used + count;
    });
  }

  /** Gives back images a job reserved but did not make (failed or cancelled). */
  async releaseImages(tenant: string, day: string, count: number): Promise<void> {
    const key = `usage:${tenant}:${day}`;
    await this.serial(key, async () => {
      const used = (await this.keyv.get<number>(key)) ?? 0;
      await this.keyv.set(key, Math.max(0, used - count), 2 * 86_400_000);
    });
  }

  async imagesUsed(tenant: string, day: string): Promise<number> {
    return (await this.keyv.get<number>(`usage:${tenant}:${day}`)) ?? 0;
  }

  /** Jobs with a review whose file move may not have been saved (a write-ahead mark). */
  async markReview(jobId: string, open: boolean): Promise<void> {
    await this.serial(REVIEW_JOURNAL, async () => {
      const ids = new Set((await this.keyv.get<string[]>(REVIEW_JOURNAL)) ?? []);
      if (open === ids.has(jobId)) return;
      if (open) ids.add(jobId);
      else ids.delete(jobId);
      await this.keyv.set(REVIEW_JOURNAL, [...ids]);
    });
  }

  async openReviews(): Promise<string[]> {
    return (await this.keyv.get<string[]>(REVIEW_JOURNAL)) ?? [];
  }

  async activeIds(): Promise<string[]> {
    return (await this.keyv.get<string[]>(ACTIVE_INDEX)) ?? [];
  }

  async close(): Promise<void> {
    await Promise.all([...this.chains.values(), ...[...this.writes.values()].map((slot) => slot.tail)]);
    await this.keyv.disconnect();
  }
}
