/**
 * `art-factory migrate --to redis://…`: a bot on SQLite stops with a job half done (its first call
 * paid for and recorded), its store is copied into Redis, and two distributed processes finish the
 * job without paying for that call again.
 */
import { execFile } from 'node:child_process';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import { migrateToRedis, MigrateRefusal } from '../../src/distributed/migrate.js';
import { openKeyv } from '../../src/store/keyv.js';
import { openRedis, RedisJobStore } from '../../src/store/redis.js';
import { until } from '../bot-process.js';
import { startFakeFal } from '../fakes/fal.js';
import { buildApp, filesIn, onCleanup, rejectionOf, requester, tempDir } from '../helpers.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';
import { freePort } from '../redis/server.js';

const BIN = path.resolve('bin/art-factory.js');
const DAY_MS = 86_400_000;
const FAL = { provider: 'fal' as const, model: 'fal-ai/flux/schnell', aspectRatio: '1:1' as const };
const LOCAL = { provider: 'local' as const, model: 'local', aspectRatio: '1:1' as const };

const isoDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** The command as a user runs it: the bin, in a child process, with only the environment given. */
function cli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Our own connection and Keyv on the test Redis, closed after the test. */
async function target(prefix: string) {
  const redis = openRedis(redisUrl);
  const keyv = await openKeyv(redisUrl, prefix);
  onCleanup(async () => {
    await keyv.disconnect();
    await redis.quit();
  });
  return { redis, keyv, jobs: new RedisJobStore(redis, keyv, prefix) };
}

/** A port nothing listens on. */
const closedPort = freePort;

