/**
 * `art-factory migrate --to redis://…`: moves a bot's SQLite store into Redis, so that it can restart
 * in distributed mode without losing its history. The bot is stopped first (nothing else may write
 * the SQLite file meanwhile); the migration itself runs no engine and calls no provider.
 *
 * What goes where:
 * - every job record through `RedisJobStore.save`, which also puts the unfinished ones in the index a
 *   distributed process resumes from (a batch with a recorded request id then polls it, never submits
 *   again);
 * - today's and yesterday's daily tallies as Redis tallies (older ones count for nothing any more);
 * - the review journal as the Redis one, so a review cut off by the stop is repaired at the next start;
 * - Slack's replay marks where distributed mode takes them (plain keys, `SET NX`), for what is left
 *   of their window;
 * - every other key (outboxes, the playground's transcript, settings) as it is, into the Redis Keyv
 *   namespace (the prefix), with what is left of its expiry.
 *
 * The SQLite table is read directly, a page at a time: Keyv itself cannot list its keys. Nothing the
 * target already holds is replaced (a job, a key, a higher tally): with `--force` a second run after a
 * partial one, or onto a deployment that already runs, copies only what is missing.
 */
import { access } from 'node:fs/promises';
import KeyvSqlite from '@keyv/sqlite';
import type { Redis } from 'ioredis';
import type { Keyv } from 'keyv';
import { isJobFinished } from '../core/progress.js';
import type { Job } from '../core/types.js';
import { openKeyv } from '../store/keyv.js';
import { LuaScript } from '../store/redis-scripts.js';
import { openRedis, RedisJobStore } from '../store/redis.js';

export interface MigrateOptions {
  /** the SQLite store to copy (`sqlite://PATH`, as STORE_URL) */
  storeUrl: string;
  /** the Redis to copy into (`redis://` or `rediss://`) */
  redisUrl: string;
  /** REDIS_PREFIX of the processes that will use it */
  prefix: string;
  /** copy even when the target already holds jobs under the prefix (never replacing what it holds) @default false */
  force?: boolean;
  now?: () => number;
}

export interface MigrateSummary {
  /** job records copied */
  jobs: number;
  /** of those, unfinished (resumed by the first distributed process that starts) */
  unfinished: number;
  /** jobs and keys the target held already (a tally at least as high), left as they were */
  alreadyThere: number;
  /** daily tallies of today and yesterday */
  tallies: number;
  /** jobs with a review that may need repair at the next start */
  openReviews: number;
  /** every other key: outboxes, replay marks, settings … */
  otherKeys: number;
  /** rows left behind: expired, older tallies, or not a record this bot writes */
  skipped: number;
}

/** A migration that must not run, in one line (the command exits 1). */
export class MigrateRefusal extends Error {
  override name = 'MigrateRefusal';
}

/** Rows read from SQLite at once: small enough that a store of large jobs stays small in memory. */
const PAGE = 100;
const JOB_ID = /^[\w-]{1,64}$/;
const DAY_MS = 86_400_000;
/** As the job stores keep them: long enough for a job that runs across midnight to give images back. */
const USAGE_TTL_MS = 2 * DAY_MS;

/** KEYS: tally. ARGV: count, ttl ms. Raises the tally to `count` (never lowers it); 1 if it did. */
const RAISE_TALLY = new LuaScript(`
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= current then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`);

/** Where a Redis URL points, without what it may carry besides (a password). */
export function redisTarget(url: string): string {
  try {
    return new URL(url).host || 'the given host';
  } catch {
    return 'the given URL';
  }
}

interface Row {
  key: string;
  value: unknown;
  /** epoch ms, when the key expires */
  expires: number | undefined;
}

/** A stored row as Keyv wrote it (`{"value": …, "expires": …}`), or undefined if it is not one. */
function readRow(key: string, raw: unknown): Row | undefined {
  if (typeof raw !== 'string') return undefined;
  try {
    const parsed = JSON.parse(raw) as unknown;
    if (typeof parsed !== 'object' || parsed === null || !('value' in parsed)) return undefined;
    const { value, expires } = parsed as { value: unknown; expires?: unknown };
    return { key, value, expires: typeof expires === 'number' ? expires : undefined };
  } catch {
    return undefined;
  }
}

