import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { UnreadableImageError } from '../../src/store/files.js';
import { openS3ImageStore, S3ImageStore } from '../../src/store/s3.js';
import { fakeImage } from '../fakes/png.js';
import { startFakeS3, type FakeS3 } from '../fakes/s3.js';
import { configError } from '../config-refusal.js';
import { onCleanup, rejectionOf, tempDir } from '../helpers.js';

const JOB = '20250101-abcdef01';

async function fake(): Promise<FakeS3> {
  const s3 = await startFakeS3();
  onCleanup(() => s3.close());
  return s3;
}

/** A store on the fake with a cache folder of its own, as one process would have. */
async function store(s3: FakeS3, prefix = 'art-factory/'): Promise<S3ImageStore & { cacheDir: string }> {
  const cache = await tempDir('af-s3-cache-');
  const opened = await openS3ImageStore({ bucket: s3.bucket, endpoint: s3.url, region: s3.region, prefix }, cache, {
    client: { credentials: s3.credentials },
  });
  onCleanup(() => opened.close());
  return Object.assign(opened, { cacheDir: cache });
}

const ops = (s3: FakeS3) => s3.calls.map((call) => `${call.operation} ${call.status}`);
const png = () => fakeImage(64, 48, 'png', 'fox');

describe('S3ImageStore', () => {
  it('keeps a checked image under <prefix><jobId>/pending-review/, in the bucket and in its cache', async () => {
    const s3 = await fake();
    const images = await store(s3);
    const bytes = await png();
    const stored = await images.writeImage(JOB, '001', bytes);
    expect(stored).toMatchObject({ file: 'pending-review/001.png', width: 64, height: 48, contentType: 'image/png' });
    expect(s3.keys()).toEqual([`art-factory/${JOB}/pending-review/001.png`]);
    expect(s3.object(`art-factory/${JOB}/pending-review/001.png`)).toMatchObject({ body: bytes, contentType: 'image/png' });
    expect(await readFile(path.join(images.cacheDir, JOB, 'pending-review', '001.png'))).toEqual(bytes);
    // Read back from the cache: no request.
    const before = s3.calls.length;
    expect(await images.read(JOB, stored.file)).toEqual(bytes);
    expect(await images.size(JOB, stored.file)).toBe(bytes.length);
    expect(s3.calls.length).toBe(before);
    expect(images.locate(JOB, stored.file)).toBe(`s3://art/art-factory/${JOB}/pending-review/001.png`);
    expect(images.jobDir(JOB)).toBe(path.join(images.cacheDir, JOB));
  });

  it('never uploads a refused image: not an image, or one that does not decode whole', async () => {
    const s3 = await fake();
    const images = await store(s3);
    const bytes = await png();
    for (const bad of [Buffer.from('<html>not an image</html>'), bytes.subarray(0, bytes.length - 40)]) {
      expect(await rejectionOf(images.writeImage(JOB, '001', bad))).toBeInstanceOf(UnreadableImageError);
    }
    expect(s3.calls.filter((call) => call.operation === 'PutObject')).toEqual([]);
    expect(s3.keys()).toEqual([]);
    expect(await readdir(path.join(images.cacheDir, JOB, 'pending-review'))).toEqual([]);
  });

  it('moves an image on review (copy, then delete) in the bucket and its cache; a repeated move finds it moved', async () => {
    const s3 = await fake();
    const images = await store(s3);
    const { file } = await images.writeImage(JOB, '001', await png());
    const from = s3.calls.length;
    expect(await images.moveTo(JOB, file, 'approved')).toBe('approved/001.png');
    expect(ops(s3).slice(from)).toEqual(['CopyObject 200', 'DeleteObject 204']);
    expect(s3.calls.find((call) => call.operation === 'CopyObject')?.copySource).toBe(`art/art-factory/${JOB}/pending-review/001.png`);
    expect(s3.keys()).toEqual([`art-factory/${JOB}/approved/001.png`]);
    expect(await readdir(path.join(images.cacheDir, JOB, 'approved'))).toEqual(['001.png']);
    expect(await readdir(path.join(images.cacheDir, JOB, 'pending-review'))).toEqual([]);

    // An attempt that crashed after the move but before the job was saved: moved again, no error.
    expect(await images.moveTo(JOB, file, 'approved')).toBe('approved/001.png');
    expect(s3.keys()).toEqual([`art-factory/${JOB}/approved/001.png`]);
    // Already there: nothing to do, nothing sent.
    const calls = s3.calls.length;
    expect(await images.moveTo(JOB, 'approved/001.png', 'approved')).toBe('approved/001.png');
    expect(s3.calls.length).toBe(calls);
  });

  it('writes the manifest to the bucket and the cache, the same bytes, as JSON', async () => {
    const s3 = await fake();
    const images = await store(s3, '');
    const where = await images.writeManifest(JOB, { jobId: JOB, prompt: 'a fox', images: [] });
    expect(where).toBe(`s3://art/${JOB}/manifest.json`);
    const local = await readFile(path.join(images.cacheDir, JOB, 'manifest.json'));
    expect(s3.object(`${JOB}/manifest.json`)).toMatchObject({ body: local, contentType: 'application/json' });
    expect(JSON.parse(local.toString('utf8'))).toEqual({ jobId: JOB, prompt: 'a fox', images: [] });
  });

  it('reads what another process uploaded from the bucket once, then from its cache; a missing image is ENOENT', async () => {
    const s3 = await fake();
    const [writer, reader] = [await store(s3), await store(s3)];
    const bytes = await png();
    const { file } = await writer.writeImage(JOB, '001', bytes);
    const from = s3.calls.length;
    expect(await reader.size(JOB, file)).toBe(bytes.length);
    expect(await reader.read(JOB, file)).toEqual(bytes);
    expect(await reader.read(JOB, file)).toEqual(bytes);
    expect(await reader.size(JOB, file)).toBe(bytes.length);
    expect(ops(s3).slice(from)).toEqual(['HeadObject 200', 'GetObject 200']);
    expect(await readFile(path.join(reader.cacheDir, JOB, file))).toEqual(bytes);

    // Asked one at a time: a second promise made up front would reject before it is awaited.
    for (const missing of [() => reader.read(JOB, 'approved/001.png'), () => reader.size(JOB, 'rejected/001.png')]) {
      expect(await rejectionOf(missing())).toMatchObject({ code: 'ENOENT' });
    }
  });

  it('refuses a path a job could not have recorded, before any request', async () => {
    const s3 = await fake();
    const images = await store(s3);
    const before = s3.calls.length;
    for (const [jobId, file] of [[JOB, '../../etc/passwd'], ['../other', 'manifest.json'], [JOB, 'approved/../../x.png'], [JOB, 'tmp/001.png']] as const) {
      expect(((await rejectionOf(images.read(jobId, file))) as Error).message).toMatch(/^not an image of a job/);
    }
    expect(s3.calls.length).toBe(before);
  });

  it('retries a 503 SlowDown (the SDK, 3 attempts); after 3 the image stays in the cache and is uploaded on a later try', async () => {
    const s3 = await fake();
    const images = await store(s3);
    s3.inject({ on: 'PutObject', status: 503 });
    await images.writeImage(JOB, '001', await png());
    expect(s3.calls.filter((call) => call.operation === 'PutObject').map((call) => call.status)).toEqual([503, 200]);
    expect(s3.keys()).toEqual([`art-factory/${JOB}/pending-review/001.png`]);

    // Never lost: the download stands, the cached copy stays and the upload waits in the job's outbox.
    s3.inject({ on: 'PutObject', status: 503, times: 3 });
    expect(await images.writeImage(JOB, '002', await png())).toMatchObject({ file: 'pending-review/002.png' });
    expect(s3.calls.filter((call) => call.operation === 'PutObject').map((call) => call.status)).toEqual([503, 200, 503, 503, 503]);
    expect(s3.keys()).toEqual([`art-factory/${JOB}/pending-review/001.png`]);
    expect((await readdir(path.join(images.cacheDir, JOB, 'pending-review'))).sort()).toEqual(['001.png', '002.png']);
    expect(await images.retryWaiting()).toBe(0);
    expect(s3.keys()).toEqual([`art-factory/${JOB}/pending-review/001.png`, `art-factory/${JOB}/pending-review/002.png`]);
  });

  it('restores a review cut off mid-move: the record keeps its copy, a stray goes; a moved image comes back', async () => {
    const s3 = await fake();
    const images = await store(s3);
    const bytes = await png();
    await images.writeImage(JOB, '001', bytes);
    await images.writeImage(JOB, '002', bytes);
    // 001: copied to approved/ but not yet deleted when the crash came (the record says pending).
    s3.put(`art-factory/${JOB}/approved/001.png`, bytes, 'image/png');
    expect(await images.restore(JOB, 'pending-review/001.png')).toBe(false);
    // 002: moved to rejected/, the move not saved.
    await images.moveTo(JOB, 'pending-review/002.png', 'rejected');
    expect(await images.restore(JOB, 'pending-review/002.png')).toBe(true);
    expect(s3.keys()).toEqual([`art-factory/${JOB}/pending-review/001.png`, `art-factory/${JOB}/pending-review/002.png`]);
    expect((await readdir(path.join(images.cacheDir, JOB, 'pending-review'))).sort()).toEqual(['001.png', '002.png']);
    expect(await readdir(path.join(images.cacheDir, JOB, 'rejected'))).toEqual([]);
    // Nothing anywhere: nothing to do.
    expect(await images.restore(JOB, 'approved/009.png')).toBe(false);
  });

  it('will not start on a bucket it cannot use, in one line that names no secret', async () => {
    const s3 = await fake();
    const cache = await tempDir();
    const settings = { bucket: s3.bucket, endpoint: s3.url, region: s3.region, prefix: '' };
    const wrong = { accessKeyId: 'AKIAWRONGKEY', secretAccessKey: 'wrong-secret-value' };
    const error = (await rejectionOf(openS3ImageStore(settings, cache, { client: { credentials: wrong } }))) as Error;
    expect(error.message).toBe(
      `S3_BUCKET: cannot use bucket art at ${s3.url}: access denied (HTTP 403): check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket's permissions`,
    );
    expect(error.message).not.toContain('wrong-secret-value');
    const missing = (await rejectionOf(openS3ImageStore({ ...settings, bucket: 'elsewhere' }, cache, { client: { credentials: s3.credentials } }))) as Error;
    expect(missing.message).toBe(`S3_BUCKET: cannot use bucket elsewhere at ${s3.url}: no such bucket (HTTP 404)`);
  });
});