describeRedis('art-factory migrate', () => {
  it('moves a SQLite store into Redis; two distributed processes finish its unfinished job without a second submit', async () => {
    // Long enough that the first call is still running at fal when the bot stops.
    const fal = await startFakeFal({ key: 'k', latencyMs: 500 });
    onCleanup(() => fal.close());
    const dir = await tempDir('af-migrate-');
    const falEnv = { FAL_KEY: 'k', FAL_BASE_URL: fal.url, FAL_CONCURRENCY: '1' };

    // The bot on SQLite: one job finished, one stopped after its first call was submitted.
    const before = await buildApp({ dir, env: falEnv });
    const finished = await before.engine.submit({ ...LOCAL, prompt: 'a finished fox', count: 2 }, requester());
    expect((await before.engine.waitFor(finished.id)).state).toBe('completed');
    await before.keyv.set('discord:outbox', [finished.id]);
    const open = await before.engine.submit({ ...FAL, prompt: 'an unfinished fox', count: 8 }, requester());
    await until(async () => (await before.jobs.get(open.id))?.batches[0]?.requestId, 'the first call recorded');
    const day = isoDay(Date.now());
    const used = await before.jobs.imagesUsed('*', day);
    expect(used).toBe(10);
    await before.close();
    expect(fal.submits()).toHaveLength(1);
    const recorded = [...fal.requests.keys()][0]!;

    const prefix = testPrefix();
    const env = { HOME: dir, STORE_URL: `sqlite://${dir}/store.sqlite`, OUTPUT_DIR: `${dir}/output` };
    const run = await cli(['migrate', '--to', redisUrl, '--prefix', prefix], env);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    // other keys: the outbox, and the image cache's entries for the finished job's two images
    expect(run.stdout).toMatch(
      new RegExp(`^Copied 2 jobs \\(1 unfinished\\), 2 daily tallies, 0 open reviews, 3 other keys to Redis at 127\\.0\\.0\\.1:\\d+ under prefix "${prefix}"\\. .*\\n$`),
    );
    expect(run.stdout).not.toContain('redis://');
    // A second run would copy over a deployment that has jobs now: refused in one line.
    const again = await cli(['migrate', '--to', redisUrl, '--prefix', prefix], env);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^art-factory: Redis at 127\.0\.0\.1:\d+ already holds jobs under prefix "t\w+"; .*--force.*\n$/);

    // In Redis as the bot left it: the first call paid for and running at fal, the second not sent.
    const copied = await (await target(prefix)).jobs.get(open.id);
    expect(copied?.batches.map((batch) => [batch.state, batch.requestId])).toEqual([
      ['submitted', recorded],
      ['queued', undefined],
    ]);

    // Two processes on Redis over the same output folder, each resuming at its start.
    const distributed = { ...falEnv, REDIS_URL: redisUrl, REDIS_PREFIX: prefix };
    const a = await buildApp({ dir, env: distributed, queueLockMs: 5_000, jobLockMs: 5_000 });
    const b = await buildApp({ dir, env: distributed, queueLockMs: 5_000, jobLockMs: 5_000 });
    await Promise.all([a.engine.resume(), b.engine.resume()]);
    const done = await b.engine.waitFor(open.id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(8);
    // The recorded call was polled; only the second batch was submitted.
    expect(done.batches[0]!.requestId).toBe(recorded);
    expect(fal.submits()).toHaveLength(2);
    expect(done.batches.map((batch) => batch.attempts)).toEqual([1, 1]);

    const old = await a.engine.get(finished.id);
    expect(old?.state).toBe('completed');
    expect(old?.images).toHaveLength(2);
    for (const image of old!.images) await access(path.join(a.files.jobDir(finished.id), image.file));
    expect(await filesIn(a, finished.id, 'pending-review')).toHaveLength(2);
    expect(await a.jobs.imagesUsed('*', day)).toBe(used);
    expect(await a.keyv.get('discord:outbox')).toEqual([finished.id]);
  }, 60_000);

  it('copies tallies of today and yesterday, replay marks and other keys with the rest of their expiry; leaves the expired and unreadable behind', async () => {
    const dir = await tempDir('af-migrate-');
    const storeUrl = `sqlite://${dir}/store.sqlite`;
    const source = await openKeyv(storeUrl);
    await source.set('job:running1', { id: 'running1', state: 'running' });
    await source.set('job:done1', { id: 'done1', state: 'completed' });
    await source.set('job:other', { id: 'not-this-one', state: 'completed' });
    await source.set('jobs:active', ['running1']);
    await source.set('reviews:open', ['done1']);
    const now = Date.now() + 1_000;
    await source.set(`usage:guild-1:${isoDay(now)}`, 5, 2 * DAY_MS);
    await source.set(`usage:dm:*:${isoDay(now - DAY_MS)}`, 3, DAY_MS);
    await source.set(`usage:guild-1:${isoDay(now - 3 * DAY_MS)}`, 7, DAY_MS);
    await source.set('slack:seen:abc', { jobId: 'done1' }, 60_000);
    await source.set('settings:guild-1', { provider: 'fal' });
    await source.set('slack:outbox', ['done1'], 600_000);
    // Expired by `now`, and a row no Keyv wrote.
    await source.set('gone', 1, 1);
    await (source.store as { query(sql: string, ...args: unknown[]): Promise<unknown> }).query(
      "INSERT INTO keyv (key, value) VALUES ('art-factory:broken', 'not json')",
    );
    await source.disconnect();

    const prefix = testPrefix();
    const summary = await migrateToRedis({ storeUrl, redisUrl, prefix, now: () => now });
    expect(summary).toEqual({ jobs: 2, unfinished: 1, alreadyThere: 0, tallies: 2, openReviews: 1, otherKeys: 3, skipped: 4 });

    const { redis, keyv, jobs } = await target(prefix);
    expect(await jobs.activeIds()).toEqual(['running1']);
    expect((await jobs.get('done1'))?.state).toBe('completed');
    expect(await jobs.get('other')).toBeUndefined();
    expect(await jobs.openReviews()).toEqual(['done1']);
    expect(await jobs.imagesUsed('guild-1', isoDay(now))).toBe(5);
    expect(await jobs.imagesUsed('dm:*', isoDay(now - DAY_MS))).toBe(3);
    expect(await jobs.imagesUsed('guild-1', isoDay(now - 3 * DAY_MS))).toBe(0);
    const tallyTtl = await redis.pttl(`${prefix}:usage:guild-1:${isoDay(now)}`);
    expect(tallyTtl).toBeGreaterThan(DAY_MS);
    expect(tallyTtl).toBeLessThanOrEqual(2 * DAY_MS);
    // Where distributed mode's Slack adapter takes its marks (SET NX under the prefix).
    expect(JSON.parse((await redis.get(`${prefix}:slack:seen:abc`))!)).toEqual({ jobId: 'done1' });
    const markTtl = await redis.pttl(`${prefix}:slack:seen:abc`);
    expect(markTtl).toBeGreaterThan(0);
    expect(markTtl).toBeLessThanOrEqual(60_000);
    expect(await keyv.get('settings:guild-1')).toEqual({ provider: 'fal' });
    expect(await keyv.get('slack:outbox')).toEqual(['done1']);
    expect(await redis.pttl(`${prefix}::slack:outbox`)).toBeGreaterThan(0);
    expect(await redis.pttl(`${prefix}::settings:guild-1`)).toBe(-1);
    expect(await keyv.get('gone')).toBeUndefined();
    expect(await keyv.get('broken')).toBeUndefined();
  });

  it('refuses a target that has jobs under the prefix; with force it copies only what the target lacks', async () => {
    const dir = await tempDir('af-migrate-');
    const storeUrl = `sqlite://${dir}/store.sqlite`;
    const source = await openKeyv(storeUrl);
    await source.set('job:first', { id: 'first', state: 'running' });
    await source.set('settings:guild-1', { provider: 'local' });
    await source.set(`usage:guild-1:${isoDay(Date.now())}`, 4, DAY_MS);
    await source.disconnect();
    const prefix = testPrefix();
    expect(await migrateToRedis({ storeUrl, redisUrl, prefix })).toMatchObject({ jobs: 1, tallies: 1, otherKeys: 1 });

    // The deployment runs on: the job finished there, a setting changed, more images made today.
    const { keyv, jobs } = await target(prefix);
    await jobs.save({ id: 'first', state: 'completed' } as never);
    await keyv.set('settings:guild-1', { provider: 'fal' });
    await jobs.reserveImages('guild-1', isoDay(Date.now()), 6, 100);

    const refused = await rejectionOf(migrateToRedis({ storeUrl, redisUrl, prefix }));
    expect(refused).toBeInstanceOf(MigrateRefusal);
    expect((refused as Error).message).toMatch(/already holds jobs under prefix/);

    const more = await openKeyv(storeUrl);
    await more.set('job:second', { id: 'second', state: 'completed' });
    await more.disconnect();
    const forced = await migrateToRedis({ storeUrl, redisUrl, prefix, force: true });
    expect(forced).toMatchObject({ jobs: 1, unfinished: 0, tallies: 0, otherKeys: 0, alreadyThere: 3 });
    expect((await jobs.get('first'))?.state).toBe('completed');
    expect((await jobs.get('second'))?.state).toBe('completed');
    expect(await jobs.activeIds()).toEqual([]);
    expect(await keyv.get('settings:guild-1')).toEqual({ provider: 'fal' });
    expect(await jobs.imagesUsed('guild-1', isoDay(Date.now()))).toBe(10);
  });

  it('refuses a store that does not exist without creating one', async () => {
    const dir = await tempDir('af-migrate-');
    const refused = await rejectionOf(migrateToRedis({ storeUrl: `sqlite://${dir}/missing.sqlite`, redisUrl, prefix: testPrefix() }));
    expect(refused).toBeInstanceOf(MigrateRefusal);
    expect((refused as Error).message).toBe(`no SQLite store at ${dir}/missing.sqlite: set STORE_URL to the bot's store (sqlite://PATH)`);
    await expect(stat(`${dir}/missing.sqlite`)).rejects.toThrow();
  });

  it('answers bad input with exit 2, an unreachable Redis with exit 1, and never prints the password', async () => {
    const dir = await tempDir('af-migrate-');
    const store = await openKeyv(`sqlite://${dir}/store.sqlite`);
    await store.disconnect();
    const env = { HOME: dir, STORE_URL: `sqlite://${dir}/store.sqlite`, OUTPUT_DIR: `${dir}/output` };

    const help = await cli(['migrate', '--help'], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Stop the bot first');

    const missing = await cli(['migrate'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('art-factory: migrate needs --to redis://HOST[:PORT] (see `art-factory migrate --help`)\n');

    const wrong = await cli(['migrate', '--to', 'http://user:hunter2@example.com'], env);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toBe('art-factory: Expected --to to be a redis://HOST[:PORT] URL, got one starting "http://"\n');

    const prefix = await cli(['migrate', '--to', redisUrl, '--prefix', 'a:b'], env);
    expect(prefix.code).toBe(2);
    expect(prefix.stderr).toBe('art-factory: Expected --prefix to be letters, digits, _ or - (at most 32), got "a:b"\n');

    const port = await closedPort();
    const down = await cli(['migrate', '--to', `redis://:hunter2@127.0.0.1:${port}`], env);
    expect(down.code).toBe(1);
    expect(down.stderr).toBe(
      `art-factory: cannot connect to Redis at 127.0.0.1:${port}; is it running, and are the host, port and password right?\n`,
    );
    expect(down.stdout + down.stderr).not.toContain('hunter2');
  });
});
