import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
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
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      STORE_URL: `sqlite://${dir}/store.sqlite`,
      OUTPUT_DIR: `${dir}/out`,
      PLAYGROUND_PORT: '0',
      HEALTH_PORT: 'off',
      LOCAL_LATENCY_MS: '400',
      LOCAL_CONCURRENCY: '1',
      LOG_LEVEL: 'warn',
    };
    const start = () => {
      const child = spawn(process.execPath, [path.resolve('bin/art-factory.js'), 'start'], { env });
      let out = '';
      const url = new Promise<string>((resolve) => {
        child.stdout.on('data', (chunk: Buffer) => {
          out += String(chunk);
          const match = /playground: (http:\/\/\S+)/.exec(out);
          if (match) resolve(match[1]!);
        });
      });
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      onCleanup(() => void child.kill('SIGKILL'));
      return { child, url, exited };
    };

    const bot = start();
    const url = await bot.url;
    const answer = await fetch(`${url}/api/command`, { method: 'POST', body: JSON.stringify({ text: '/imagine a patient fox --count 12' }) });
    const { job } = (await answer.json()) as { job: { id: string } };
    await new Promise((r) => setTimeout(r, 600));
    bot.child.kill('SIGTERM');
    // The bot's own guard exits with 1 after 10 s; 0 means it shut down cleanly before that.
    expect(await bot.exited).toBe(0);

    const again = start();
    const url2 = await again.url;
    let state = '';
    for (let i = 0; i < 200 && state !== 'completed'; i += 1) {
      await new Promise((r) => setTimeout(r, 100));
      const view = (await (await fetch(`${url2}/api/state`)).json()) as { entries: { job: { id: string; state: string; images: unknown[] } }[] };
      state = view.entries.find((e) => e.job.id === job.id)?.job.state ?? '';
    }
    expect(state).toBe('completed');
    again.child.kill('SIGTERM');
    expect(await again.exited).toBe(0);
  });
});
