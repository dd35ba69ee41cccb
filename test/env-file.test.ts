/**
 * `.env` in the working folder: the bin (what `npm start` and `npx art-factory` run) reads it with node's
 * own loader before the config loads; the real environment wins; a malformed file stops with one line.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

const BIN = path.resolve('bin/art-factory.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The bin run in `cwd`, with only PATH and HOME from this process plus `env`. */
function cli(cwd: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd, env: { PATH: process.env.PATH ?? '', HOME: cwd, ...env }, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('.env in the working folder', () => {
  it('is read: its STORE_URL, OUTPUT_DIR and MAX_IMAGES_PER_JOB are used (comments, export and a quoted multi-line value are fine)', async () => {
    const dir = await tempDir('af-env-');
    await writeFile(
      path.join(dir, '.env'),
      [
        '# copied from .env.example',
        `STORE_URL=sqlite://${dir}/dotenv.sqlite`,
        '',
        'NOTE="a value',
        'over two lines"',
        `export OUTPUT_DIR=${dir}/from-dotenv`,
        'MAX_IMAGES_PER_JOB=3 # the cap for this test',
      ].join('\n'),
    );

    const made = await cli(dir, ['generate', '--prompt', 'a fox', '--count', '1']);
    expect(made.stderr).not.toContain('.env');
    expect(made.code).toBe(0);
    expect(made.stdout.trim()).toMatch(new RegExp(`^${dir}/from-dotenv/\\S+/manifest\\.json$`));
    expect(existsSync(path.join(dir, 'dotenv.sqlite'))).toBe(true);

    const refused = await cli(dir, ['generate', '--prompt', 'a fox', '--count', '4']);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toBe('art-factory: Expected `count` to be an integer from 1 to 3, got `4`.');
  });

  it('never overrides a variable already in the environment', async () => {
    const dir = await tempDir('af-env-');
    await writeFile(
      path.join(dir, '.env'),
      [`STORE_URL=sqlite://${dir}/store.sqlite`, `OUTPUT_DIR=${dir}/from-dotenv`, 'MAX_IMAGES_PER_JOB=3'].join('\n'),
    );

    const run = await cli(dir, ['generate', '--prompt', 'a fox', '--count', '5'], { OUTPUT_DIR: `${dir}/from-env`, MAX_IMAGES_PER_JOB: '6' });
    expect(run.stderr).not.toContain('Expected `count`');
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toMatch(new RegExp(`^${dir}/from-env/\\S+/manifest\\.json$`));
    expect(existsSync(path.join(dir, 'from-dotenv'))).toBe(false);
    // the file's other variables still apply
    expect(existsSync(path.join(dir, 'store.sqlite'))).toBe(true);
  });

  it('stops a malformed file with one line naming the line, loads nothing and echoes no secret', async () => {
    const dir = await tempDir('af-env-');
    await writeFile(
      path.join(dir, '.env'),
      ['# Discord', `OUTPUT_DIR=${dir}/from-dotenv`, 'DISCORD_TOKEN mfa.secret-token-value', `STORE_URL=sqlite://${dir}/store.sqlite`].join('\n'),
    );

    const run = await cli(dir, ['generate', '--prompt', 'a fox', '--count', '1']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      'art-factory: .env line 3: expected NAME=value (NAME of letters, digits and _, not starting with a digit), a # comment or a blank line; nothing was loaded from .env\n',
    );
    expect(run.stderr).not.toContain('secret-token-value');
    // nothing was started: no store and no output folder, neither from the file nor the defaults
    expect(existsSync(path.join(dir, 'store.sqlite'))).toBe(false);
    expect(existsSync(path.join(dir, 'from-dotenv'))).toBe(false);
    expect(existsSync(path.join(dir, 'data'))).toBe(false);
  });

  it('stops with one line when .env is a folder', async () => {
    const dir = await tempDir('af-env-');
    await mkdir(path.join(dir, '.env'));
    const run = await cli(dir, ['generate', '--prompt', 'a fox', '--count', '1']);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('art-factory: .env is a folder; it must be a file of NAME=value lines\n');
    expect(existsSync(path.join(dir, 'data'))).toBe(false);
  });

  it('is optional: without one the bot runs on its defaults, relative to the working folder', async () => {
    const dir = await tempDir('af-env-');
    const run = await cli(dir, ['generate', '--prompt', 'a fox', '--count', '1']);
    expect(run.code).toBe(0);
    expect(path.resolve(dir, run.stdout.trim())).toMatch(new RegExp(`^${dir}/data/output/\\S+/manifest\\.json$`));
  });
});
