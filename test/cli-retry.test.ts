/**
 * `art-factory retry JOB` and `art-factory reroll JOB N`, run in this process (runCli) against the
 * fake fal queue and the same store and output folder a bot wrote the job into.
 */
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startFakeFal, type FakeFal } from './fakes/fal.js';
import { buildApp, filesIn, onCleanup, readManifest, requester, tempDir } from './helpers.js';
import { cliInProcess } from './cli-in-process.js';

afterEach(() => {
  vi.restoreAllMocks();
});


async function setUp(): Promise<{ fake: FakeFal; dir: string; env: Record<string, string> }> {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 5 });
  onCleanup(() => fake.close());
  const dir = await tempDir('af-cli-retry-');
  const env = {
    HOME: dir,
    STORE_URL: `sqlite://${path.join(dir, 'store.sqlite')}`,
    OUTPUT_DIR: path.join(dir, 'output'),
    FAL_KEY: 'fal-test-key',
    FAL_BASE_URL: fake.url,
    FAL_CONCURRENCY: '1',
    PROVIDER_MAX_ATTEMPTS: '1',
    CACHE: 'off',
    TENANT_RATE_LIMIT: '',
    LOG_LEVEL: 'silent',
  };
  return { fake, dir, env };
}

const REQUEST = { prompt: 'a red fox', count: 6, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1', seed: 100 } as const;

describe('art-factory retry / reroll', () => {
  it('retry makes only the failed images, with their seeds, and prints the manifest; reroll makes one with a new seed', async () => {
    const { fake, dir, env } = await setUp();
    // the job as a bot ran it: the second call (images 5–6, seed 104) fails for good
    const app = await buildApp({ dir, env });
    fake.inject({ on: 'submit', fault: { kind: 'failed', message: 'model crashed' }, after: 1 });
    const job = await app.engine.waitFor((await app.engine.submit(REQUEST, requester())).id);
    expect(job.images.map((image) => image.index)).toEqual([1, 2, 3, 4]);
    await app.close();

    const retried = await cliInProcess(['retry', job.id], env);
    expect(retried.code).toBe(0);
    expect(retried.stderr.split('\n')[0]).toBe(`Job ${job.id}: making 2 failed images again`);
    expect(retried.stderr).toMatch(/6\/6 images\n$/);
    expect(retried.stdout.trim()).toBe(path.join(dir, 'output', job.id, 'manifest.json'));
    const bodies = fake.submits().map((call) => call.body as { num_images: number; seed: number });
    expect(bodies.map((b) => [b.num_images, b.seed])).toEqual([
      [4, 100],
      [2, 104],
      [2, 104],
    ]);

    const again = await buildApp({ dir, env });
    await again.engine.review(job.id, 3, 'rejected', { id: 'user-1' });
    expect((await readManifest(again, job.id)).summary).toMatchObject({ delivered: 6, failed: 0, rejected: 1 });
    await again.close();

    const rerolled = await cliInProcess(['reroll', job.id, '3'], env);
    expect(rerolled.code).toBe(0);
    const last = fake.submits().at(-1)!.body as { num_images: number; seed: number };
    expect(last.num_images).toBe(1);
    expect(last.seed).not.toBe(102);
    const reader = await buildApp({ dir, env });
    expect(await filesIn(reader, job.id, 'rejected')).toEqual(['003.reroll-1.png']);
    expect((await readManifest(reader, job.id)).images[2]).toMatchObject({ index: 3, seed: last.seed, review: { status: 'pending' } });
  });

  it('answers bad arguments and a refusal with one line and a non-zero exit', async () => {
    const { env } = await setUp();
    expect(await cliInProcess(['retry'], env)).toMatchObject({ code: 2, stderr: 'art-factory: usage: art-factory retry JOB (JOB is a job id such as 20260101-0a1b2c3d)\n' });
    expect((await cliInProcess(['reroll', '20260101-0a1b2c3d', 'x'], env)).stderr).toBe('art-factory: Expected N to be an image number (1, 2, …), got "x"\n');
    expect(await cliInProcess(['retry', '20260101-0a1b2c3d'], env)).toMatchObject({ code: 2, stderr: 'art-factory: Job 20260101-0a1b2c3d does not exist (any more).\n' });
  });
});
