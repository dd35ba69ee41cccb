/**
 * `--format png|webp|jpeg` and `--quality`: from /imagine's inline flags to the files on disk, through
 * the real @fal-ai/client and replicate clients against their fakes, and the local provider. The bytes'
 * format is read back with sharp, never taken from a name.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { help, parseImagine, parseImagineText } from '../../commands/imagine.js';
import { USAGE } from '../../src/cli.js';
import type { App } from '../../src/app.js';
import type { Job } from '../../src/core/types.js';
import { ImageFiles, UnreadableImageError } from '../../src/store/files.js';
import { startFakeFal } from '../fakes/fal.js';
import { fakeImage } from '../fakes/png.js';
import { startFakeReplicate } from '../fakes/replicate.js';
import { buildApp, filesIn, onCleanup, readManifest, rejectionOf, requester, tempDir, userErrorOf } from '../helpers.js';

/** Runs `/imagine <text>` as Slack or the playground would type it, to the job's end. */
async function imagine(app: App, text: string): Promise<Job> {
  const job = await app.engine.submit(parseImagineText(text, app.limits), requester());
  const done = await app.engine.waitFor(job.id);
  expect(done.state).toBe('completed');
  return done;
}

/** The format sharp reads from each image file's bytes. */
async function formatsOf(app: App, job: Job): Promise<string[]> {
  return Promise.all(job.images.map(async (image) => (await sharp(path.join(app.files.jobDir(job.id), image.file)).metadata()).format));
}

async function falApp() {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 10 });
  onCleanup(() => fake.close());
  return { fake, app: await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url } }) };
}

async function replicateApp() {
  const fake = await startFakeReplicate({ key: 'r8-test-token', latencyMs: 10 });
  onCleanup(() => fake.close());
  return { fake, app: await buildApp({ env: { REPLICATE_API_TOKEN: 'r8-test-token', REPLICATE_BASE_URL: fake.url } }) };
}

describe('output format', () => {
  it('fal: --format webp asks fal for PNG (flux makes no WebP) and keeps WebP files, typed image/webp', async () => {
    const { fake, app } = await falApp();
    const job = await imagine(app, 'a heron at dawn --provider fal --count 2 --format webp');
    expect(fake.submits().map((call) => (call.body as { output_format: string }).output_format)).toEqual(['png']);
    expect(await formatsOf(app, job)).toEqual(['webp', 'webp']);
    expect(await filesIn(app, job.id, 'pending-review')).toEqual(['001.webp', '002.webp']);
    const manifest = await readManifest(app, job.id);
    expect(manifest.parameters).toMatchObject({ format: 'webp', quality: null });
    expect(manifest.images.map((image) => image.contentType)).toEqual(['image/webp', 'image/webp']);
    // the fake's picture size survives the conversion
    expect(manifest.images[0]).toMatchObject({ width: 1024, height: 1024 });
  });

  it('fal: jpeg is fal’s own; jpeg at a chosen quality comes as PNG and is encoded at that quality', async () => {
    const { fake, app } = await falApp();
    const native = await imagine(app, 'a heron at dawn --provider fal --count 1 --format jpeg');
    const chosen = await imagine(app, 'a heron at dawn --provider fal --count 1 --format jpg --quality 30');
    expect(fake.submits().map((call) => (call.body as { output_format: string }).output_format)).toEqual(['jpeg', 'png']);
    expect([...(await formatsOf(app, native)), ...(await formatsOf(app, chosen))]).toEqual(['jpeg', 'jpeg']);
    expect([native.images[0]!.file, chosen.images[0]!.file]).toEqual(['pending-review/001.jpg', 'pending-review/001.jpg']);
    expect(chosen.images[0]!.contentType).toBe('image/jpeg');
    expect((await readManifest(app, chosen.id)).parameters).toMatchObject({ format: 'jpeg', quality: 30 });
  });

  it('Replicate: --format webp is made by the model itself, and kept as WebP typed image/webp', async () => {
    const { fake, app } = await replicateApp();
    const job = await imagine(app, 'a lighthouse --provider replicate --count 3 --format webp');
    const input = (fake.submits()[0]!.body as { input: Record<string, unknown> }).input;
    expect(input.output_format).toBe('webp');
    expect(input).not.toHaveProperty('output_quality');
    expect(await formatsOf(app, job)).toEqual(['webp', 'webp', 'webp']);
    expect((await readManifest(app, job.id)).images.map((image) => [image.file, image.contentType])).toEqual(
      [1, 2, 3].map((n) => [`pending-review/00${n}.webp`, 'image/webp']),
    );
  });

  it('Replicate: --format jpeg --quality 80 reaches the model as output_format jpg and output_quality 80', async () => {
    const { fake, app } = await replicateApp();
    const job = await imagine(app, 'a lighthouse --provider replicate --count 2 --format jpeg --quality 80');
    expect((fake.submits()[0]!.body as { input: Record<string, unknown> }).input).toMatchObject({ output_format: 'jpg', output_quality: 80 });
    expect(await formatsOf(app, job)).toEqual(['jpeg', 'jpeg']);
    expect(job.images.map((image) => image.contentType)).toEqual(['image/jpeg', 'image/jpeg']);
    expect((await readManifest(app, job.id)).parameters).toMatchObject({ format: 'jpeg', quality: 80 });
  });

  it('local: --format webp renders WebP directly', async () => {
    const app = await buildApp();
    const job = await imagine(app, 'a red fox --provider local --count 2 --format webp --quality 60');
    expect(await formatsOf(app, job)).toEqual(['webp', 'webp']);
    expect(await filesIn(app, job.id, 'pending-review')).toEqual(['001.webp', '002.webp']);
    expect((await readManifest(app, job.id)).images.map((image) => image.contentType)).toEqual(['image/webp', 'image/webp']);
  });

  it('a request without a format keeps PNG, as every job did before formats existed', async () => {
    const app = await buildApp();
    const job = await imagine(app, 'a red fox --count 1');
    expect(job.request).not.toHaveProperty('format');
    expect(await formatsOf(app, job)).toEqual(['png']);
    expect((await readManifest(app, job.id)).parameters).toMatchObject({ format: 'png', quality: null });
  });
});

