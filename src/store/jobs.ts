/**
 * Jobs in Keyv: one key per job, plus an index of unfinished jobs so a restart knows what to resume.
 * Writes to one key are serialised in process, so a slow write never lands after a newer one.
 */
import type { Keyv } from 'keyv';
import type { Job } from '../core/types.js';

const ACTIVE_INDEX = 'jobs:active';
const REVIEW_JOURNAL = 'reviews:open';

export function isFinished(job: Pick<Job, 'state'>): boolean {
  return job.state === 'completed' || job.state === 'failed' || job.state === 'canceled';
}

export class JobStore {
  private readonly chains = new Map<string, Promise<unknown>>();

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

  /** Persists a job and keeps the unfinished-jobs index in step with its state. */
  async save(job: Job): Promise<void> {
    await this.serial(`job:${job.id}`, () => this.keyv.set(`job:${job.id}`, job));
    await this.serial(ACTIVE_INDEX, async () => {
      const active = new Set((await this.keyv.get<string[]>(ACTIVE_INDEX)) ?? []);
      const finished = isFinished(job);
      if (finished === !active.has(job.id)) return;
      if (finished) active.delete(job.id);
      else active.add(job.id);
      await this.keyv.set(ACTIVE_INDEX, [...active]);
    });
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
    await Promise.all([...this.chains.values()]);
    await this.keyv.disconnect();
  }
}
