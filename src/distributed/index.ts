/**
 * Distributed mode's half of the composition root: with REDIS_URL, the store, the job locks, the
 * admission book and the batch queues all live in Redis, so any number of processes share one set of
 * jobs, one fair order and one provider limit. `createApp` (src/app.ts) calls this instead of opening
 * SQLite; nothing else needs to know which mode it runs in.
 */
import type { Redis } from 'ioredis';
import type { Keyv } from 'keyv';
import type { Config } from '../config.js';
import type { LaneOptions } from '../core/dispatch.js';
import type { Logger } from '../core/ports.js';
import type { ProviderName } from '../core/types.js';
import { openKeyv } from '../store/keyv.js';
import { openRedis, RedisAdmissionBook, RedisJobLocks, RedisJobStore } from '../store/redis.js';
import { RedisDispatcher, settledWithin } from './dispatch.js';
import { RedisCallNotices } from './notices.js';
import { RedisReviewFeed } from './review-feed.js';
import { checkSharedFolder } from './shared-folder.js';

/** How long each closing step waits before the connection is cut. */
const CLOSE_GRACE_MS = 2_000;

export interface DistributedOptions {
  lanes: Partial<Record<ProviderName, LaneOptions>>;
  logger: Logger;
  /** how long a dead process's tickets stay locked before another takes them over @default 30 s */
  queueLockMs?: number;
  /** how long a dead process's job lock lasts @default 15 s */
  jobLockMs?: number;
  /** a tenant's calls in flight at once, across every process (its plan) @default no cap */
  tenantConcurrency?: (tenant: string) => Promise<number>;
}

export interface Distributed {
  redis: Redis;
  keyv: Keyv;
  jobs: RedisJobStore;
  locks: RedisJobLocks;
  book: RedisAdmissionBook;
  dispatcher: RedisDispatcher;
  /** ended calls told by webhook, seen by every process */
  notices: RedisCallNotices;
  /** reviews made in other processes, for live review pages */
  reviews: RedisReviewFeed;
  prefix: string;
  /** after the engine has stopped: closes the store and every connection */
  close(): Promise<void>;
}

export async function openDistributed(config: Config & { redisUrl: string }, options: DistributedOptions): Promise<Distributed> {
  const prefix = config.redisPrefix;
  const redis = openRedis(config.redisUrl, options.logger);
  let keyv: Keyv | undefined;
  const notices = new RedisCallNotices(redis, prefix, options.logger);
  const reviews = new RedisReviewFeed(redis, prefix, options.logger);
  try {
    await redis.ping();
    await notices.start();
    await reviews.start();
    // The namespace keeps two bots on one Redis apart, as the prefix does for the other keys.
    keyv = await openKeyv(config.redisUrl, prefix);
    // With a bucket, images are shared through it: OUTPUT_DIR is each process's own cache.
    if (!config.s3) await checkSharedFolder(redis, prefix, config.outputDir);
  } catch (error) {
    await keyv?.disconnect().catch(() => undefined);
    await settledWithin(notices.close(), CLOSE_GRACE_MS);
    await settledWithin(reviews.close(), CLOSE_GRACE_MS);
    redis.disconnect();
    throw error;
  }
  const jobs = new RedisJobStore(redis, keyv, prefix);
  const dispatcher = new RedisDispatcher({
    connection: config.redisUrl,
    prefix,
    lanes: options.lanes,
    ...(config.tenantRateLimit ? { tenantRate: config.tenantRateLimit } : {}),
    work: config.role !== 'edge',
    ...(options.tenantConcurrency ? { tenantConcurrency: options.tenantConcurrency } : {}),
    log: options.logger,
    ...(options.queueLockMs !== undefined ? { lockDurationMs: options.queueLockMs } : {}),
  });
  const opened = keyv;
  return {
    redis,
    keyv: opened,
    jobs,
    locks: new RedisJobLocks(redis, prefix, options.jobLockMs !== undefined ? { ttlMs: options.jobLockMs } : {}),
    book: new RedisAdmissionBook(redis, prefix),
    dispatcher,
    notices,
    reviews,
    prefix,
    async close() {
      // Each step gets a moment: with Redis gone, a save or a quit would wait for a reconnect.
      await settledWithin(jobs.close(), CLOSE_GRACE_MS);
      await settledWithin(opened.disconnect(), CLOSE_GRACE_MS);
      await settledWithin(notices.close(), CLOSE_GRACE_MS);
      await settledWithin(reviews.close(), CLOSE_GRACE_MS);
      await settledWithin(redis.quit(), CLOSE_GRACE_MS);
      redis.disconnect();
    },
  };
}
