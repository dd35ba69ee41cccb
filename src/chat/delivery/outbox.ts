/**
 * Jobs whose delivery is not complete (the progress message could not be posted, or the gallery is not
 * all out), one list of ids per platform in the store (`<platform>:outbox`): a finished job is no longer
 * among the engine's active jobs, so without it a restart in the middle of a gallery, or a channel the
 * bot is invited to next week, would lose the images' way to the chat. What is done with an entry is
 * the courier's policy.
 */
import type { Keyv } from 'keyv';

export class Outbox {
  /** read-modify-write of one key: one change at a time */
  private chain: Promise<unknown> = Promise.resolve();
  private readonly key: string;

  constructor(
    private readonly keyv: Keyv,
    platform: string,
  ) {
    this.key = `${platform}:outbox`;
  }

  async list(): Promise<string[]> {
    await this.chain;
    const ids = await this.keyv.get<string[]>(this.key);
    return Array.isArray(ids) ? ids.filter((id) => typeof id === 'string') : [];
  }

  async has(jobId: string): Promise<boolean> {
    return (await this.list()).includes(jobId);
  }

  add(jobId: string): Promise<void> {
    return this.update((ids) => (ids.includes(jobId) ? ids : [...ids, jobId]));
  }

  remove(jobId: string): Promise<void> {
    return this.update((ids) => ids.filter((id) => id !== jobId));
  }

  private update(change: (ids: string[]) => string[]): Promise<void> {
    const next = this.chain.then(async () => {
      const ids = await this.keyv.get<string[]>(this.key);
      await this.keyv.set(this.key, change(Array.isArray(ids) ? ids : []));
    });
    this.chain = next.catch(() => undefined);
    return next;
  }
}