describe('format and quality options', () => {
  const limits = { maxImagesPerJob: 100, providers: ['local'] as const, defaultProvider: 'local' as const, defaultModels: { fal: 'f', replicate: 'r', local: 'local' } };

  it.each([
    ['fox --format gif', 'Expected `format` to be one of png, webp, jpeg, got `gif`.'],
    ['fox --format webp --quality 0', 'Expected `quality` to be an integer from 1 to 100, got `0`.'],
    ['fox --format jpeg --quality 101', 'Expected `quality` to be an integer from 1 to 100, got `101`.'],
    ['fox --format webp --quality high', 'Expected `quality` to be an integer from 1 to 100, got `high`.'],
    ['fox --quality 80', 'Expected `quality` only with `format` jpeg or webp (png is lossless), got `80` with the default png.'],
    ['fox --format png --quality 80', 'Expected `quality` only with `format` jpeg or webp (png is lossless), got `80` with png.'],
  ])('refuses %j in one line naming the option, what it allows and what was given', (text, message) => {
    expect(userErrorOf(() => parseImagineText(text, limits)).message).toBe(message);
  });

  it('are part of the one definition: Slack and playground help, and the CLI’s generate', () => {
    expect(help(limits)).toContain('--format  Image file format (default png) (png, webp, jpeg)');
    expect(help(limits)).toContain("--quality  Quality of jpeg and webp images (default the provider's) (1–100)");
    expect(USAGE).toContain('[--format png|webp|jpeg]');
    expect(USAGE).toContain('[--quality N]');
  });

  it('takes typed options (Discord, the CLI) the same way, `jpg` as jpeg', () => {
    expect(parseImagine({ prompt: 'fox', format: 'JPG', quality: 75 }, limits)).toMatchObject({ format: 'jpeg', quality: 75 });
    expect(userErrorOf(() => parseImagine({ prompt: 'fox', format: 3 }, limits)).message).toBe('Expected `format` to be text, got `3`.');
  });
});

describe('conversion on saving', () => {
  /** A PNG whose IDAT holds garbage under a right CRC: it passes the streamed check, and does not decode. */
  async function undecodablePng(): Promise<Buffer> {
    const png = Buffer.from(await fakeImage(64, 64, 'png', 'broken'));
    for (let at = 8; at < png.length; ) {
      const length = png.readUInt32BE(at);
      if (png.toString('latin1', at + 4, at + 8) === 'IDAT') {
        png.fill(0x5a, at + 8, at + 8 + length);
        png.writeUInt32BE(crc32(png.subarray(at + 4, at + 8 + length)) >>> 0, at + 8 + length);
      }
      at += length + 12;
    }
    return png;
  }

  it('converts a checked PNG into the wanted format, keeping its size and reporting the new length', async () => {
    const files = new ImageFiles(await tempDir());
    const png = await fakeImage(96, 64, 'png', 'ok');
    const stored = await files.writeImage('job-1', '001', png, { format: 'jpeg', quality: 40 });
    expect(stored).toMatchObject({ file: 'pending-review/001.jpg', width: 96, height: 64, contentType: 'image/jpeg' });
    const bytes = await files.read('job-1', stored.file);
    expect(stored.bytes).toBe(bytes.length);
    expect((await sharp(bytes).metadata()).format).toBe('jpeg');
    // the same format is kept as it came, byte for byte
    const kept = await files.writeImage('job-1', '002', png, { format: 'png' });
    expect((await files.read('job-1', kept.file)).equals(png)).toBe(true);
  });

  it('refuses an image that passed the check but cannot be decoded, and leaves no file behind', async () => {
    const files = new ImageFiles(await tempDir());
    const error = await rejectionOf(files.writeImage('job-1', '001', await undecodablePng(), { format: 'webp' }));
    expect(error).toBeInstanceOf(UnreadableImageError);
    expect((error as Error).message).toBe('the image could not be converted to webp: it is damaged');
    expect(await readdir(path.join(files.jobDir('job-1'), 'pending-review'))).toEqual([]);
  });
});
