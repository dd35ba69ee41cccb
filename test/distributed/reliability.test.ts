/**
 * Distributed mode under faults: real bot processes killed with SIGKILL while another finishes their
 * work, a 429 one process receives pausing the other, and the daily caps and queue limits holding
 * when commands reach both processes at once. Real Redis, real BullMQ, the real fal client against
 * the fal fake.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import { UserError } from '../../src/core/errors.js';
import type { ImagineRequest, Job } from '../../src/core/types.js';
import { startBotProcess, until, type BotProcess } from '../bot-process.js';
import { startFakeFal, type FakeFal, type RecordedCall } from '../fakes/fal.js';
import { onCleanup, requester } from '../helpers.js';
import { describeRedis } from '../redis/redis.js';
import { batchKey, cluster, inProcess, kindOf, onArrival, processEnv, requestIdOf, sender } from './cluster.js';

const FAL: Omit<ImagineRequest, 'prompt' | 'count'> = { provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' };

/** Submits as the playground's page does; the job's id. */
async function command(bot: BotProcess, text: string): Promise<string> {
  const answer = await bot.post('/api/command', { text });
  const body = (await answer.json()) as { job?: { id: string }; error?: string };
  if (answer.status !== 200 || !body.job) throw new Error(`"${text}" was answered ${answer.status}: ${body.error}`);
  return body.job.id;
}

/**
 * Sends a SIGKILL to `bot` from inside the fake, the moment a call for which `trigger` holds
 * arrives (see onArrival); resolves with that call.
 */
function killer(fal: FakeFal) {
  let armed: { bot: BotProcess; trigger: (call: RecordedCall) => boolean; resolve: (call: RecordedCall) => void } | undefined;
  onArrival(fal, (call) => {
    if (!armed?.trigger(call)) return;
    armed.bot.child.kill('SIGKILL');
    armed.resolve(call);
    armed = undefined;
  });
  return (bot: BotProcess, trigger: (call: RecordedCall) => boolean) =>
    new Promise<RecordedCall>((resolve) => {
      armed = { bot, trigger, resolve };
    });
}

/** Every submit fal accepted (not a 429), counted by the batch it was for. */
function submitsPerBatch(fal: FakeFal): Map<string, number> {
  const counts = new Map<string, number>();
  for (const call of fal.submits().filter((c) => !c.fault)) counts.set(batchKey(call), (counts.get(batchKey(call)) ?? 0) + 1);
  return counts;
}

/** The batch a request id was submitted for, as fal recorded its input. */
function batchOf(fal: FakeFal, requestId: string): string {
  const input = fal.requests.get(requestId)?.input;
  if (!input) throw new Error(`fal knows no request ${requestId}`);
  return JSON.stringify([input.prompt, input.seed]);
}

/** Settles every promise; the jobs accepted and the errors of the refused, in order. */
async function settle(work: Promise<Job>[]): Promise<{ accepted: Job[]; refused: UserError[] }> {
  const results = await Promise.allSettled(work);
  const accepted = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  for (const error of refused) expect(error).toBeInstanceOf(UserError);
  return { accepted, refused: refused as UserError[] };
}

