import type { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { planBatches } from '../../src/core/planner.js';
import type { AdmissionCaps, AdmissionEntry } from '../../src/core/ports.js';
import type { Job } from '../../src/core/types.js';
import { openKeyv } from '../../src/store/keyv.js';
import { openRedis, RedisAdmissionBook, RedisJobLocks, RedisJobStore } from '../../src/store/redis.js';
import { onCleanup, rejectionOf } from '../helpers.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';

/** One connection, as one process would hold it; disconnected after the test. */
function connect(): Redis {
  const redis = openRedis(redisUrl);
  onCleanup(() => redis.disconnect());
  return redis;
}

async function keyvFor(namespace: string) {
  const keyv = await openKeyv(redisUrl, namespace);
  onCleanup(() => keyv.disconnect());
  return keyv;
}

/** A store as one process opens it: its own connection and Keyv, the deployment's prefix. */
async function storeFor(prefix: string): Promise<RedisJobStore> {
  return new RedisJobStore(connect(), await keyvFor(prefix), prefix);
}

function job(id: string, state: Job['state'] = 'queued'): Job {
  return {
    id,
    createdAt: '2026-11-22T00:00:00.000Z',
    updatedAt: '2026-11-22T00:00:00.000Z',
    requester: { tenant: 't', userId: 'u', platform: 'cli' },
    request: { prompt: 'p', count: 4, provider: 'local', model: 'local', aspectRatio: '1:1', seed: 1 },
    state,
    batches: planBatches(4, 4, 1),
    images: [],
    estimatedCostUsd: 0,
  };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise and the function that resolves it. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

describeRedis('RedisJobStore', () => {
  it('stores a job for every process and keeps the unfinished-jobs index in step with its state', async () => {
    const prefix = testPrefix();
    const [one, two] = [await storeFor(prefix), await storeFor(prefix)];
    const record = job('20261122-0000abcd');
    await one.save(record);
    expect(await two.get(record.id)).toEqual(record);
    expect(await two.activeIds()).toEqual([record.id]);

    await two.save({ ...record, state: 'completed' });
    expect(await one.get(record.id)).toMatchObject({ state: 'completed' });
    expect(await one.activeIds()).toEqual([]);
  });

  it('writes job records as plain JSON under the Keyv namespace, and reads no id outside [\\w-]{1,64}', async () => {
    const prefix = testPrefix();
    const store = await storeFor(prefix);
    await store.save(job('20261122-0000beef'));
    const raw = await connect().get(`${prefix}::job:20261122-0000beef`);
    expect(JSON.parse(raw!)).toMatchObject({ value: { id: '20261122-0000beef', state: 'queued' } });
    expect(await store.get('../20261122-0000beef')).toBeUndefined();
    expect(await store.get('x'.repeat(65))).toBeUndefined();
  });

  it('never lets 20 reservations from two processes at once pass the daily cap', async () => {
    const prefix = testPrefix();
    const [one, two] = [await storeFor(prefix), await storeFor(prefix)];
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? one : two).reserveImages('guild-1', '2026-11-22', 10, 100)),
    );
    expect(results.filter((r) => r !== undefined).sort((a, b) => a - b)).toEqual([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    expect(await two.imagesUsed('guild-1', '2026-11-22')).toBe(100);
    expect(await one.imagesUsed('guild-2', '2026-11-22')).toBe(0);

    const ttl = await connect().pttl(`${prefix}:usage:guild-1:2026-11-22`);
    expect(ttl).toBeGreaterThan(86_400_000);
    expect(ttl).toBeLessThanOrEqual(2 * 86_400_000);
  });

  it('gives images back, never below zero, and keeps the tally expiring', async () => {
    const prefix = testPrefix();
    const store = await storeFor(prefix);
    await store.reserveImages('guild-1', '2026-11-22', 40, 100);
    await store.releaseImages('guild-1', '2026-11-22', 30);
    expect(await store.imagesUsed('guild-1', '2026-11-22')).toBe(10);
    await store.releaseImages('guild-1', '2026-11-22', 500);
    expect(await store.imagesUsed('guild-1', '2026-11-22')).toBe(0);
    expect(await connect().pttl(`${prefix}:usage:guild-1:2026-11-22`)).toBeGreaterThan(0);
    // A tally that already expired is not brought back by a release.
    await store.releaseImages('guild-9', '2026-11-22', 5);
    expect(await connect().exists(`${prefix}:usage:guild-9:2026-11-22`)).toBe(0);
    expect(await store.reserveImages('guild-1', '2026-11-22', 100, 100)).toBe(100);
  });

  it('keeps the review journal for every process', async () => {
    const prefix = testPrefix();
    const [one, two] = [await storeFor(prefix), await storeFor(prefix)];
    await one.markReview('job-a', true);
    await two.markReview('job-b', true);
    await one.markReview('job-a', true);
    expect((await two.openReviews()).sort()).toEqual(['job-a', 'job-b']);
    await two.markReview('job-a', false);
    expect(await one.openReviews()).toEqual(['job-b']);
  });
});

describeRedis('RedisJobLocks', () => {
  it('loses no update when two processes each increment a counter 50 times with a read-wait-write', async () => {
    const prefix = testPrefix();
    const [a, b] = [connect(), connect()];
    const counter = `${prefix}:counter`;
    const increment = (redis: Redis) => async () => {
      const value = Number((await redis.get(counter)) ?? 0);
      await pause(1);
      await redis.set(counter, value + 1);
    };
    const [first, second] = [new RedisJobLocks(a, prefix), new RedisJobLocks(b, prefix)];
    await Promise.all(
      Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? first.run('job-1', increment(a)) : second.run('job-1', increment(b)))),
    );
    expect(await a.get(counter)).toBe('100');
    expect(await a.exists(`${prefix}:lock:job:job-1`)).toBe(0);
  });

  it('gives the lock of a holder that died to the next process after its ttl', async () => {
    const prefix = testPrefix();
    const dying = connect();
    const other = connect();
    const order: string[] = [];
    const started = gate();
    const finish = gate();
    const first = new RedisJobLocks(dying, prefix, { ttlMs: 300 }).run('job-1', async () => {
      order.push('first starts');
      // The process is gone as far as Redis can tell: no renewal, no release.
      dying.disconnect();
      started.open();
      await finish.promise;
      order.push('first ends');
      return 'first';
    });
    await started.promise;
    expect(await other.exists(`${prefix}:lock:job:job-1`)).toBe(1);

    const second = await new RedisJobLocks(other, prefix, { ttlMs: 300 }).run('job-1', async () => {
      order.push('second');
      return 'second';
    });
    expect(second).toBe('second');
    expect(order).toEqual(['first starts', 'second']);
    finish.open();
    // The holder that lost its lock still gets its work's result (the risk is documented, not thrown).
    expect(await first).toBe('first');
    expect(order).toEqual(['first starts', 'second', 'first ends']);
  });

  it('renews the lock while long work runs, so no other process gets in', async () => {
    const prefix = testPrefix();
    const [a, b] = [connect(), connect()];
    const key = `${prefix}:lock:job:job-1`;
    const order: string[] = [];
    const started = gate();
    const long = new RedisJobLocks(a, prefix, { ttlMs: 300 }).run('job-1', async () => {
      order.push('long starts');
      started.open();
      // Four ttls: without renewals the lock would be gone three times over.
      await pause(1_200);
      order.push('long ends');
    });
    await started.promise;
    const token = await b.get(key);
    const other = new RedisJobLocks(b, prefix, { ttlMs: 300 }).run('job-1', async () => {
      order.push('other');
    });
    await pause(900);
    expect(await b.get(key)).toBe(token);
    await Promise.all([long, other]);
    expect(order).toEqual(['long starts', 'long ends', 'other']);
  });

  it('passes the work’s error on and lets the lock go', async () => {
    const prefix = testPrefix();
    const redis = connect();
    const locks = new RedisJobLocks(redis, prefix);
    const error = await rejectionOf(locks.run('job-1', async () => Promise.reject(new Error('boom'))));
    expect((error as Error).message).toBe('boom');
    expect(await redis.exists(`${prefix}:lock:job:job-1`)).toBe(0);
    expect(await locks.run('job-1', async () => 'again')).toBe('again');
  });

  it('refuses a ttl too short to renew', () => {
    expect(() => new RedisJobLocks(connect(), testPrefix(), { ttlMs: 10 })).toThrow(/Expected `ttlMs` to be an integer of at least 30, got `10`/);
  });
});

