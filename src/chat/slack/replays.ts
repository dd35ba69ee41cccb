/**
 * Slash-command deliveries already taken, so that one command starts one job.
 *
 * Bolt checks a request's signature and refuses a timestamp older than 5 minutes, but it has no
 * memory: the same signed bytes posted again inside that window pass every check (and a timestamp
 * ahead of our clock is never refused at all). A delivery is therefore marked as seen, keyed by its
 * `trigger_id` (Slack makes one per invocation, and it is inside the signed bytes), or, when a body
 * comes without one, by a hash of who typed what where and the signed request timestamp.
 *
 * Marks live in the store with a TTL that outlasts the signature window, so a restarted process (or
 * another one behind the same load balancer) still refuses the replay; a bounded map in front of it
 * answers a burst without a store read and closes the gap between two deliveries arriving at once.
 * Within one process that is exact (the map is written before the first await). Across processes
 * (distributed mode, where Slack may send a retry to another process) the mark is taken in Redis with
 * one `SET NX PX`: of two copies landing on two processes at once, exactly one gets it. With only the
 * Keyv store (one process) the store's check-then-set is not atomic, which one process never needs.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keyv } from 'keyv';

/** Bolt's window (5 minutes back from now) plus a minute for the two clocks to disagree. */
const WINDOW_MS = 6 * 60_000;
/** A timestamp far ahead of our clock would ask for a mark kept for ever; a day is plenty. */
const MAX_TTL_MS = 86_400_000;

export interface CommandDelivery {
  team_id: string;
  user_id: string;
  channel_id: string;
  command: string;
  text: string;
  trigger_id?: string;
  /** X-Slack-Request-Timestamp (seconds), when the receiver exposed it */
  timestamp?: number;
}

/** What a duplicate is told about the first delivery. */
export interface SeenMark {
  /** the job the first delivery started, once it has one */
  jobId?: string;
}

interface Entry {
  mark: SeenMark;
  expiresAt: number;
}

export interface SeenCommandsOptions {
  /** marks kept in memory at most (the store keeps them all) @default 10000 */
  maxEntries?: number;
  now?: () => number;
  /** distributed mode: marks are taken atomically in this Redis, under `prefix` (instead of the Keyv store) */
  shared?: { redis: Redis; prefix: string } | undefined;
}

/** The store key of a delivery, or undefined when nothing identifies it (no trigger_id, no timestamp). */
export function deliveryKey(delivery: CommandDelivery): string | undefined {
  const parts = delivery.trigger_id
    ? ['trigger', delivery.team_id, delivery.trigger_id]
    : delivery.timestamp !== undefined
      ? ['body', delivery.team_id, delivery.user_id, delivery.channel_id, delivery.command, delivery.text, String(delivery.timestamp)]
      : undefined;
  if (!parts) return undefined;
  // JSON keeps the fields apart (no "a|b" + "c" = "a" + "b|c"); the hash keeps the key short and the
  // prompt out of the store's key column.
  return `slack:seen:${createHash('sha256').update(JSON.stringify(parts)).digest('hex')}`;
}

export class SeenCommands {
  /** insertion order is expiry order, give or take a skewed timestamp: the sweep stops at the first live one */
  private readonly recent = new Map<string, Entry>();
  private readonly maxEntries: number;
  private readonly now: () => number;
  private readonly store: MarkStore;

  constructor(keyv: Keyv, options: SeenCommandsOptions = {}) {
    this.maxEntries = options.maxEntries ?? 10_000;
    this.now = options.now ?? Date.now;
    this.store = options.shared ? redisMarks(options.shared.redis, options.shared.prefix) : keyvMarks(keyv);
  }

  /**
   * Marks this delivery as seen. Resolves to undefined the first time, and to the earlier mark for a
   * duplicate. A delivery nothing identifies is always new.
   */
  async claim(delivery: CommandDelivery): Promise<SeenMark | undefined> {
    const key = deliveryKey(delivery);
    if (!key) return undefined;
    const now = this.now();
    const swept = this.sweep(now);
    const known = this.recent.get(key);
    if (known) return known.mark;
    const ttl = this.ttlFor(delivery, now);
    const entry: Entry = { mark: {}, expiresAt: now + ttl };
    this.remember(key, entry);
    await swept;
    const earlier = await this.store.take(key, ttl);
    if (earlier) entry.mark = earlier;
    return earlier;
  }