/** Pages through the Keyv table's rows of one namespace, in key order. */
async function* sqliteRows(keyv: Keyv): AsyncGenerator<Row[] | number> {
  const store: unknown = keyv.store;
  if (!(store instanceof KeyvSqlite)) throw new Error('migrate: the source store is not SQLite');
  const table = store.opts.table ?? 'keyv';
  const head = `${keyv.namespace ?? ''}:`;
  let after = head;
  for (;;) {
    const rows = (await store.query(
      `SELECT key, value FROM ${table} WHERE key > ? AND substr(key, 1, ?) = ? ORDER BY key LIMIT ?`,
      after,
      head.length,
      head,
      PAGE,
    )) as { key: string; value: unknown }[];
    if (rows.length === 0) return;
    after = rows.at(-1)!.key;
    const page: Row[] = [];
    let unreadable = 0;
    for (const row of rows) {
      const read = readRow(row.key.slice(head.length), row.value);
      if (read) page.push(read);
      else unreadable += 1;
    }
    if (unreadable > 0) yield unreadable;
    yield page;
  }
}

/** Whether the target already holds jobs of a deployment under `prefix`. */
async function targetHasJobs(redis: Redis, prefix: string): Promise<boolean> {
  if ((await redis.scard(`${prefix}:jobs:active`)) > 0) return true;
  // Job records are `<namespace>::job:<id>` (@keyv/redis); the prefix is letters, digits, _ and -.
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}::job:*`, 'COUNT', 1000);
    if (keys.length > 0) return true;
    cursor = next;
  } while (cursor !== '0');
  return false;
}

/** Copies the SQLite store into Redis; resolves with what it copied. */
export async function migrateToRedis(options: MigrateOptions): Promise<MigrateSummary> {
  const { storeUrl, redisUrl, prefix, force = false } = options;
  const now = options.now ?? Date.now;
  if (!storeUrl.startsWith('sqlite://')) throw new MigrateRefusal('migrate copies a SQLite store: STORE_URL must be sqlite://PATH');
  const file = storeUrl.slice('sqlite://'.length);
  if (file === ':memory:') throw new MigrateRefusal('migrate copies a SQLite file: STORE_URL names an in-memory store');
  // Opening would create an empty store, and copying nothing would look like success.
  await access(file).catch(() => {
    throw new MigrateRefusal(`no SQLite store at ${file}: set STORE_URL to the bot's store (sqlite://PATH)`);
  });
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(prefix)) throw new MigrateRefusal(`Expected --prefix to be letters, digits, _ or - (at most 32), got "${prefix}"`);

  const target = redisTarget(redisUrl);
  const redis = openRedis(redisUrl);
  let source: Keyv | undefined;
  let keyv: Keyv | undefined;
  try {
    await redis.ping().catch(() => {
      throw new MigrateRefusal(`cannot connect to Redis at ${target}; is it running, and are the host, port and password right?`);
    });
    if (!force && (await targetHasJobs(redis, prefix))) {
      throw new MigrateRefusal(`Redis at ${target} already holds jobs under prefix "${prefix}"; pick another --prefix, or add --force to copy only what it lacks`);
    }
    keyv = await openKeyv(redisUrl, prefix);
    source = await openKeyv(storeUrl);
    return await copy(source, keyv, redis, prefix, now());
  } finally {
    await source?.disconnect().catch(() => undefined);
    await keyv?.disconnect().catch(() => undefined);
    await redis.quit().catch(() => redis.disconnect());
  }
}