describeRedis('distributed mode under faults', () => {
  it('SIGKILL of one process mid-submit, mid-poll and mid-download: the other finishes every job, with at most one extra submit per kill', async () => {
    // 400 ms calls, polled every 500 ms: a call is polled once while fal still works on it, and
    // its images are on their way well before the next submit may go (one per second).
    const fal = await startFakeFal({ latencyMs: 400 });
    onCleanup(() => fal.close());
    const c = await cluster(fal, {
      FAL_CONCURRENCY: '4',
      // One submit per second across the cluster: a kill finds at most one submit without its saved id.
      FAL_RATE_LIMIT: '1/s',
      // A dead process's batches are taken over after about two lock periods (the lapse, then a stall check).
      QUEUE_LOCK_SECONDS: '2',
    });
    const killWhen = killer(fal);
    const lastResultBy = new Map<string, string | undefined>();
    onArrival(fal, (call) => {
      if (kindOf(call) === 'result') lastResultBy.set(requestIdOf(call)!, sender(call));
    });
    const [a, firstB] = await Promise.all([startBotProcess(processEnv(c, 'a')), startBotProcess(processEnv(c, 'b'))]);
    onCleanup(() => void a.child.kill('SIGCONT'));
    // Reads the shared store as any process would; takes no batches.
    const observer = await inProcess(c, 'observer', { ROLE: 'edge' });

    /**
     * Has b take a new job's batches while a holds none: a is stopped while they are queued. (With a
     * backlog, the process holding the provider's slots keeps them — BullMQ hands a worker its next
     * ticket as it finishes one — so a restarted process would otherwise wait for a to run dry.)
     */
    const handOver = async (b: BotProcess, text: string, kill: Promise<RecordedCall>) => {
      a.child.kill('SIGSTOP');
      const id = await command(b, text);
      const cut = await kill;
      await b.exited;
      a.child.kill('SIGCONT');
      return { id, cut };
    };

    // 1. mid-submit: b's second submit reaches fal, its answer never reaches b, so its id is never saved.
    let submits = 0;
    const first = await handOver(firstB, '/imagine a fox cut off mid-submit --count 16', killWhen(firstB, (call) => kindOf(call) === 'submit' && sender(call) === 'b' && ++submits === 2));
    expect((await observer.engine.waitFor(first.id)).state).toBe('completed');

    // 2. mid-poll: the id is saved and fal still works on the call.
    const secondB = await startBotProcess(processEnv(c, 'b'));
    const second = await handOver(
      secondB,
      '/imagine a fox cut off mid-poll --count 8',
      killWhen(secondB, (call) => kindOf(call) === 'status' && sender(call) === 'b' && fal.requests.get(requestIdOf(call)!)?.state !== 'COMPLETED'),
    );
    expect((await observer.engine.waitFor(second.id)).state).toBe('completed');

    // 3. mid-download: the call's outputs are fetched and its first image is on its way.
    const thirdB = await startBotProcess(processEnv(c, 'b'));
    const third = await handOver(
      thirdB,
      '/imagine a fox cut off mid-download --count 8',
      killWhen(thirdB, (call) => kindOf(call) === 'file' && lastResultBy.get(requestIdOf(call)!) === 'b'),
    );

    // a, never killed, finished every job, every image kept in the shared folder.
    const done = await Promise.all([first.id, second.id, third.id].map((id) => observer.engine.waitFor(id)));
    expect(a.child.exitCode).toBeNull();
    expect(done.map((job) => [job.state, job.images.length])).toEqual([['completed', 16], ['completed', 8], ['completed', 8]]);
    for (const job of done) {
      expect(job.images.map((image) => image.index)).toEqual(Array.from({ length: job.request.count }, (_, i) => i + 1));
      const files = (await readdir(path.join(c.outputDir, job.id, 'pending-review'))).sort();
      expect(files).toEqual(job.images.map((image) => path.basename(image.file)).sort());
    }

    // Every batch reached fal; a batch was sent twice only where a kill cut its submit off.
    const perBatch = submitsPerBatch(fal);
    expect(perBatch.size).toBe(4 + 2 + 2);
    const extra = [...perBatch.values()].reduce((sum, n) => sum + n - 1, 0);
    expect(extra).toBeLessThanOrEqual(3);
    // The submit cut off before its id was saved was sent again, by a (the batch is not lost)…
    expect(perBatch.get(batchKey(first.cut))).toBe(2);
    const resent = fal.submits().filter((call) => batchKey(call) === batchKey(first.cut));
    expect(resent.map(sender)).toEqual(['b', 'a']);
    // …while the calls whose id was saved were polled and fetched again by a, never sent again.
    for (const cut of [second.cut, third.cut]) {
      const id = requestIdOf(cut)!;
      expect(perBatch.get(batchOf(fal, id))).toBe(1);
      const later = fal.calls.slice(fal.calls.indexOf(cut) + 1);
      expect(later.some((call) => kindOf(call) === 'result' && requestIdOf(call) === id && sender(call) === 'a')).toBe(true);
    }
  }, 180_000);

  it('a 429 with Retry-After received by one process pauses the other too', async () => {
    const fal = await startFakeFal({ latencyMs: 200 });
    onCleanup(() => fal.close());
    const c = await cluster(fal, { FAL_CONCURRENCY: '10', TENANT_MAX_RUNNING_JOBS: '20', USER_MAX_ACTIVE_JOBS: '20' });
    const [a, b] = await Promise.all([inProcess(c, 'a'), inProcess(c, 'b')]);

    fal.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 1 } });
    const first = await a.engine.submit({ ...FAL, prompt: 'the first fox', count: 4 }, requester('guild-0'));
    await until(() => fal.calls.find((call) => call.fault === 'rate-limit'), 'the 429');
    // Once the process that got the 429 has paused the lane (in Redis, for everyone), more work arrives on both.
    await until(async () => (await a.shared!.redis.pttl(`${c.env.REDIS_PREFIX}:pause:fal`)) > 0, 'the pause');
    const jobs = [first];
    for (let i = 1; i <= 12; i += 1) {
      const app = i % 2 ? b : a;
      jobs.push(await app.engine.submit({ ...FAL, prompt: `fox ${i}`, count: 4 }, requester(`guild-${i % 3}`)));
    }
    const done = await Promise.all(jobs.map((job) => a.engine.waitFor(job.id)));
    expect(done.map((job) => job.state)).toEqual(jobs.map(() => 'completed'));

    const limited = fal.calls.filter((call) => call.fault === 'rate-limit');
    expect(limited).toHaveLength(1);
    const [throttle] = limited;
    const got = sender(throttle!)!;
    const pauseEnd = throttle!.at + 1000;
    const after = fal.submits().filter((call) => call.at > throttle!.at);
    // 13 calls in all: the throttled one sent again, and one per other job.
    expect(after.filter((call) => !call.fault)).toHaveLength(13);
    // Times as the fake recorded them: no submit from either process reached fal before the pause was over.
    expect(after.filter((call) => call.at < pauseEnd)).toEqual([]);
    const other = after.filter((call) => sender(call) !== got);
    expect(other.length).toBeGreaterThan(0);
    expect(Math.min(...other.map((call) => call.at))).toBeGreaterThanOrEqual(pauseEnd);
  }, 60_000);

  describeRedis('limits shared by both processes under concurrent commands', () => {
    /** Two processes and an fal fake whose calls take `latencyMs`. */
    async function pair(latencyMs: number, env: Record<string, string>): Promise<[App, App]> {
      const fal = await startFakeFal({ latencyMs });
      onCleanup(() => fal.close());
      const c = await cluster(fal, { FAL_CONCURRENCY: '10', ...env });
      return Promise.all([inProcess(c, 'a'), inProcess(c, 'b')]);
    }

    /** `n` submits of 4 images at once, alternating between the processes. */
    function burst(apps: [App, App], n: number, who: (i: number) => Job['requester']): Promise<Job>[] {
      return Array.from({ length: n }, (_, i) => apps[i % 2]!.engine.submit({ ...FAL, prompt: `fox ${i}`, count: 4 }, who(i)));
    }

    it('daily caps: a tenant gets exactly its 20 images, then the bot its 28, whichever process takes each command', async () => {
      const [a, b] = await pair(50, { TENANT_DAILY_IMAGES: '20', GLOBAL_DAILY_IMAGES: '28', USER_MAX_ACTIVE_JOBS: '100', TENANT_MAX_RUNNING_JOBS: '20' });

      const first = await settle(burst([a, b], 10, (i) => requester('guild-1', `user-${i}`)));
      expect(first.accepted).toHaveLength(5);
      // the UTC day the tallies are kept under
      const day = first.accepted[0]!.createdAt.slice(0, 10);
      expect(first.refused.map((e) => e.code)).toEqual(Array(5).fill('quota'));
      for (const error of first.refused) expect(error.message).toMatch(/^This job asks for 4 images, but only 0 of today's 20 are left here\. /);
      expect(await a.jobs.imagesUsed('guild-1', day)).toBe(20);
      expect(await b.jobs.imagesUsed('*', day)).toBe(20);

      // A second tenant meets the bot's cap: 8 images left for everyone, so two jobs. A request
      // turned away by the bot's cap gives back what it took from its tenant's.
      const second = await settle(burst([a, b], 10, (i) => requester('guild-2', `user-${i}`)));
      expect(second.accepted).toHaveLength(2);
      for (const error of second.refused) {
        expect(error.code).toBe('quota');
        expect(error.message).toMatch(/^This job asks for 4 images, but only \d+ of today's (20 are left here|28 are left on this bot for everyone)\. /);
      }
      expect(second.refused.some((e) => e.message.includes('of today\'s 28 are left on this bot for everyone'))).toBe(true);
      expect(await b.jobs.imagesUsed('guild-2', day)).toBe(8);
      expect(await a.jobs.imagesUsed('*', day)).toBe(28);

      // The jobs made every image they reserved: the tallies stay where they are.
      const done = await Promise.all([...first.accepted, ...second.accepted].map((job) => a.engine.waitFor(job.id)));
      expect(done.map((job) => job.images.length)).toEqual(Array(7).fill(4));
      expect(await a.jobs.imagesUsed('guild-1', day)).toBe(20);
      expect(await a.jobs.imagesUsed('guild-2', day)).toBe(8);
      expect(await a.jobs.imagesUsed('*', day)).toBe(28);
    });

    it('a tenant runs 2 jobs and queues 3, the rest refused as a full queue, whichever process takes each command', async () => {
      // Calls that outlast the test: no job finishes and frees a place while the commands arrive.
      const [a, b] = await pair(60_000, { TENANT_MAX_RUNNING_JOBS: '2', TENANT_MAX_QUEUED_JOBS: '3', USER_MAX_ACTIVE_JOBS: '100' });
      const prefix = a.config.redisPrefix;

      const { accepted, refused } = await settle(burst([a, b], 10, (i) => requester('guild-1', `user-${i}`)));
      expect(accepted).toHaveLength(5);
      expect(refused.map((e) => e.code)).toEqual(Array(5).fill('queue_full'));
      for (const error of refused) {
        expect(error.message).toBe('The queue is full here: 2 jobs running and 3 waiting (the most allowed is 2 + 3). Try again when one finishes.');
      }
      const running = await a.shared!.redis.smembers(`${prefix}:adm:run:guild-1`);
      const waiting = await a.shared!.redis.lrange(`${prefix}:adm:wait:guild-1`, 0, -1);
      expect(running).toHaveLength(2);
      expect(waiting).toHaveLength(3);
      expect([...running, ...waiting].sort()).toEqual(accepted.map((job) => job.id).sort());
      // another tenant has places of its own
      await expect(b.engine.submit({ ...FAL, prompt: 'a fox elsewhere', count: 4 }, requester('guild-2'))).resolves.toMatchObject({ state: 'queued' });
    });

    it('one person holds at most 3 unfinished jobs, whichever process takes each command', async () => {
      const [a, b] = await pair(60_000, { USER_MAX_ACTIVE_JOBS: '3', TENANT_MAX_RUNNING_JOBS: '20' });
      const prefix = a.config.redisPrefix;

      const { accepted, refused } = await settle(burst([a, b], 10, () => requester('guild-1', 'ada')));
      expect(accepted).toHaveLength(3);
      expect(refused.map((e) => e.code)).toEqual(Array(7).fill('quota'));
      for (const error of refused) {
        expect(error.message).toBe(
          'You already have 3 jobs queued or running here (the most one person may have is 3). Try again when one finishes; /jobs shows them.',
        );
      }
      expect((await a.shared!.redis.smembers(`${prefix}:adm:user:guild-1:ada`)).sort()).toEqual(accepted.map((job) => job.id).sort());
      // someone else in the same server is not held back
      await expect(b.engine.submit({ ...FAL, prompt: 'a fox for bob', count: 4 }, requester('guild-1', 'bob'))).resolves.toMatchObject({ state: 'queued' });
    });
  });
});
