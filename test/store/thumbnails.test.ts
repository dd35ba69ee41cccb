/**
 * Review-page thumbnails: WebP, made once per image and kept in `<jobDir>/.thumbs/`, made again when a
 * reroll replaces the image, kept across a review's move, and never for a path outside the job.
 */
import { readdir, readFile, rename, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ImageFiles } from '../../src/store/files.js';
import { Thumbnails, UnsafeFileError } from '../../src/store/thumbnails.js';
import { fakeImage, solidImage } from '../fakes/png.js';
import { rejectionOf, tempDir } from '../helpers.js';

const JOB = '20250101-abcdef01';

async function jobWithImage(image?: Buffer): Promise<{ files: ImageFiles; dir: string; file: string }> {
  const files = new ImageFiles(await tempDir('af-thumbs-'));
  const { file } = await files.writeImage(JOB, '003', image ?? (await fakeImage(1024, 768, 'png', 'fox')));
  return { files, dir: files.jobDir(JOB), file };
}

/** The thumbnail's average colour, to tell which picture it was made from. */
async function meanColour(file: string): Promise<number[]> {
  // Bytes, not the path: libvips would answer a second read of the same name from its cache.
  const { channels } = await sharp(await readFile(file)).stats();
  return channels.slice(0, 3).map((c) => Math.round(c.mean));
}

describe('Thumbnails', () => {
  it('makes a WebP no larger than 320 px once, and answers later requests from it without rewriting it', async () => {
    const { dir, file } = await jobWithImage();
    const thumbs = new Thumbnails();

    const first = await thumbs.thumbnail(dir, file);
    expect(file).toBe(path.join('pending-review', '003.png'));
    expect(first.path).toBe(path.join(dir, '.thumbs', '003.webp'));
    const meta = await sharp(first.path).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['webp', 320, 240]);
    expect(first.bytes).toBe((await stat(first.path)).size);

    const before = await stat(first.path);
    const second = await thumbs.thumbnail(dir, file);
    const after = await stat(second.path);
    expect(second).toEqual(first);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(thumbs.renders).toBe(1);
    // a new instance (a restart) finds it too
    const restarted = new Thumbnails();
    await restarted.thumbnail(dir, file);
    expect(restarted.renders).toBe(0);
  });

  it('does not enlarge a small image', async () => {
    const { dir, file } = await jobWithImage(await fakeImage(200, 100, 'png', 'small'));
    const { path: made } = await new Thumbnails().thumbnail(dir, file);
    const meta = await sharp(made).metadata();
    expect([meta.width, meta.height]).toEqual([200, 100]);
  });

  it('makes the thumbnail again when a reroll replaces the image', async () => {
    const { dir, file } = await jobWithImage(await solidImage(512, 512, 'png', [220, 20, 20]));
    const thumbs = new Thumbnails();
    const first = await thumbs.thumbnail(dir, file);
    expect(await meanColour(first.path)).toEqual([220, 20, 20].map((v) => expect.closeTo(v, -1)));

    // A reroll writes a new file under the same name (temp + rename, as ImageFiles does). Its mtime is
    // moved on explicitly: some file systems keep whole seconds, and the test must not depend on that.
    const source = path.join(dir, file);
    await writeFile(`${source}.new`, await solidImage(512, 512, 'png', [20, 20, 220]));
    const later = new Date((await stat(source)).mtimeMs + 5_000);
    await utimes(`${source}.new`, later, later);
    await rename(`${source}.new`, source);

    const second = await thumbs.thumbnail(dir, file);
    expect(second.path).toBe(first.path);
    expect(thumbs.renders).toBe(2);
    expect(await meanColour(second.path)).toEqual([20, 20, 220].map((v) => expect.closeTo(v, -1)));
    await thumbs.thumbnail(dir, file);
    expect(thumbs.renders).toBe(2);
  });

  it('keeps using the thumbnail after a review moves the image to another folder', async () => {
    const { files, dir, file } = await jobWithImage();
    const thumbs = new Thumbnails();
    const made = await thumbs.thumbnail(dir, file);
    const before = await stat(made.path);

    const approved = await files.moveTo(JOB, file, 'approved');
    expect(approved).toBe(path.join('approved', '003.png'));
    const again = await thumbs.thumbnail(dir, approved);
    expect(again.path).toBe(made.path);
    expect((await stat(again.path)).ino).toBe(before.ino);
    expect(thumbs.renders).toBe(1);
  });

  it('gives an upscaled image in final/ its own thumbnail', async () => {
    const { files, dir, file } = await jobWithImage(await solidImage(512, 512, 'png', [220, 20, 20]));
    const upscaled = await files.writeImage(JOB, '003', await solidImage(1024, 1024, 'png', [20, 220, 20]), { format: 'png', folder: 'final' });
    const thumbs = new Thumbnails();

    const draft = await thumbs.thumbnail(dir, file);
    const final = await thumbs.thumbnail(dir, upscaled.file);
    expect(final.path).toBe(path.join(dir, '.thumbs', 'final', '003.webp'));
    expect(await meanColour(draft.path)).toEqual([220, 20, 20].map((v) => expect.closeTo(v, -1)));
    expect(await meanColour(final.path)).toEqual([20, 220, 20].map((v) => expect.closeTo(v, -1)));
  });

  it('refuses a file outside the job folder, reading and writing nothing', async () => {
    const { dir } = await jobWithImage();
    // a picture beside the job folder, which a path climbing out of it would reach
    await writeFile(path.join(dir, '..', 'x.png'), await fakeImage(64, 64, 'png', 'outside'));
    const thumbs = new Thumbnails();

    for (const bad of ['../x.png', 'pending-review/../../x.png', path.join(dir, '..', 'x.png'), '/etc/passwd', '.thumbs/003.webp', '', 'manifest.json/..']) {
      const error = await rejectionOf(thumbs.thumbnail(dir, bad));
      expect(error, bad).toBeInstanceOf(UnsafeFileError);
      expect(String(error)).toContain('not an image of this job');
    }
    expect(thumbs.renders).toBe(0);
    expect(await readdir(dir)).not.toContain('.thumbs');
  });

  it('rejects with ENOENT for an image that is not there, and leaves nothing behind', async () => {
    const { dir } = await jobWithImage();
    const error = (await rejectionOf(new Thumbnails().thumbnail(dir, 'approved/007.png'))) as NodeJS.ErrnoException;
    expect(error.code).toBe('ENOENT');
    expect(await readdir(dir)).not.toContain('.thumbs');
  });

  it('shares one render among concurrent requests for the same thumbnail', async () => {
    const { dir, file } = await jobWithImage();
    const thumbs = new Thumbnails();

    const results = await Promise.all(Array.from({ length: 6 }, () => thumbs.thumbnail(dir, file)));
    expect(thumbs.renders).toBe(1);
    expect(new Set(results.map((r) => r.path)).size).toBe(1);
    // written once, through one temporary file that was renamed away
    expect(await readdir(path.join(dir, '.thumbs'))).toEqual(['003.webp']);
  });

  it('is left alone by the image folder: a sweep keeps it and removes nothing', async () => {
    const { files, dir, file } = await jobWithImage();
    const made = await new Thumbnails().thumbnail(dir, file);

    expect(await files.sweep(JOB)).toBe(0);
    expect((await stat(made.path)).isFile()).toBe(true);
    expect(await files.exists(JOB, file)).toBe(true);
  });
});
