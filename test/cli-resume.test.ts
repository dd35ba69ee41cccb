/**
 * `art-factory resume` finishes a job in the folder it was started with: an interrupted
 * `generate --out DIR` ends with every image and the manifest in DIR, whatever OUTPUT_DIR says now.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

const BIN = path.resolve('bin/art-factory.js');

function run(args: string[], env: Record<string, string>, interruptWhen?: (stderr: string) => boolean): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env } });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (interruptWhen && !sent && interruptWhen(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

describe('art-factory resume', () => {
  it('finishes an interrupted `generate --out DIR` into DIR: all images and the manifest there', async () => {
    const home = await tempDir('af-resume-');
    const out = await tempDir('af-resume-out-');
    const env = {
      HOME: home,
      STORE_URL: `sqlite://${home}/store.sqlite`,
      OUTPUT_DIR: `${home}/default-out`,
      LOCAL_LATENCY_MS: '150',
      LOCAL_CONCURRENCY: '1',
    };
    const first = await run(['generate', '--prompt', 'a fox', '--count', '12', '--out', out], env, (text) => /Batch 1\/3/.test(text));
    expect(first.code).toBe(130);
    const jobId = /Job (\S+):/.exec(first.stderr)![1]!;
    const before = await readdir(path.join(out, jobId, 'pending-review'));
    expect(before.length).toBeGreaterThan(0);
    expect(before.length).toBeLessThan(12);

    const second = await run(['resume'], env);
    expect(second.code).toBe(0);
    expect(second.stdout.trim()).toBe(path.join(out, jobId, 'manifest.json'));
    expect((await readdir(path.join(out, jobId, 'pending-review'))).sort()).toEqual(
      Array.from({ length: 12 }, (_, i) => `${String(i + 1).padStart(3, '0')}.png`),
    );
    const manifest = JSON.parse(await readFile(path.join(out, jobId, 'manifest.json'), 'utf8')) as { state: string; images: unknown[] };
    expect(manifest).toMatchObject({ state: 'completed' });
    expect(manifest.images).toHaveLength(12);
    // nothing went to the folder OUTPUT_DIR names today
    expect(await readdir(path.join(home, 'default-out')).catch(() => [])).toEqual([]);
  });
});