describeRedis('RedisAdmissionBook', () => {
  const entry = (jobId: string, userId = 'user-1', tenant = 'guild-1'): AdmissionEntry => ({ tenant, userId, jobId });

  it('places 20 jobs sent at once through two processes as exactly 3 running, 5 waiting, 12 refused', async () => {
    const prefix = testPrefix();
    const books = [new RedisAdmissionBook(connect(), prefix), new RedisAdmissionBook(connect(), prefix)];
    const caps: AdmissionCaps = { maxRunning: 3, maxWaiting: 5 };
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => books[i % 2]!.place(entry(`job-${i}`, `user-${i}`), caps)),
    );
    const kinds = results.map((r) => ('placement' in r ? r.placement : r.refused));
    expect(kinds.filter((k) => k === 'admit')).toHaveLength(3);
    expect(kinds.filter((k) => k === 'wait')).toHaveLength(5);
    expect(kinds.filter((k) => k === 'full')).toHaveLength(12);
    for (const r of results) if ('refused' in r) expect(r).toEqual({ refused: 'full', running: 3, waiting: 5 });
    const redis = connect();
    expect(await redis.scard(`${prefix}:adm:run:guild-1`)).toBe(3);
    expect(await redis.llen(`${prefix}:adm:wait:guild-1`)).toBe(5);
  });

  it('holds one person to their limit when their commands arrive at once through two processes', async () => {
    const prefix = testPrefix();
    const books = [new RedisAdmissionBook(connect(), prefix), new RedisAdmissionBook(connect(), prefix)];
    const caps: AdmissionCaps = { maxRunning: 10, maxWaiting: 10, maxPerPerson: 2 };
    const results = await Promise.all([
      ...Array.from({ length: 10 }, (_, i) => books[i % 2]!.place(entry(`mine-${i}`, 'user-1'), caps)),
      ...Array.from({ length: 2 }, (_, i) => books[i % 2]!.place(entry(`theirs-${i}`, 'user-2'), caps)),
    ]);
    const mine = results.slice(0, 10);
    expect(mine.filter((r) => 'placement' in r)).toHaveLength(2);
    expect(mine.filter((r) => 'refused' in r)).toEqual(Array.from({ length: 8 }, () => ({ refused: 'person', mine: 2 })));
    // Someone else's limit is their own.
    expect(results.slice(10)).toEqual([{ placement: 'admit' }, { placement: 'admit' }]);
  });

  it('promotes the oldest waiting job when a running one is removed, and frees the person’s place', async () => {
    const prefix = testPrefix();
    const [a, b] = [new RedisAdmissionBook(connect(), prefix), new RedisAdmissionBook(connect(), prefix)];
    const caps: AdmissionCaps = { maxRunning: 1, maxWaiting: 3, maxPerPerson: 4 };
    for (const id of ['j1', 'j2', 'j3', 'j4']) await a.place(entry(id), caps);
    expect(await a.place(entry('j5'), caps)).toEqual({ refused: 'person', mine: 4 });
    expect(['j2', 'j3', 'j4', 'j1'].map((id) => a.waitingIndex('guild-1', id))).toEqual([0, 1, 2, -1]);

    expect(await b.remove(entry('j1'), caps)).toEqual(['j2']);
    expect(await b.remove(entry('j3'), caps)).toEqual([]);
    expect(b.waitingIndex('guild-1', 'j4')).toBe(0);
    // The other process's mirror is as it last saw it, until it asks again.
    expect(a.waitingIndex('guild-1', 'j3')).toBe(1);
    expect(await a.refresh('guild-1')).toEqual(['j4']);
    expect(a.waitingIndex('guild-1', 'j3')).toBe(-1);
    expect(a.waitingIndex('guild-1', 'j4')).toBe(0);
    expect(a.waitingIndex('guild-7', 'j4')).toBe(-1);

    expect(await a.place(entry('j5'), caps)).toEqual({ placement: 'wait' });
  });

  it('readmits a resumed job once, however often it is asked, and places a job twice as once', async () => {
    const prefix = testPrefix();
    const book = new RedisAdmissionBook(connect(), prefix);
    const redis = connect();
    const caps: AdmissionCaps = { maxRunning: 1, maxWaiting: 1 };
    expect(await book.readmit(entry('j1'), false, caps)).toBe('admit');
    expect(await book.readmit(entry('j1'), false, caps)).toBe('admit');
    expect(await book.readmit(entry('j2'), false, caps)).toBe('wait');
    expect(await book.readmit(entry('j2'), true, caps)).toBe('wait');
    expect(await book.place(entry('j2'), caps)).toEqual({ placement: 'wait' });
    // It was running before the restart: it keeps running, past the cap.
    expect(await book.readmit(entry('j3'), true, caps)).toBe('admit');
    expect((await redis.smembers(`${prefix}:adm:run:guild-1`)).sort()).toEqual(['j1', 'j3']);
    expect(await redis.lrange(`${prefix}:adm:wait:guild-1`, 0, -1)).toEqual(['j2']);
    expect((await redis.smembers(`${prefix}:adm:user:guild-1:user-1`)).sort()).toEqual(['j1', 'j2', 'j3']);
  });
});

