/**
 * The BullMQ dispatcher against a real Redis. Two dispatchers on one prefix stand for two processes;
 * the crash is a third, in a child process killed with SIGKILL. The `run` functions are the test's:
 * they record what started where, and hold each ticket until the test releases it (or it is aborted).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import type { BatchTicket, LaneOptions, TicketRunner } from '../../src/core/dispatch.js';
import { RETRY_AFTER_CAP_MS } from '../../src/core/provider.js';
import type { ProviderName } from '../../src/core/types.js';
import { RedisDispatcher } from '../../src/distributed/dispatch.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function ticket(jobId: string, tenant = 'guild-a', batchIndex = 0): BatchTicket {
  return { jobId, batchIndex, tenant, provider: 'fal', attempt: 0 };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `check` holds; the bound only ends a test that is broken. */
async function until(check: () => boolean | Promise<boolean>, what: string, boundMs = 20_000): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`still waiting for ${what}`);
    await sleep(10);
  }
}

/** What ran where, shared by the dispatchers of one test. */
function board() {
  const started: { by: string; key: string }[] = [];
  const aborted: string[] = [];
  const holds = new Map<string, () => void>();
  let running = 0;
  let maxRunning = 0;
  return {
    started,
    aborted,
    keys: () => started.map((s) => s.key),
    get running() {
      return running;
    },
    get maxRunning() {
      return maxRunning;
    },
    /** a runner that records each ticket's start and holds it until released or aborted */
    runner(by: string): TicketRunner {
      return async (t, signal) => {
        const key = `${t.jobId}.${t.batchIndex}`;
        started.push({ by, key });
        running += 1;
        maxRunning = Math.max(maxRunning, running);
        try {
          await new Promise<void>((resolve) => {
            holds.set(key, resolve);
            signal.addEventListener('abort', () => (aborted.push(key), resolve()), { once: true });
          });
        } finally {
          holds.delete(key);
          running -= 1;
        }
      };
    },
    release(key: string): void {
      const resolve = holds.get(key);
      if (!resolve) throw new Error(`${key} is not running`);
      holds.delete(key);
      resolve();
    },
    /** releases every held ticket; returns how many */
    releaseAll(): number {
      const all = [...holds.values()];
      holds.clear();
      for (const resolve of all) resolve();
      return all.length;
    },
  };
}

const ONE_AT_A_TIME: Partial<Record<ProviderName, LaneOptions>> = { fal: { concurrency: 1 } };

async function startDispatcher(
  prefix: string,
  run: TicketRunner,
  lanes: Partial<Record<ProviderName, LaneOptions>> = ONE_AT_A_TIME,
  lockDurationMs = 1_000,
  work = true,
): Promise<RedisDispatcher> {
  const dispatcher = new RedisDispatcher({ connection: redisUrl, prefix, lanes, lockDurationMs, work });
  cleanups.push(async () => {
    dispatcher.abortAll();
    await dispatcher.close();
  });
  await dispatcher.start(run);
  return dispatcher;
}

function inspector(): Redis {
  const redis = new Redis(redisUrl);
  cleanups.push(() => void redis.disconnect());
  return redis;
}

