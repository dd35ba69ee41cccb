/**
 * /settings in the playground over HTTP (its local user may change them) and in the CLI as a child
 * process (the operator may), each followed by a job that takes the new defaults.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startPlayground } from '../../../src/chat/playground/index.js';
import { buildApp, onCleanup, tempDir } from '../../helpers.js';

const JSON_TYPE = { 'content-type': 'application/json' };

async function playground() {
  const app = await buildApp({ env: { LOCAL_CONCURRENCY: '1' } });
  const pg = await startPlayground(app, { port: 0 });
  onCleanup(() => pg.stop());
  const command = async (text: string) => {
    const response = await fetch(`${pg.url}/api/command`, { method: 'POST', headers: JSON_TYPE, body: JSON.stringify({ text }) });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };
  return { app, command };
}

describe('playground /settings', () => {
  it('the local user sets the defaults and the next /imagine without options takes them', async () => {
    const { app, command } = await playground();
    const changed = await command('/settings count 3 ar 16:9 format webp drafts on');
    expect(changed.status).toBe(200);
    expect(changed.body.reply).toMatch(/^Changed: ar default → 16:9, count default → 3, format default → webp, drafts default → on\./);

    const started = await command('/imagine a lantern in fog');
    expect(started.status).toBe(200);
    const job = await app.engine.waitFor(started.body.job.id);
    expect(job.request).toMatchObject({ count: 3, aspectRatio: '16:9' });
    // The format is a default of the request like the others (the /imagine option of the same name).
    expect(job.request.format).toBe('webp');
    expect(job.images).toHaveLength(3);
  });

  it('answers a bad value with 400 and one line, and changes nothing', async () => {
    const { app, command } = await playground();
    const answer = await command('/settings plan gold');
    expect(answer).toEqual({ status: 400, body: { error: '`plan`: expected one of free, pro, business (or default), got `gold`. Nothing was changed.' } });
    expect((await app.settings.read('playground')).values).toEqual({});
  });
});

const BIN = path.resolve('bin/art-factory.js');

function cli(dir: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { PATH: process.env.PATH ?? '', HOME: dir, STORE_URL: `sqlite://${dir}/store.sqlite`, OUTPUT_DIR: `${dir}/out` }, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('art-factory settings', () => {
  it('the operator changes a tenant’s settings, a bad value exits 2 with one line, and generate for that tenant takes them', async () => {
    const dir = await tempDir('af-cli-settings-');
    const set = await cli(dir, ['settings', '--tenant', 'guild-7', 'count', '5', 'ar', '9:16']);
    expect(set.code).toBe(0);
    expect(set.stdout).toMatch(/^Changed: ar default → 9:16, count default → 5\./);

    const bad = await cli(dir, ['settings', '--tenant', 'guild-7', 'count', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('art-factory: `count`: expected an integer from 1 to 100 (or default), got `0`. Nothing was changed.\n');

    const shown = await cli(dir, ['settings', '--tenant', 'guild-7']);
    expect(shown.stdout).toContain('count: 5\n');
    expect(shown.stdout).toContain('ar: 9:16\n');
    expect(shown.stdout).toContain('provider: local (default)');

    const made = await cli(dir, ['generate', '--prompt', 'a tall tower', '--tenant', 'guild-7']);
    expect(made.code).toBe(0);
    const { default: manifest } = await import(made.stdout.trim(), { with: { type: 'json' } });
    expect(manifest.images).toHaveLength(5);
    expect(manifest.images.every((image: { width: number; height: number }) => image.height > image.width)).toBe(true);
  }, 60_000);
});
