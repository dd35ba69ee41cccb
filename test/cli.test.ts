import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startFakeFal } from './fakes/fal.js';
import { startFakeCivitai } from './fakes/civitai.js';
import { startFakeOpenAI } from './fakes/openai.js';
import { startFakeReplicate } from './fakes/replicate.js';
import { startFakeStability } from './fakes/stability.js';
import { onCleanup, tempDir } from './helpers.js';

const BIN = path.resolve('bin/art-factory.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], env: Record<string, string> = {}): Promise<Run & { dir: string }> {
  const dir = await tempDir('af-cli-');
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        // Only what the command needs: no tokens leak in from the developer's shell.
        env: { PATH: process.env.PATH ?? '', HOME: dir, STORE_URL: `sqlite://${dir}/store.sqlite`, OUTPUT_DIR: `${dir}/out`, ...env },
        timeout: 60_000,
      },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr, dir }),
    );
  });
}

describe('art-factory generate', () => {
  it('with no keys writes 10 images from 3 local calls and prints the manifest path', async () => {
    const run = await cli(['generate', '--prompt', 'a red fox', '--count', '10']);
    expect(run.code).toBe(0);
    const manifestPath = run.stdout.trim();
    expect(manifestPath).toMatch(new RegExp(`^${run.dir}/out/\\d{8}-[0-9a-f]{8}/manifest\\.json$`));
    const { default: manifest } = await import(manifestPath, { with: { type: 'json' } });
    expect(manifest.batches.map((b: { size: number }) => b.size)).toEqual([4, 4, 2]);
    expect(manifest.provider).toBe('local');
    expect(await readdir(path.join(path.dirname(manifestPath), 'pending-review'))).toHaveLength(10);
    expect(run.stderr).toContain('Batch 3/3 · 10/10 images');
  });

  it('honours --out, --ar and --seed', async () => {
    const out = await tempDir('af-out-');
    const run = await cli(['generate', '--prompt', 'a fox', '--count', '1', '--ar', '9:16', '--seed', '9', '--out', out]);
    expect(run.code).toBe(0);
    expect(run.stdout.startsWith(out)).toBe(true);
    const { default: manifest } = await import(run.stdout.trim(), { with: { type: 'json' } });
    expect(manifest.parameters).toEqual({ count: 1, aspectRatio: '9:16', seed: 9, format: 'png', quality: null, draft: false, loras: [] });
    expect(manifest.images[0]).toMatchObject({ width: 576, height: 1024, seed: 9 });
  });

  it.each([
    [['generate', '--prompt', 'fox', '--count', '0'], 'art-factory: Expected `count` to be an integer from 1 to 100, got `0`.'],
    [['generate', '--count', '3'], 'art-factory: Give `prompt`, or a `prompts` file with one prompt per line.'],
    [['generate', '--prompt', 'fox', '--provider', 'fal'], 'art-factory: Provider `fal` is not configured on this bot; available: local.'],
    [['generate', '--prompt', 'fox', '--colour', 'red'], "art-factory: Unknown option '--colour'"],
    [['paint'], 'art-factory: unknown command "paint"'],
  ])('exits 2 with a one-line reason for %j', async (args, message) => {
    const run = await cli(args);
    expect(run.code).toBe(2);
    expect(run.stderr.split('\n')[0]).toContain(message);
    expect(run.stdout).toBe('');
  });

  it('exits 2 naming the variable when the configuration is bad, without echoing secrets', async () => {
    const run = await cli(['generate', '--prompt', 'fox'], { FAL_CONCURRENCY: 'lots' });
    expect(run.code).toBe(2);
    expect(run.stderr.trim()).toBe('art-factory: FAL_CONCURRENCY: expected an integer from 1 to 1000, got "lots"');
  });

  it('with FAL_KEY and FAL_BASE_URL makes exactly 3 submits of 4, 4 and 2 and saves 10 images', async () => {
    const fake = await startFakeFal({ key: 'k-id:k-secret' });
    onCleanup(() => fake.close());
    const run = await cli(['generate', '--prompt', 'a red fox', '--count', '10'], { FAL_KEY: 'k-id:k-secret', FAL_BASE_URL: fake.url });
    expect(run.code).toBe(0);
    expect(fake.submits().map((c) => (c.body as { num_images: number }).num_images).sort()).toEqual([2, 4, 4]);
    expect(await readdir(path.join(path.dirname(run.stdout.trim()), 'pending-review'))).toHaveLength(10);
    expect(run.stderr).not.toContain('k-secret');
  });

  it('with REPLICATE_API_TOKEN and REPLICATE_BASE_URL makes exactly 3 creates of 4, 4 and 2', async () => {
    const fake = await startFakeReplicate({ key: 'r8-cli' });
    onCleanup(() => fake.close());
    const run = await cli(['generate', '--prompt', 'a red fox', '--count', '10'], { REPLICATE_API_TOKEN: 'r8-cli', REPLICATE_BASE_URL: fake.url });
    expect(run.code).toBe(0);
    expect(fake.submits().map((c) => (c.body as { input: { num_outputs: number } }).input.num_outputs).sort()).toEqual([2, 4, 4]);
    expect(await readdir(path.join(path.dirname(run.stdout.trim()), 'pending-review'))).toHaveLength(10);
  });

  it('with STABILITY_API_KEY makes one call per image: 3 images are 3 generations', async () => {
    const fake = await startFakeStability({ key: 'sk-stability-cli' });
    onCleanup(() => fake.close());
    const run = await cli(['generate', '--provider', 'stability', '--prompt', 'a red fox', '--count', '3', '--ar', '16:9'], {
      STABILITY_API_KEY: 'sk-stability-cli',
      STABILITY_BASE_URL: fake.url,
    });
    expect(run.code).toBe(0);
    expect(fake.generations.map((g) => g.fields.aspect_ratio)).toEqual(['16:9', '16:9', '16:9']);
    expect(await readdir(path.join(path.dirname(run.stdout.trim()), 'pending-review'))).toHaveLength(3);
    expect(run.stderr).not.toContain('sk-stability-cli');
  });

  it('with OPENAI_API_KEY asks gpt-image-1 for 3 images in one call', async () => {
    const fake = await startFakeOpenAI({ key: 'sk-openai-cli' });
    onCleanup(() => fake.close());
    const run = await cli(['generate', '--provider', 'openai', '--prompt', 'a red fox', '--count', '3'], { OPENAI_API_KEY: 'sk-openai-cli', OPENAI_BASE_URL: fake.url });
    expect(run.code).toBe(0);
    expect(fake.submits().map((c) => (c.body as { n: number }).n)).toEqual([3]);
    expect(await readdir(path.join(path.dirname(run.stdout.trim()), 'pending-review'))).toHaveLength(3);
  });

  it('with CIVITAI_API_TOKEN submits one job of 3 images and downloads them', async () => {
    const fake = await startFakeCivitai({ key: 'civitai-cli-token' });
    onCleanup(() => fake.close());
    const run = await cli(['generate', '--provider', 'civitai', '--prompt', 'a red fox', '--count', '3'], { CIVITAI_API_TOKEN: 'civitai-cli-token', CIVITAI_BASE_URL: fake.url });
    expect(run.code).toBe(0);
    expect(fake.submits()).toHaveLength(1);
    expect(await readdir(path.join(path.dirname(run.stdout.trim()), 'pending-review'))).toHaveLength(3);
  });

  it('exits 1 with the reason when every batch fails', async () => {
    const fake = await startFakeFal({ key: 'right-key' });
    onCleanup(() => fake.close());
    const run = await cli(['generate', '--prompt', 'fox', '--count', '4'], { FAL_KEY: 'wrong-key', FAL_BASE_URL: fake.url });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/art-factory: job \S+ failed: all 4 images failed: fal refused the credentials \(HTTP 401\)/);
    expect(run.stderr).not.toContain('wrong-key');
    expect(run.stdout).toBe('');
  });
});

describe('art-factory deploy-commands', () => {
  it('registers /imagine, /jobs and /settings on the guild named by DISCORD_GUILD_ID', async () => {
    const { startFakeDiscord } = await import('./fakes/discord.js');
    const fake = await startFakeDiscord({ token: 'deploy-token' });
    onCleanup(() => fake.close());
    const run = await cli(['deploy-commands'], {
      DISCORD_TOKEN: 'deploy-token',
      DISCORD_APP_ID: fake.applicationId,
      DISCORD_GUILD_ID: fake.defaultGuildId!,
      DISCORD_API_URL: fake.apiUrl,
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe(`Registered 3 commands on guild ${fake.defaultGuildId}.`);
    expect(fake.commands(fake.defaultGuildId!).map((c) => c.name).sort()).toEqual(['imagine', 'jobs', 'settings']);
  });

  it('exits 2 when Discord is not configured', async () => {
    const run = await cli(['deploy-commands']);
    expect(run.code).toBe(2);
    expect(run.stderr.trim()).toBe('art-factory: deploy-commands needs DISCORD_TOKEN and DISCORD_APP_ID');
  });
});