describeRedis('RedisDispatcher', () => {
  it('queues one turn of a batch once, however often and from whichever process it is queued', async () => {
    const prefix = testPrefix();
    const runs = board();
    const one = await startDispatcher(prefix, runs.runner('one'));
    const two = await startDispatcher(prefix, runs.runner('two'));
    await one.enqueue(ticket('blocker'));
    await until(() => runs.running === 1, 'the blocker to start');

    await one.enqueue(ticket('job-x'));
    await one.enqueue(ticket('job-x'));
    await Promise.all([one.enqueue(ticket('job-x')), two.enqueue(ticket('job-x'))]);
    // Same tenant, queued last: a later tag than job-x's, so it starts after any copy of it.
    await two.enqueue(ticket('sentinel'));
    for (const key of ['blocker.0', 'job-x.0', 'sentinel.0']) {
      await until(() => runs.keys().includes(key), key);
      runs.release(key);
    }

    expect(runs.keys()).toEqual(['blocker.0', 'job-x.0', 'sentinel.0']);
    // The copies cost the tenant no turn: three tickets, three tags (1, 2, 3), so its next is 4.
    expect(await inspector().hget(`${prefix}:fair:fal:f`, 'guild-a')).toBe('4');
  });

  it('queues from a process that runs no tickets (an edge) for the processes that do', async () => {
    const prefix = testPrefix();
    const runs = board();
    const edge = await startDispatcher(prefix, runs.runner('edge'), ONE_AT_A_TIME, 1_000, false);
    await edge.enqueue(ticket('job-e'));
    await until(() => edge.depth('fal') === 1, 'the edge to count the waiting ticket');
    await startDispatcher(prefix, runs.runner('worker'));
    await until(() => runs.started.length === 1, 'the worker to run it');

    expect(runs.started).toEqual([{ by: 'worker', key: 'job-e.0' }]);
  });

  it('tags a front ticket V without moving its tenant, and starts the tags again once an empty lane is past a million', async () => {
    const prefix = testPrefix();
    const redis = inspector();
    await redis.set(`${prefix}:fair:fal:v`, '1000001');
    await redis.hset(`${prefix}:fair:fal:f`, 'guild-a', '1000001');
    const edge = await startDispatcher(prefix, async () => {}, ONE_AT_A_TIME, 1_000, false);

    await edge.enqueue(ticket('job-1'));
    await edge.enqueue(ticket('job-2'));
    await edge.enqueue({ ...ticket('job-3'), attempt: 1 }, { front: true });

    const priority = (id: string) => redis.hget(`${prefix}:batches-fal:${id}`, 'priority');
    expect([await priority('job-1.0.0'), await priority('job-2.0.0'), await priority('job-3.0.1')]).toEqual(['1', '2', '1']);
    expect(await redis.hget(`${prefix}:fair:fal:f`, 'guild-a')).toBe('3');
  });

  it('never runs more tickets at once than the lane allows, across both processes', async () => {
    const prefix = testPrefix();
    const runs = board();
    const lanes = { fal: { concurrency: 3 } };
    const one = await startDispatcher(prefix, runs.runner('one'), lanes);
    const two = await startDispatcher(prefix, runs.runner('two'), lanes);
    for (let i = 0; i < 20; i += 1) await (i % 2 === 0 ? one : two).enqueue(ticket(`job-${i}`, `guild-${i % 4}`));

    let released = 0;
    while (released < 20) {
      await until(() => runs.running === Math.min(3, 20 - released), 'the next tickets to start');
      // Room for a fourth to start, were the cap one per process.
      await sleep(100);
      expect(runs.running).toBeLessThanOrEqual(3);
      released += runs.releaseAll();
    }

    expect(runs.maxRunning).toBe(3);
    expect(new Set(runs.keys()).size).toBe(20);
    expect(runs.started).toHaveLength(20);
  });

  it("lets a newcomer's calls in between a backlog's: B's 4 start before A's 10th, then they alternate", async () => {
    const prefix = testPrefix();
    const runs = board();
    const one = await startDispatcher(prefix, runs.runner('one'));
    const two = await startDispatcher(prefix, runs.runner('two'));
    await one.enqueue(ticket('a-0', 'tenant-a'));
    await until(() => runs.running === 1, "A's first call to start");
    for (let i = 1; i < 40; i += 1) await one.enqueue(ticket(`a-${i}`, 'tenant-a'));
    for (let i = 0; i < 4; i += 1) await two.enqueue(ticket(`b-${i}`, 'tenant-b'));

    for (let k = 0; k < 44; k += 1) {
      await until(() => runs.started.length > k, `call ${k + 1} to start`);
      runs.release(runs.started[k]!.key);
    }
    const order = runs.keys().map((key) => key.replace(/\.0$/, ''));

    expect(order.indexOf('b-3')).toBeLessThan(order.indexOf('a-9'));
    // B joins the round being served (A's first call's): its first call runs next; after that, ties
    // go to the call queued first, and A's were queued before B's.
    expect(order.slice(0, 10)).toEqual(['a-0', 'b-0', 'a-1', 'b-1', 'a-2', 'b-2', 'a-3', 'b-3', 'a-4', 'a-5']);
    expect(order.slice(10)).toEqual(Array.from({ length: 34 }, (_, i) => `a-${i + 6}`));
  });

  it('lets no more than the rate into any rolling window, counting the sends of both processes', async () => {
    const prefix = testPrefix();
    const lanes = { fal: { concurrency: 10, rateLimit: { limit: 5, intervalMs: 300 } } };
    const one = await startDispatcher(prefix, async () => {}, lanes);
    const two = await startDispatcher(prefix, async () => {}, lanes);
    const sent: number[] = [];

    await Promise.all(
      [one, two].flatMap((dispatcher) =>
        Array.from({ length: 15 }, () =>
          dispatcher.throttle('fal', async () => {
            sent.push(Date.now());
          }),
        ),
      ),
    );

    expect(sent).toHaveLength(30);
    sent.sort((a, b) => a - b);
    const busiest = Math.max(...sent.map((start) => sent.filter((t) => t >= start && t < start + 300).length));
    expect(busiest).toBe(5);
  });

  it('learns an unknown limit from one 429 for every process, keeps to it, and lowers it for a 429 after', async () => {
    const prefix = testPrefix();
    const lanes = { fal: { concurrency: 10 } };
    const one = await startDispatcher(prefix, async () => {}, lanes);
    const two = await startDispatcher(prefix, async () => {}, lanes);
    const accepted: number[] = [];
    const limited: number[] = [];
    let limit = 6;
    // A provider that takes `limit` sends in any 400 ms, answering a 429 with the wait for a place.
    const send = (dispatcher: RedisDispatcher) =>
      dispatcher.throttle('fal', async () => {
        const now = Date.now();
        const inWindow = accepted.filter((t) => t > now - 400);
        if (inWindow.length >= limit) {
          limited.push(now);
          dispatcher.pause('fal', inWindow[inWindow.length - limit]! + 400 - now);
          return;
        }
        accepted.push(now);
      });
    await Promise.all([one, two].flatMap((dispatcher) => Array.from({ length: 15 }, () => send(dispatcher))));
    // The first 429 taught both processes the limit, its window the provider's or a little longer (a
    // send counts from when it left). Sends of the other process already on their way meet a 429 of
    // their own and teach nothing more; without the lesson, every wave would meet one per send.
    const learned = await two.rateOf('fal');
    expect(learned?.limit).toBe(6);
    expect(learned!.intervalMs).toBeGreaterThanOrEqual(400);
    expect(limited.length).toBeLessThanOrEqual(4);
    expect(accepted).toHaveLength(30 - limited.length);
    // the provider lowers its limit: a 429 lowers the learned one by one
    limit = 5;
    await Promise.all([one, two].flatMap((dispatcher) => Array.from({ length: 10 }, () => send(dispatcher))));
    expect((await one.rateOf('fal'))?.limit).toBe(5);
  });

  it("pauses a provider in every process: the other's submit and its next ticket wait for the pause to end", async () => {
    const prefix = testPrefix();
    const redis = inspector();
    const pauseKey = `${prefix}:pause:fal`;
    const startedWhilePaused: number[] = [];
    const lanes = { fal: { concurrency: 2 } };
    const run: TicketRunner = async () => void startedWhilePaused.push(await redis.pttl(pauseKey));
    const one = await startDispatcher(prefix, run, lanes);
    const two = await startDispatcher(prefix, run, lanes);

    one.pause('fal', 400);
    await until(async () => (await redis.pttl(pauseKey)) > 0 && (await redis.pttl(`${prefix}:batches-fal:limiter`)) > 0, 'the pause');
    await two.enqueue(ticket('job-p'));
    let sentWhilePaused: number | undefined;
    await two.throttle('fal', async () => void (sentWhilePaused = await redis.pttl(pauseKey)));
    await until(() => startedWhilePaused.length === 1, 'the ticket to start');

    // -2: the key is gone (0: under a millisecond left, which the gate takes as over). Each ran only
    // once the pause had ended.
    expect(sentWhilePaused).toBeLessThanOrEqual(0);
    expect(startedWhilePaused).toHaveLength(1);
    expect(startedWhilePaused[0]).toBeLessThanOrEqual(0);
  });

  it("holds a tenant to its rate across both processes, without holding a slot while it waits", async () => {
    const prefix = testPrefix();
    const starts: { tenant: string; at: number }[] = [];
    const run: TicketRunner = async (t) => void starts.push({ tenant: t.tenant, at: Date.now() });
    const lanes = { fal: { concurrency: 4 } };
    const tenantRate = { limit: 3, intervalMs: 400 };
    const make = async () => {
      const dispatcher = new RedisDispatcher({ connection: redisUrl, prefix, lanes, lockDurationMs: 1_000, tenantRate });
      cleanups.push(async () => {
        dispatcher.abortAll();
        await dispatcher.close();
      });
      await dispatcher.start(run);
      return dispatcher;
    };
    const [one, two] = [await make(), await make()];
    for (let i = 0; i < 8; i += 1) await (i % 2 ? one : two).enqueue(ticket(`a-${i}`, 'tenant-a'));
    await two.enqueue(ticket('b-0', 'tenant-b'));
    await until(() => starts.length === 9, 'all nine to start');

    const a = starts.filter((s) => s.tenant === 'tenant-a').map((s) => s.at);
    // A's eight: at most 3 in any 400 ms (Redis time and ours agree on this machine; a little slack for rounding).
    expect(Math.max(...a.map((t) => a.filter((u) => u >= t && u < t + 390).length))).toBe(3);
    // B was not held behind A's waiting tickets: it started among the first four.
    expect(starts.findIndex((s) => s.tenant === 'tenant-b')).toBeLessThan(4);
  });

  it('only lengthens a pause, and caps it at the longest Retry-After honoured', async () => {
    const prefix = testPrefix();
    const redis = inspector();
    const lanes = { fal: { concurrency: 1 }, replicate: { concurrency: 1 } };
    const one = await startDispatcher(prefix, async () => {}, lanes);
    const two = await startDispatcher(prefix, async () => {}, lanes);

    one.pause('fal', 60_000);
    two.pause('replicate', 24 * 3_600_000);
    await until(async () => (await redis.pttl(`${prefix}:pause:fal`)) > 0 && (await redis.pttl(`${prefix}:pause:replicate`)) > 0, 'both pauses');
    two.pause('fal', 50);
    // Long enough for the short pause to have ended, had it replaced the long one.
    await sleep(200);

    expect(await redis.pttl(`${prefix}:pause:fal`)).toBeGreaterThan(30_000);
    expect(await redis.pttl(`${prefix}:pause:replicate`)).toBeLessThanOrEqual(RETRY_AFTER_CAP_MS);
  });

  it("runs a killed process's ticket in another process once its lock lapses", async () => {
    const prefix = testPrefix();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'af-dispatch-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'doomed.mts');
    await writeFile(
      script,
      `import { RedisDispatcher } from ${JSON.stringify(path.resolve('src/distributed/dispatch.ts'))};
const dispatcher = new RedisDispatcher({ connection: process.env.REDIS_URL, prefix: process.env.PREFIX, lanes: { fal: { concurrency: 1 } }, lockDurationMs: 800 });
await dispatcher.start(async (ticket) => {
  process.stdout.write('started ' + ticket.jobId + '\\n');
  await new Promise(() => {});
});
await dispatcher.enqueue({ jobId: 'job-k', batchIndex: 0, tenant: 'guild-a', provider: 'fal', attempt: 0 });
`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      env: { ...process.env, REDIS_URL: redisUrl, PREFIX: prefix },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    cleanups.push(() => void child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += String(chunk)));
    let exitedEarly = false;
    void exited.then(() => (exitedEarly = true));
    await until(() => {
      if (exitedEarly) throw new Error('the doomed process exited before starting the ticket');
      return out.includes('started job-k');
    }, 'the doomed process to start the ticket');
    child.kill('SIGKILL');
    await exited;

    const runs = board();
    await startDispatcher(prefix, runs.runner('survivor'), ONE_AT_A_TIME, 800);
    await until(() => runs.started.length === 1, 'the survivor to take the ticket over');
    runs.release('job-k.0');
    await until(async () => (await inspector().exists(`${prefix}:batches-fal:job-k.0`)) === 0, 'the ticket to complete');

    expect(runs.started).toEqual([{ by: 'survivor', key: 'job-k.0' }]);
  });

  it('gives a running ticket back to the queue when its process stops, and another process runs it', async () => {
    const prefix = testPrefix();
    const runs = board();
    const one = await startDispatcher(prefix, runs.runner('one'));
    await one.enqueue(ticket('job-r'));
    await until(() => runs.running === 1, 'the ticket to start');
    await startDispatcher(prefix, runs.runner('two'));

    one.halt();
    one.abortAll();
    await one.close();
    await until(() => runs.started.length === 2, 'the other process to run it');

    expect(runs.aborted).toEqual(['job-r.0']);
    expect(runs.started).toEqual([
      { by: 'one', key: 'job-r.0' },
      { by: 'two', key: 'job-r.0' },
    ]);
  });

  it("cancels a job from another process: aborts its running ticket there and drops its waiting ones", async () => {
    const prefix = testPrefix();
    const runs = board();
    const one = await startDispatcher(prefix, runs.runner('one'));
    await one.enqueue(ticket('job-c'));
    await until(() => runs.running === 1, "the job's first ticket to start");
    await one.enqueue({ ...ticket('job-c'), batchIndex: 1 });
    await one.enqueue({ ...ticket('job-c'), batchIndex: 2, attempt: 1 }, { delayMs: 50 });
    await one.enqueue(ticket('job-d', 'guild-b'));
    const two = await startDispatcher(prefix, runs.runner('two'));

    await two.cancelJob('job-c');
    await until(() => runs.keys().includes('job-d.0'), 'the next job to start');
    runs.release('job-d.0');
    await until(() => runs.running === 0, 'the tickets to settle');

    expect(runs.aborted).toEqual(['job-c.0']);
    expect(runs.keys()).toEqual(['job-c.0', 'job-d.0']);
    const counts = await inspector().zcard(`${prefix}:batches-fal:delayed`);
    expect(counts).toBe(0);
    await until(() => one.depth('fal') === 0 && two.depth('fal') === 0, 'the depth to be counted again');
  });
});
