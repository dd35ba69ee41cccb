/**
 * An in-memory JobRepository (one of the core's ports), with switches for what a real store does to
 * the engine: saves that fail (a full disk, a lost database) and saves that take time (a busy disk,
 * so that a save the engine does not wait for lands after what follows it).
 */
import type { JobRepository } from '../../src/core/ports.js';
import type { Job } from '../../src/core/types.js';

export class MemoryJobs implements JobRepository {
  readonly jobs = new Map<string, Job>();
  private readonly usage = new Map<string, number>();
  private readonly reviews = new Set<string>();
  /** while set, every save it matches rejects with its error */
  failSaves: { error: Error; when: (job: Job) => boolean } | undefined;
  failedSaves = 0;
  /** each save lands this long after it is made (on the global timers, so fake timers drive it) */
  saveDelayMs = 0;
  /** saves that landed */
  saves = 0;

  async get(id: string): Promise<Job | undefined> {
    const job = this.jobs.get(id);
    return job ? structuredClone(job) : undefined;
  }

  async save(job: Job): Promise<void> {
    const copy = structuredClone(job);
    if (this.saveDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.saveDelayMs));
    if (this.failSaves?.when(copy)) {
      this.failedSaves += 1;
      throw this.failSaves.error;
    }
    this.jobs.set(copy.id, copy);
    this.saves += 1;
  }

  async activeIds(): Promise<string[]> {
    return [...this.jobs.values()].filter((j) => !['completed', 'failed', 'canceled'].includes(j.state)).map((j) => j.id);
  }

  async reserveImages(tenant: string, day: string, count: number, cap: number): Promise<number | undefined> {
    const key = `${tenant}:${day}`;
    const used = this.usage.get(key) ?? 0;
    if (used + count > cap) return undefined;
    this.usage.set(key, used + count);
    return used + count;
  }

  async releaseImages(tenant: string, day: string, count: number): Promise<void> {
    const key = `${tenant}:${day}`;
    this.usage.set(key, Math.max(0, (this.usage.get(key) ?? 0) - count));
  }

  async imagesUsed(tenant: string, day: string): Promise<number> {
    return this.usage.get(`${tenant}:${day}`) ?? 0;
  }

  async markReview(jobId: string, open: boolean): Promise<void> {
    if (open) this.reviews.add(jobId);
    else this.reviews.delete(jobId);
  }

  async openReviews(): Promise<string[]> {
    return [...this.reviews];
  }
}