  /** The first delivery started this job: a duplicate can name it. */
  async started(delivery: CommandDelivery, jobId: string): Promise<void> {
    const key = deliveryKey(delivery);
    const entry = key ? this.recent.get(key) : undefined;
    if (!key || !entry) return;
    entry.mark = { jobId };
    const ttl = entry.expiresAt - this.now();
    if (ttl > 0) await this.store.update(key, entry.mark, ttl);
  }

  /** Until Bolt would refuse the same bytes as stale, measured from the request's own timestamp. */
  private ttlFor(delivery: CommandDelivery, now: number): number {
    const ahead = delivery.timestamp !== undefined ? Math.max(0, delivery.timestamp * 1000 - now) : 0;
    return Math.min(MAX_TTL_MS, WINDOW_MS + ahead);
  }

  private remember(key: string, entry: Entry): void {
    // Over the cap the oldest mark leaves memory only; the store still holds it until its TTL.
    while (this.recent.size >= this.maxEntries) {
      const oldest = this.recent.keys().next().value;
      if (oldest === undefined) break;
      this.recent.delete(oldest);
    }
    this.recent.set(key, entry);
  }

  /** marks held in memory (at most maxEntries) */
  get size(): number {
    return this.recent.size;
  }

  /**
   * Expired marks leave memory at once and the store soon after: SQLite keeps an expired row until
   * someone reads it, and nobody reads a mark again once its window is over.
   */
  private sweep(now: number): Promise<unknown> {
    const expired: string[] = [];
    for (const [key, entry] of this.recent) {
      if (entry.expiresAt > now) break;
      this.recent.delete(key);
      expired.push(key);
    }
    return expired.length === 0 ? Promise.resolve() : this.store.forget(expired);
  }
}

/** Where marks are kept beyond this process's memory. None of these throws: a store in trouble lets a command through. */
interface MarkStore {
  /** Takes the mark: undefined when it was free (now taken for `ttlMs`), else the earlier mark. */
  take(key: string, ttlMs: number): Promise<SeenMark | undefined>;
  /** Names the job in a mark taken here. */
  update(key: string, mark: SeenMark, ttlMs: number): Promise<void>;
  /** Drops marks whose window is over. */
  forget(keys: string[]): Promise<unknown>;
}

function markOf(stored: unknown): SeenMark {
  return stored && typeof stored === 'object' && typeof (stored as SeenMark).jobId === 'string' ? { jobId: (stored as SeenMark).jobId! } : {};
}

/** One process: the Keyv store, read then written (the map in front makes that exact here). */
function keyvMarks(keyv: Keyv): MarkStore {
  return {
    async take(key, ttlMs) {
      const stored = await keyv.get<SeenMark>(key).catch(() => undefined);
      if (stored !== undefined && stored !== null) return markOf(stored);
      await keyv.set(key, {}, ttlMs).catch(() => undefined);
      return undefined;
    },
    async update(key, mark, ttlMs) {
      await keyv.set(key, mark, ttlMs).catch(() => undefined);
    },
    forget: (keys) => Promise.all(keys.map((key) => keyv.delete(key).catch(() => undefined))),
  };
}

/** Several processes: one `SET NX PX` takes a mark, so two copies on two processes cannot both pass. */
function redisMarks(redis: Redis, prefix: string): MarkStore {
  const at = (key: string) => `${prefix}:${key}`;
  return {
    async take(key, ttlMs) {
      const taken = await redis.set(at(key), '{}', 'PX', Math.ceil(ttlMs), 'NX').catch(() => 'OK' as const);
      if (taken === 'OK') return undefined;
      const stored = await redis.get(at(key)).catch(() => null);
      try {
        return markOf(stored === null ? {} : JSON.parse(stored));
      } catch {
        return {};
      }
    },
    async update(key, mark, ttlMs) {
      // XX: a mark that expired meanwhile is not brought back.
      await redis.set(at(key), JSON.stringify(mark), 'PX', Math.ceil(ttlMs), 'XX').catch(() => undefined);
    },
    // Redis expires them itself.
    forget: async () => undefined,
  };
}
