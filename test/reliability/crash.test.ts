/**
 * Crash and restart: the real bot as a child process, a 100-image job against the fal fake, killed
 * with SIGKILL at five moments and restarted over the same store and output folder each time.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/core/manifest.js';
import { botEnv, startBotProcess, until, type BotProcess } from '../bot-process.js';
import { startFakeFal, type FakeFal } from '../fakes/fal.js';
import { onCleanup, tempDir } from '../helpers.js';

describe('crash and restart', () => {
  it('survives SIGKILL before a submit, after a submit, mid-poll, mid-download and mid-review', async () => {
    const fake: FakeFal = await startFakeFal({ key: 'k', latencyMs: 150 });
    onCleanup(() => fake.close());
    const dir = await tempDir('af-crash-');
    const env = botEnv(dir, { FAL_KEY: 'k', FAL_BASE_URL: fake.url, FAL_CONCURRENCY: '4', PROVIDER_TIMEOUT: '20' });
    const start = () => startBotProcess(env);
    const kill = (bot: BotProcess) => bot.kill('SIGKILL');
    const accepted = () => fake.submits().filter((c) => !c.fault).length;
    let jobId = '';
    const state = (bot: BotProcess) => bot.job(jobId);
    const review = (bot: BotProcess, image: number, status: string) =>
      bot.post(`/api/jobs/${jobId}/images/${image}/review`, { status });

    // 1. before a submit: the first submit hangs in flight, never accepted
    fake.inject({ on: 'submit', fault: { kind: 'hang' } });
    let bot = await start();
    const answer = await bot.post('/api/command', { text: '/imagine a crash-proof fox --count 100' });
    jobId = ((await answer.json()) as { job: { id: string } }).job.id;
    await until(() => fake.calls.some((c) => c.fault === 'hang'), 'the hanging submit');
    await kill(bot);

    // 2. right after a submit is accepted, before we can save its id
    bot = await start();
    const before = accepted();
    await until(() => accepted() > before, 'an accepted submit');
    await kill(bot);

    // 3. mid-poll
    bot = await start();
    const polls = fake.calls.length;
    await until(() => fake.calls.slice(polls).some((c) => c.path.endsWith('/status')), 'a status poll');
    await kill(bot);

    // 4. mid-download: one image download hangs
    fake.inject({ on: 'file', fault: { kind: 'hang' } });
    bot = await start();
    const downloads = fake.calls.length;
    await until(() => fake.calls.slice(downloads).some((c) => c.fault === 'hang' && c.path.startsWith('/files/')), 'a hanging download');
    await kill(bot);

    // 5. mid-review: two reviews land, the third is cut off
    bot = await start();
    const current = bot;
    await until(async () => ((await state(current))?.images.length ?? 0) >= 12, '12 images');
    expect((await review(bot, 1, 'approved')).status).toBe(200);
    expect((await review(bot, 2, 'rejected')).status).toBe(200);
    void review(bot, 3, 'approved').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 5));
    await kill(bot);

    // the last start finishes the job
    bot = await start();
    const last = bot;
    await until(async () => (await state(last))?.state === 'completed', 'the job to complete', 60_000);
    expect(await last.kill('SIGTERM')).toBe(0);

    const jobDir = path.join(dir, 'out', jobId);
    const { default: manifest } = (await import(path.join(jobDir, 'manifest.json'), { with: { type: 'json' } })) as { default: Manifest };
    expect(manifest.state).toBe('completed');
    expect(manifest.summary.delivered).toBe(100);
    expect(manifest.images.map((i) => i.index)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(manifest.images[0]!.review.status).toBe('approved');
    expect(manifest.images[1]!.review.status).toBe('rejected');

    const files: string[] = [];
    for (const folder of ['pending-review', 'approved', 'rejected']) {
      for (const name of await readdir(path.join(jobDir, folder)).catch(() => [] as string[])) files.push(path.join(folder, name));
    }
    expect(files.filter((f) => f.includes('.part-'))).toEqual([]);
    expect(files.sort()).toEqual(manifest.images.map((i) => i.file).sort());
    for (const file of files) {
      const meta = await sharp(path.join(jobDir, file)).metadata();
      expect(meta.width).toBeGreaterThan(0);
    }
    const extraSubmits = accepted() - 25;
    expect(extraSubmits).toBeGreaterThanOrEqual(0);
    expect(extraSubmits).toBeLessThanOrEqual(5);
    await mkdir('test-results', { recursive: true });
    await writeFile('test-results/crash.json', JSON.stringify({ kills: 5, acceptedSubmits: accepted(), extraSubmits }, null, 2));
  }, 180_000);
});
