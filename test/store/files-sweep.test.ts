import { mkdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ImageFiles, TEMP_MARK } from '../../src/store/files.js';
import { filesIn, tempDir } from '../helpers.js';

describe('sweeping what a crash left half-written', () => {
  it('removes every temp file in one process, and only stale ones when other processes may be writing', async () => {
    const dir = await tempDir();
    const files = new ImageFiles(dir);
    const pending = path.join(files.jobDir('job-1'), 'pending-review');
    await mkdir(pending, { recursive: true });
    const stale = `001.png${TEMP_MARK}aaaa`;
    const fresh = `002.png${TEMP_MARK}bbbb`;
    for (const name of [stale, fresh, '003.png']) await writeFile(path.join(pending, name), 'x');
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(path.join(pending, stale), hourAgo, hourAgo);

    // distributed mode: another process may be writing 002 right now
    expect(await files.sweep('job-1', 30 * 60_000)).toBe(1);
    expect(await filesIn({ files } as never, 'job-1', 'pending-review')).toEqual(['002.png.part-bbbb', '003.png']);
    // one process: nothing else writes here, so every temp file is a leftover
    expect(await files.sweep('job-1')).toBe(1);
    expect(await filesIn({ files } as never, 'job-1', 'pending-review')).toEqual(['003.png']);
  });
});
