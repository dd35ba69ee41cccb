/**
 * Drafts from the command line (issue 14): `generate --draft`, `review JOB approve 1,3`, then
 * `upscale JOB`, run in this process (runCli) with the local provider (half-size drafts, sharp upscaler).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Manifest } from '../src/core/manifest.js';
import { tempDir } from './helpers.js';
import { cliInProcess } from './cli-in-process.js';

afterEach(() => {
  vi.restoreAllMocks();
});


describe('art-factory generate --draft / review / upscale', () => {
  it('makes drafts, reviews them by number, and upscales exactly the approved ones into final/', async () => {
    const dir = await tempDir('af-cli-upscale-');
    const env = {
      HOME: dir,
      STORE_URL: `sqlite://${path.join(dir, 'store.sqlite')}`,
      OUTPUT_DIR: path.join(dir, 'output'),
      TENANT_RATE_LIMIT: '',
      LOG_LEVEL: 'silent',
    };
    const made = await cliInProcess(['generate', '--prompt', 'a red fox', '--count', '4', '--draft', '--provider', 'local'], env);
    expect(made.code).toBe(0);
    const manifestPath = made.stdout.trim();
    const jobId = path.basename(path.dirname(manifestPath));
    const drafts = JSON.parse(await readFile(manifestPath, 'utf8')) as Manifest;
    expect(drafts.parameters.draft).toBe(true);
    expect(drafts.images.map((image) => image.width)).toEqual([384, 384, 384, 384]);

    const reviewed = await cliInProcess(['review', jobId, 'approve', '1,3-4'], env);
    expect(reviewed.code).toBe(0);
    expect(reviewed.stderr).toContain('✅ 3 approved');
    expect(reviewed.stderr).toContain(`3 approved drafts to upscale: art-factory upscale ${jobId}`);
    expect((await cliInProcess(['review', jobId, 'reject', '4'], env)).code).toBe(0);

    const upscaled = await cliInProcess(['upscale', jobId], env);
    expect(upscaled.code).toBe(0);
    expect(upscaled.stderr).toContain(`Job ${jobId}: upscaling 2 approved images`);
    const manifest = JSON.parse(await readFile(upscaled.stdout.trim(), 'utf8')) as Manifest;
    expect(manifest.images.map((image) => image.final?.file ?? null)).toEqual(['final/001.png', null, 'final/003.png', null]);
    expect(manifest.images[0]!.final!.width).toBe(768);

    const bad = await cliInProcess(['review', jobId, 'approve', '3-1'], env);
    expect([bad.code, bad.stderr.trim()]).toEqual([2, 'art-factory: image numbers: expected image numbers from 1 to 4 such as 1-4, got "3-1"']);
    const nothing = await cliInProcess(['upscale', jobId], env);
    expect(nothing.code).not.toBe(0);
    expect(nothing.stderr).toContain(`Every approved image of job ${jobId} is upscaled already.`);
  });
});
