import { describe, expect, it } from 'vitest';
import { botEnv, startBotProcess, until } from '../bot-process.js';
import { startFakeFal } from '../fakes/fal.js';
import { loopbackFetch } from '../fakes/http.js';
import { buildApp, onCleanup, requester, tempDir } from '../helpers.js';

describe('graceful shutdown', () => {
  it('lets a submit already on its way finish and saves its id, so the next start polls instead of paying again', async () => {
    const fake = await startFakeFal({ key: 'k', latencyMs: 300 });
    onCleanup(() => fake.close());
    let submitting: () => void = () => {};
    const submitStarted = new Promise<void>((resolve) => (submitting = resolve));
    // a slow network: the submit takes 300 ms to reach fal
    const slowFetch: typeof fetch = async (input, init) => {
      if (init?.method === 'POST') {
        submitting();
        await new Promise((r) => setTimeout(r, 300));
      }
      return loopbackFetch(input, init);
    };
    const env = { FAL_KEY: 'k', FAL_BASE_URL: fake.url, FAL_CONCURRENCY: '1' };
    const first = await buildApp({ env, fetch: slowFetch });
    const job = await first.engine.submit({ prompt: 'fox', count: 8, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' }, requester());
    await submitStarted;
    await first.close();
    expect(fake.submits()).toHaveLength(1);

    const second = await buildApp({ env, dir: first.dir });
    const stored = await second.jobs.get(job.id);
    expect(stored!.batches[0]!.requestId).toBe([...fake.requests.keys()][0]);
    expect(stored!.batches[1]!.state).toBe('queued');
    await second.engine.resume();
    const done = await second.engine.waitFor(job.id);
    expect(done.images).toHaveLength(8);
    expect(fake.submits()).toHaveLength(2);
  });

  it('SIGTERM stops the bot within 10 s with exit code 0, and the next start finishes the job', async () => {
    const dir = await tempDir('af-bot-');
    const env = botEnv(dir, { LOCAL_LATENCY_MS: '400', LOCAL_CONCURRENCY: '1' });
    const bot = await startBotProcess(env);
    const answer = await bot.post('/api/command', { text: '/imagine a patient fox --count 12' });
    const { job } = (await answer.json()) as { job: { id: string } };
    // Mid-job: the first of three calls (one at a time, 400 ms each) has delivered, the others have not.
    const seen = await until(async () => {
      const current = await bot.job(job.id);
      return current && current.images.length >= 4 ? current : false;
    }, 'the first batch');
    expect(seen.state).not.toBe('completed');
    expect(seen.images.length).toBeLessThan(12);
    // The bot's own guard exits with 1 after 10 s; 0 means it shut down cleanly before that.
    expect(await bot.kill('SIGTERM')).toBe(0);

    // What the stopped bot left behind: the job unfinished, with what it had delivered saved.
    const stored = await storedJob(dir, job.id);
    expect(['queued', 'running']).toContain(stored.state);
    expect(stored.images.length).toBeGreaterThanOrEqual(seen.images.length);
    expect(stored.images.length).toBeLessThan(12);

    const again = await startBotProcess(env);
    const done = await until(async () => {
      const current = await again.job(job.id);
      return current?.state === 'completed' ? current : false;
    }, 'the resumed job to complete');
    expect(done.images.map((i) => i.index)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(await again.kill('SIGTERM')).toBe(0);
  });
});

/** The job as the bot's store holds it (read with the bot stopped, over the same folder as botEnv's). */
async function storedJob(dir: string, jobId: string) {
  const app = await buildApp({ env: { STORE_URL: `sqlite://${dir}/store.sqlite`, OUTPUT_DIR: `${dir}/out` } });
  try {
    const job = await app.jobs.get(jobId);
    if (!job) throw new Error(`job ${jobId} is not in the store`);
    return job;
  } finally {
    await app.close();
  }
}