describeRedis('openKeyv on Redis', () => {
  it('round-trips set, get, setMany and delete as plain JSON under its namespace', async () => {
    const namespace = testPrefix();
    const keyv = await keyvFor(namespace);
    const redis = connect();
    expect(await keyv.set('one', { a: 1 })).toBe(true);
    expect(await keyv.get('one')).toEqual({ a: 1 });
    expect(JSON.parse((await redis.get(`${namespace}::one`))!)).toEqual({ value: { a: 1 } });

    await keyv.setMany([
      { key: 'two', value: [2] },
      { key: 'three', value: 'three', ttl: 60_000 },
    ]);
    expect(await keyv.get('two')).toEqual([2]);
    expect(await keyv.get('three')).toBe('three');
    expect(await redis.pttl(`${namespace}::three`)).toBeGreaterThan(0);

    expect(await (await keyvFor(testPrefix())).get('one')).toBeUndefined();
    expect(await keyv.delete('one')).toBe(true);
    expect(await keyv.get('one')).toBeUndefined();
  });

  it('refuses to start on a Redis it cannot log in to, naming the host but never the password', async () => {
    const url = redisUrl.replace('redis://', 'redis://:hunter2-secret@');
    const error = (await rejectionOf(openKeyv(url, testPrefix()))) as Error;
    expect(error.message).toMatch(/^STORE_URL: cannot connect to Redis at 127\.0\.0\.1:\d+;/);
    expect(error.message).not.toContain('hunter2');
    expect(error.message).not.toContain('\n');
  });
});
