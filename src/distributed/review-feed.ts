/**
 * The review feed over Redis pub/sub: after a review, a process publishes the job's id; every other
 * process's open review pages read the job again and show it. Best effort, like every pub/sub message
 * (one sent while a subscriber reconnects is lost): the page then catches up at its next state read
 * or review. Each process skips its own messages, which its engine has told it already.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { silentLogger, type Logger, type ReviewFeed } from '../core/ports.js';

const JOB_ID = /^[0-9]{8}-[0-9a-f]{8}$/;

export class RedisReviewFeed implements ReviewFeed {
  private subscriber: Redis | undefined;
  private readonly listeners = new Set<(jobId: string) => void>();
  /** this process, in every message it publishes */
  private readonly origin = randomBytes(8).toString('hex');
  private readonly channel: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly log: Logger = silentLogger,
  ) {
    this.channel = `${prefix}:reviewed`;
  }

  /** Subscribes on a connection of its own (a subscribed connection takes no other command). */
  async start(): Promise<void> {
    const subscriber = this.redis.duplicate();
    this.subscriber = subscriber;
    subscriber.on('error', (error: Error) => this.log.warn({ err: error.message }, 'review feed: Redis subscriber error'));
    subscriber.on('message', (_channel: string, text: string) => {
      const [origin, jobId, ...rest] = text.split(' ');
      if (origin === this.origin || !jobId || !JOB_ID.test(jobId) || rest.length > 0) return;
      for (const listener of [...this.listeners]) listener(jobId);
    });
    await subscriber.subscribe(this.channel);
  }

  async publish(jobId: string): Promise<void> {
    await this.redis.publish(this.channel, `${this.origin} ${jobId}`);
  }

  subscribe(listener: (jobId: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
    await this.subscriber?.quit().catch(() => this.subscriber?.disconnect());
  }
}