describe('S3 settings', () => {
  it('S3_BUCKET turns the bucket on; region, endpoint and prefix have their defaults', () => {
    expect(loadConfig({}).s3).toBeUndefined();
    expect(loadConfig({ S3_BUCKET: 'art-images' }).s3).toEqual({ bucket: 'art-images', region: 'us-east-1', prefix: '', linkExpiresSeconds: 604_800 });
    expect(loadConfig({ S3_BUCKET: 'art', S3_ENDPOINT: 'http://127.0.0.1:9000/', S3_REGION: 'auto', S3_PREFIX: 'bots/art-factory/' }).s3).toEqual({
      bucket: 'art',
      endpoint: 'http://127.0.0.1:9000',
      region: 'auto',
      prefix: 'bots/art-factory/',
      linkExpiresSeconds: 604_800,
    });
  });

  it('refuses a bad bucket, endpoint or prefix, and the companions without a bucket, naming the variable', () => {
    expect(configError({ S3_BUCKET: 'My_Bucket' })).toBe('S3_BUCKET: expected a bucket name (3 to 63 of a-z, 0-9, . and -), got "My_Bucket"');
    // The endpoint is never echoed: a URL may carry a password.
    expect(configError({ S3_BUCKET: 'art', S3_ENDPOINT: 'ftp://x' })).toBe('S3_ENDPOINT: expected an http(s) URL, got a value that is not valid');
    expect(configError({ S3_BUCKET: 'art', S3_ENDPOINT: 'https://key:hunter2@r2.example.com' })).toMatch(/^S3_ENDPOINT: expected a URL without a user or password/);
    expect(configError({ S3_BUCKET: 'art', S3_PREFIX: '../up/' })).toMatch(/^S3_PREFIX: expected a key prefix/);
    expect(configError({ S3_BUCKET: 'art', S3_PREFIX: '/rooted' })).toMatch(/^S3_PREFIX: expected a key prefix/);
    expect(configError({ S3_PREFIX: 'art/' })).toBe('S3_PREFIX: needs S3_BUCKET to be set');
    expect(configError({ S3_ENDPOINT: 'http://127.0.0.1:9000' })).toBe('S3_ENDPOINT: needs S3_BUCKET to be set');
  });
});
