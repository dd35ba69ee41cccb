/**
 * Jobs whose delivery to a chat platform is not complete: the progress message could not be posted
 * (Slack: the bot is not in the channel) or the gallery is not fully posted yet. Kept in the store,
 * because a finished job no longer appears in engine.activeJobs(): without this list a restart in the
 * middle of posting a gallery, or a channel the bot is invited to next week, would lose the images'
 * way to the chat. One list per platform (`<platform>:outbox`).
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
