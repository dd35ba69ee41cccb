/**
 * setAside: a rerolled image's file renamed inside its folder (rejected/003.png → rejected/003.reroll-1.png),
 * on disk and in an S3-compatible bucket (the fake S3 on loopback, the real AWS SDK), so the image that
 * takes its slot can be rejected in turn without overwriting it.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ImageFiles } from '../../src/store/files.js';
import { openS3ImageStore } from '../../src/store/s3.js';
import { fakeImage } from '../fakes/png.js';
import { startFakeS3 } from '../fakes/s3.js';
import { onCleanup, tempDir } from '../helpers.js';

const JOB = '20250101-abcdef01';

describe('setAside', () => {
  it('renames an image on disk inside its folder, keeping its extension; a repeated rename finds it renamed', async () => {
    const files = new ImageFiles(await tempDir('af-aside-'));
    const { file } = await files.writeImage(JOB, '003', await fakeImage(32, 32, 'png', 'fox'));
    const rejected = await files.moveTo(JOB, file, 'rejected');
    expect(await files.setAside(JOB, rejected, '003.reroll-1')).toBe('rejected/003.reroll-1.png');
    expect(await readdir(path.join(files.jobDir(JOB), 'rejected'))).toEqual(['003.reroll-1.png']);
    // an attempt that crashed after the rename but before the job was saved
    expect(await files.setAside(JOB, rejected, '003.reroll-1')).toBe('rejected/003.reroll-1.png');
  });

  it('renames an image in the bucket (copy, then delete) and in its cache', async () => {
    const s3 = await startFakeS3();
    onCleanup(() => s3.close());
    const cache = await tempDir('af-aside-s3-');
    const images = await openS3ImageStore({ bucket: s3.bucket, endpoint: s3.url, region: s3.region, prefix: 'af/' }, cache, {
      client: { credentials: s3.credentials },
    });
    onCleanup(() => images.close());
    const { file } = await images.writeImage(JOB, '003', await fakeImage(32, 32, 'png', 'fox'));
    const rejected = await images.moveTo(JOB, file, 'rejected');
    expect(await images.setAside(JOB, rejected, '003.reroll-1')).toBe('rejected/003.reroll-1.png');
    expect(s3.keys()).toEqual([`af/${JOB}/rejected/003.reroll-1.png`]);
    expect(await readdir(path.join(cache, JOB, 'rejected'))).toEqual(['003.reroll-1.png']);
    expect((await images.read(JOB, 'rejected/003.reroll-1.png')).length).toBeGreaterThan(0);
  });
});
