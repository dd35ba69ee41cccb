/**
 * Jobs whose delivery is not complete (the progress message could not be posted, or the gallery is not
 * all out), one list of ids per platform in the store (`<platform>:outbox`): a finished job is no longer
 * among the engine's active jobs, so without it a restart in the middle of a gallery, or a channel the
 * bot is invited to next week, would lose the images' way to the chat. What is done with an entry is
 * the courier's policy.
 *
 * The list stays one Keyv key (a store migration copies Keyv keys as they are). Its read-modify-write
 * is one at a time in this process (a promise chain), and in distributed mode across processes too:
 * under a lock named after the list, so two processes adding at once never lose one of the ids.
 */
import type { Keyv } from 'keyv';
import type { JobLocks } from '../../core/ports.js';

export class Outbox {
  /** read-modify-write of one key: one change at a time */
  private chain: Promise<unknown> = Promise.resolve();
  private readonly key: string;
  private readonly lockName: string;

  constructor(
    private readonly keyv: Keyv,
    platform: string,
    /** distributed mode: the lock every process takes around a change @default none (one process) */
    private readonly locks?: JobLocks,
  ) {
    this.key = `${platform}:outbox`;
    this.lockName = `outbox-${platform}`;
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
    const apply = async () => {
      const ids = await this.keyv.get<string[]>(this.key);
      await this.keyv.set(this.key, change(Array.isArray(ids) ? ids : []));
    };
    const next = this.chain.then(() => (this.locks ? this.locks.run(this.lockName, apply) : apply()));
    this.chain = next.catch(() => undefined);
    return next;
  }
}