async function copy(source: Keyv, keyv: Keyv, redis: Redis, prefix: string, now: number): Promise<MigrateSummary> {
  const jobs = new RedisJobStore(redis, keyv, prefix);
  const summary: MigrateSummary = { jobs: 0, unfinished: 0, alreadyThere: 0, tallies: 0, openReviews: 0, otherKeys: 0, skipped: 0 };
  const days = new Set([new Date(now).toISOString().slice(0, 10), new Date(now - DAY_MS).toISOString().slice(0, 10)]);
  const left = (row: Row): number | undefined => (row.expires === undefined ? undefined : row.expires - now);

  const copyRow = async (row: Row): Promise<keyof MigrateSummary | undefined> => {
    const ttl = left(row);
    if (ttl !== undefined && ttl <= 0) return 'skipped';
    const { key, value } = row;
    if (key.startsWith('job:')) {
      const job = value as Partial<Job> | null;
      const id = key.slice('job:'.length);
      if (typeof job !== 'object' || job === null || job.id !== id || !JOB_ID.test(id) || typeof job.state !== 'string') return 'skipped';
      if (await jobs.get(id)) return 'alreadyThere';
      await jobs.save(job as Job);
      if (!isJobFinished(job as Job)) summary.unfinished += 1;
      return 'jobs';
    }
    // Rebuilt by the job saves, from each job's own state.
    if (key === 'jobs:active') return undefined;
    if (key === 'reviews:open') {
      const ids = Array.isArray(value) ? value.filter((id): id is string => typeof id === 'string' && JOB_ID.test(id)) : [];
      for (const id of ids) await jobs.markReview(id, true);
      summary.openReviews += ids.length;
      return undefined;
    }
    if (key.startsWith('usage:')) {
      // usage:<tenant>:<day>; a tenant may hold colons itself (`dm:*`), the day never does.
      const day = key.slice(key.lastIndexOf(':') + 1);
      if (!days.has(day) || !Number.isSafeInteger(value) || (value as number) <= 0) return 'skipped';
      const raised = await RAISE_TALLY.run(redis, [`${prefix}:${key}`], [value as number, Math.ceil(ttl ?? USAGE_TTL_MS)]);
      return Number(raised) === 1 ? 'tallies' : 'alreadyThere';
    }
    if (key.startsWith('slack:seen:')) {
      // Distributed mode takes these with SET NX under the prefix, not through Keyv (src/chat/slack/replays.ts).
      if (ttl === undefined) return 'skipped';
      const taken = await redis.set(`${prefix}:${key}`, JSON.stringify(value), 'PX', Math.ceil(ttl), 'NX');
      return taken === 'OK' ? 'otherKeys' : 'alreadyThere';
    }
    if (await keyv.has(key)) return 'alreadyThere';
    if (ttl === undefined) await keyv.set(key, value);
    else await keyv.set(key, value, Math.ceil(ttl));
    return 'otherKeys';
  };

  for await (const page of sqliteRows(source)) {
    if (typeof page === 'number') {
      summary.skipped += page;
      continue;
    }
    const counted = await Promise.all(page.map(copyRow));
    for (const field of counted) if (field && field !== 'unfinished') summary[field] += 1;
  }
  await jobs.close();
  return summary;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The command's one-line report (names the host and prefix, never the URL). */
export function describeMigration(summary: MigrateSummary, redisUrl: string, prefix: string): string {
  const parts = [
    `${plural(summary.jobs, 'job')} (${summary.unfinished} unfinished)`,
    plural(summary.tallies, 'daily tally', 'daily tallies'),
    plural(summary.openReviews, 'open review'),
    plural(summary.otherKeys, 'other key'),
  ];
  const notes = [
    ...(summary.alreadyThere > 0 ? [`${summary.alreadyThere} already there, left as they were`] : []),
    ...(summary.skipped > 0 ? [`${summary.skipped} expired or unreadable, left behind`] : []),
  ];
  return (
    `Copied ${parts.join(', ')} to Redis at ${redisTarget(redisUrl)} under prefix "${prefix}"` +
    `${notes.length > 0 ? ` (${notes.join('; ')})` : ''}. ` +
    `Start the bot with REDIS_URL, REDIS_PREFIX=${prefix} and the same OUTPUT_DIR.`
  );
}
