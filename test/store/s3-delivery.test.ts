/**
 * Delivery to object storage against a real S3-compatible server (s3rver on loopback, reached by the
 * real @aws-sdk/client-s3, @aws-sdk/lib-storage and the presigner): approved and upscaled images and
 * the manifest land in the bucket, large images go up in parts, presigned links fetch the bytes, and
 * an upload that fails beyond the SDK's retries waits in the job's outbox until it goes through.
 * Faults are injected by a loopback front (test/fakes/front.ts) between the store and the server.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { Logger } from '../../src/core/ports.js';
import type { ImageRecord, Job, ReviewStatus } from '../../src/core/types.js';
import { openS3ImageStore, type S3ImageStore, type S3ImageStoreOptions } from '../../src/store/s3.js';
import { OUTBOX_FILE } from '../../src/store/s3-outbox.js';
import { configError } from '../config-refusal.js';
import { startFront } from '../fakes/front.js';
import { fakeImage, noisePng } from '../fakes/png.js';
import { startS3Server, type S3Server } from '../fakes/s3-server.js';
import { onCleanup, tempDir } from '../helpers.js';

const JOB = '20250101-abcdef01';
const PREFIX = 'deliver/';

async function server(): Promise<S3Server> {
  const s3 = await startS3Server();
  onCleanup(() => s3.close());
  return s3;
}

/** What the front saw, and the fault it injects: a request `failing` matches has its socket destroyed. */
interface Wire {
  url: string;
  requests: string[];
  failed: string[];
  failing?: (req: IncomingMessage) => boolean;
}

async function front(s3: S3Server): Promise<Wire> {
  const wire: Wire = { url: '', requests: [], failed: [] };
  const started = await startFront(() => s3.url, {
    before: async (req) => {
      const line = `${req.method} ${decodeURIComponent(req.url ?? '')}`;
      wire.requests.push(line);
      if (wire.failing?.(req)) {
        wire.failed.push(line);
        // The front answers a throw by destroying the socket: the client sees the connection reset.
        throw new Error('injected');
      }
    },
  });
  onCleanup(() => started.close());
  wire.url = started.url;
  return wire;
}

/** A PUT: an upload (a whole object or a part) or a copy. */
const puts = (req: IncomingMessage) => req.method === 'PUT';

interface LogLine {
  level: keyof Logger;
  obj: object;
  msg?: string;
}

function capturingLogger(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = (level: keyof Logger) => (obj: object, msg?: string) => void lines.push({ level, obj, ...(msg !== undefined ? { msg } : {}) });
  return { lines, debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}

async function openStore(
  s3: S3Server,
  endpoint: string,
  options: S3ImageStoreOptions & { cacheDir?: string; linkExpiresSeconds?: number } = {},
): Promise<S3ImageStore & { cacheDir: string }> {
  const { cacheDir = await tempDir('af-s3d-cache-'), linkExpiresSeconds, ...rest } = options;
  const settings = { bucket: s3.bucket, endpoint, region: s3.region, prefix: PREFIX, ...(linkExpiresSeconds ? { linkExpiresSeconds } : {}) };
  // One attempt per request: an injected fault is a failure beyond the SDK's retries.
  const store = await openS3ImageStore(settings, cacheDir, { ...rest, client: { credentials: s3.credentials, maxAttempts: 1, ...rest.client } });
  onCleanup(() => store.close());
  return Object.assign(store, { cacheDir });
}

function record(index: number, file: string, status: ReviewStatus, final?: { file: string; contentType: string }): ImageRecord {
  return {
    index,
    batchIndex: 0,
    file,
    width: 64,
    height: 48,
    nsfw: false,
    contentType: 'image/png',
    review: { status },
    ...(final ? { final: { ...final, width: 128, height: 96, model: 'local-upscale', by: 'u1', at: '2026-01-01T00:00:00.000Z' } } : {}),
  };
}

function job(images: ImageRecord[]): Job {
  return {
    id: JOB,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
    requester: { tenant: 't', userId: 'u1', platform: 'cli' },
    request: { prompt: 'a fox', count: images.length, provider: 'local', model: 'local', aspectRatio: '1:1', seed: 1 },
    state: 'completed',
    batches: [],
    images,
  };
}

async function outboxOf(store: { cacheDir: string }): Promise<{ version: number; jobId: string; entries: Record<string, unknown>[] } | undefined> {
  const text = await readFile(path.join(store.cacheDir, JOB, OUTBOX_FILE), 'utf8').catch(() => undefined);
  return text === undefined ? undefined : JSON.parse(text);
}

const keyOf = (file: string) => `${PREFIX}${JOB}/${file}`;

describe('S3 delivery (s3rver on loopback)', () => {
  it('uploads the approved and upscaled images and the manifest; each presigned link fetches the exact bytes and type', async () => {
    const s3 = await server();
    const store = await openStore(s3, s3.url);
    const originals = [await fakeImage(64, 48, 'png', 'one'), await fakeImage(64, 48, 'png', 'two'), await fakeImage(64, 48, 'webp', 'three'), await fakeImage(64, 48, 'png', 'four')];
    const written = [];
    for (const [i, bytes] of originals.entries()) written.push(await store.writeImage(JOB, String(i + 1).padStart(3, '0'), bytes));
    expect(written.map((image) => image.file)).toEqual(['pending-review/001.png', 'pending-review/002.png', 'pending-review/003.webp', 'pending-review/004.png']);
    const files = [
      await store.moveTo(JOB, written[0]!.file, 'approved'),
      await store.moveTo(JOB, written[1]!.file, 'approved'),
      await store.moveTo(JOB, written[2]!.file, 'approved'),
      await store.moveTo(JOB, written[3]!.file, 'rejected'),
    ];
    // The upscaled 002, kept beside the review folders.
    const upscaled = await fakeImage(128, 96, 'png', 'two-final');
    const final = await store.writeImage(JOB, '002', upscaled, { format: 'png', folder: 'final' });
    expect(final.file).toBe('final/002.png');
    const manifest = { jobId: JOB, prompt: 'a fox', images: files };
    await store.writeManifest(JOB, manifest);

    expect(await s3.keys(`${PREFIX}${JOB}/`)).toEqual(
      [keyOf('approved/001.png'), keyOf('approved/002.png'), keyOf('approved/003.webp'), keyOf(final.file), keyOf('manifest.json'), keyOf('rejected/004.png')].sort(),
    );
    expect((await s3.object(keyOf(final.file)))?.body).toEqual(upscaled);

    const done = job([
      record(1, files[0]!, 'approved'),
      record(2, files[1]!, 'approved', { file: final.file, contentType: final.contentType }),
      record(3, files[2]!, 'approved'),
      record(4, files[3]!, 'rejected'),
    ]);
    const report = await store.delivery(done);
    expect(report).toMatchObject({ where: `s3://art/${PREFIX}${JOB}/`, expiresInSeconds: 604_800, waiting: 0 });
    expect(report.links.map((link) => link.file)).toEqual(['manifest.json', 'approved/001.png', final.file, 'approved/003.webp']);

    const expected = [
      { bytes: Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`), type: 'application/json' },
      { bytes: originals[0]!, type: 'image/png' },
      { bytes: upscaled, type: 'image/png' },
      { bytes: originals[2]!, type: 'image/webp' },
    ];
    for (const [i, link] of report.links.entries()) {
      expect(new URL(link.url).searchParams.get('X-Amz-Expires')).toBe('604800');
      const answer = await fetch(link.url);
      expect(answer.status).toBe(200);
      expect(answer.headers.get('content-type')).toBe(expected[i]!.type);
      expect(Buffer.from(await answer.arrayBuffer())).toEqual(expected[i]!.bytes);
    }
  });

  it('sends an image larger than one part in 5 MiB parts (multipart), a small one in one PutObject', async () => {
    const s3 = await server();
    const wire = await front(s3);
    const store = await openStore(s3, wire.url);
    const big = await noisePng(1400, 1400);
    expect(big.length).toBeGreaterThan(5 * 1024 * 1024);
    const small = await fakeImage(64, 48, 'png', 'small');

    const from = wire.requests.length;
    await store.writeImage(JOB, '001', big);
    const multipart = wire.requests.slice(from);
    expect(multipart.filter((line) => line.startsWith('POST') && line.includes('?uploads'))).toHaveLength(1);
    expect(multipart.filter((line) => line.startsWith('PUT') && /partNumber=\d+&uploadId=/.test(line)).map((line) => /partNumber=(\d+)/.exec(line)![1]).sort()).toEqual(['1', '2']);
    expect(multipart.filter((line) => line.startsWith('POST') && line.includes('?uploadId='))).toHaveLength(1);
    expect((await s3.object(keyOf('pending-review/001.png')))?.body.equals(big)).toBe(true);

    const before = wire.requests.length;
    await store.writeImage(JOB, '002', small);
    expect(wire.requests.slice(before)).toEqual([`PUT /art/${keyOf('pending-review/002.png')}?x-id=PutObject`]);
    expect((await s3.object(keyOf('pending-review/002.png')))?.body).toEqual(small);
  });

  it('keeps an image whose upload failed beyond the SDK retries: cached, in the outbox, logged once, uploaded on the next try', async () => {
    const s3 = await server();
    const wire = await front(s3);
    const logger = capturingLogger();
    // No background retry within the test: the try is driven by hand.
    const store = await openStore(s3, wire.url, { logger, retryBaseMs: 3_600_000 });
    let faults = 1;
    wire.failing = (req) => puts(req) && faults-- > 0;
    const bytes = await fakeImage(64, 48, 'png', 'kept');

    const stored = await store.writeImage(JOB, '001', bytes);
    expect(stored.file).toBe('pending-review/001.png');
    expect(wire.failed).toEqual([`PUT /art/${keyOf('pending-review/001.png')}?x-id=PutObject`]);
    expect(await s3.keys()).toEqual([]);
    expect(await store.read(JOB, stored.file)).toEqual(bytes);
    const outbox = await outboxOf(store);
    expect(outbox).toMatchObject({ version: 1, jobId: JOB });
    expect(outbox?.entries).toEqual([
      { op: 'put', file: 'pending-review/001.png', contentType: 'image/png', remove: [], since: expect.any(String), attempts: 1, error: expect.any(String) },
    ]);
    const pending = job([record(1, stored.file, 'approved')]);
    expect((await store.delivery(pending)).waiting).toBe(1);
    const warnings = logger.lines.filter((line) => line.level === 'warn');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.obj).toMatchObject({ jobId: JOB, key: keyOf('pending-review/001.png'), op: 'put' });
    expect(JSON.stringify(logger.lines)).not.toContain(s3.credentials.secretAccessKey);

    // The fault has cleared: the next try goes through, and the outbox is gone.
    expect(await store.retryWaiting()).toBe(0);
    expect((await s3.object(keyOf('pending-review/001.png')))?.body).toEqual(bytes);
    expect(await outboxOf(store)).toBeUndefined();
    expect((await store.delivery(pending)).waiting).toBe(0);
    expect(logger.lines.filter((line) => line.level === 'warn')).toHaveLength(1);
  });

  it('a review and a manifest cut off from the bucket still stand; the background retry finishes them once it answers', async () => {
    const s3 = await server();
    const wire = await front(s3);
    const store = await openStore(s3, wire.url, { retryBaseMs: 20, retryMaxMs: 100 });
    const [one, two] = [await fakeImage(64, 48, 'png', 'one'), await fakeImage(64, 48, 'png', 'two')];
    await store.writeImage(JOB, '001', one);

    // The bucket refuses every write from here: uploads, copies, the manifest.
    wire.failing = puts;
    expect(await store.moveTo(JOB, 'pending-review/001.png', 'approved')).toBe('approved/001.png');
    expect(await store.read(JOB, 'approved/001.png')).toEqual(one);
    const two002 = await store.writeImage(JOB, '002', two);
    // Rejected while its upload waits: the move is made in the cache, and the waiting upload follows it.
    expect(await store.moveTo(JOB, two002.file, 'rejected')).toBe('rejected/002.png');
    await store.writeManifest(JOB, { jobId: JOB, approved: 1 });
    const entries = (await outboxOf(store))?.entries ?? [];
    expect(entries.map(({ op, file, remove }) => ({ op, file, remove }))).toEqual([
      { op: 'put', file: 'approved/001.png', remove: ['pending-review/001.png'] },
      { op: 'put', file: 'rejected/002.png', remove: ['pending-review/002.png'] },
      { op: 'put', file: 'manifest.json', remove: [] },
    ]);
    const reviewed = job([record(1, 'approved/001.png', 'approved'), record(2, 'rejected/002.png', 'rejected')]);
    expect((await store.delivery(reviewed)).waiting).toBe(3);
    expect(await s3.keys()).toEqual([keyOf('pending-review/001.png')]);
    expect(wire.failed.length).toBeGreaterThanOrEqual(3);

    wire.failing = undefined;
    await vi.waitFor(async () => expect((await store.delivery(reviewed)).waiting).toBe(0), { timeout: 10_000, interval: 20 });
    expect(await s3.keys()).toEqual([keyOf('approved/001.png'), keyOf('manifest.json'), keyOf('rejected/002.png')]);
    expect((await s3.object(keyOf('approved/001.png')))?.body).toEqual(one);
    expect((await s3.object(keyOf('rejected/002.png')))?.body).toEqual(two);
    expect(JSON.parse((await s3.object(keyOf('manifest.json')))!.body.toString('utf8'))).toEqual({ jobId: JOB, approved: 1 });
    expect(await outboxOf(store)).toBeUndefined();
  });

  it('a review by a process without the image, cut off from the bucket: the copy waits, reads come from the old key', async () => {
    const s3 = await server();
    const wire = await front(s3);
    const writer = await openStore(s3, wire.url);
    const bytes = await fakeImage(64, 48, 'png', 'elsewhere');
    await writer.writeImage(JOB, '001', bytes);
    const reviewer = await openStore(s3, wire.url, { retryBaseMs: 3_600_000 });

    wire.failing = puts;
    expect(await reviewer.moveTo(JOB, 'pending-review/001.png', 'approved')).toBe('approved/001.png');
    expect((await outboxOf(reviewer))?.entries.map(({ op, from, file, remove }) => ({ op, from, file, remove }))).toEqual([
      { op: 'copy', from: 'pending-review/001.png', file: 'approved/001.png', remove: ['pending-review/001.png'] },
    ]);
    expect(await reviewer.read(JOB, 'approved/001.png')).toEqual(bytes);
    expect(wire.requests.filter((line) => line.startsWith('GET'))).toEqual([`GET /art/${keyOf('pending-review/001.png')}?x-id=GetObject`]);

    wire.failing = undefined;
    expect(await reviewer.retryWaiting()).toBe(0);
    expect(await s3.keys()).toEqual([keyOf('approved/001.png')]);
    expect((await s3.object(keyOf('approved/001.png')))?.body).toEqual(bytes);
  });

  it('restores a review cut off mid-move while the upload waited: the entry and the cached copy go back', async () => {
    const s3 = await server();
    const wire = await front(s3);
    const store = await openStore(s3, wire.url, { retryBaseMs: 3_600_000 });
    wire.failing = puts;
    const bytes = await fakeImage(64, 48, 'png', 'restored');
    await store.writeImage(JOB, '001', bytes);
    expect(await store.moveTo(JOB, 'pending-review/001.png', 'approved')).toBe('approved/001.png');
    // The record still says pending (the move was not saved): put back where it says.
    expect(await store.restore(JOB, 'pending-review/001.png')).toBe(true);
    expect(await readFile(path.join(store.cacheDir, JOB, 'pending-review', '001.png'))).toEqual(bytes);
    expect((await outboxOf(store))?.entries.map(({ op, file, remove }) => ({ op, file, remove }))).toEqual([
      { op: 'put', file: 'pending-review/001.png', remove: ['approved/001.png'] },
    ]);
    wire.failing = undefined;
    expect(await store.retryWaiting()).toBe(0);
    expect(await s3.keys()).toEqual([keyOf('pending-review/001.png')]);
  });

  it('a fresh store opened on the same cache folder resumes the outbox a closed one left (dropping entries no job could have)', async () => {
    const s3 = await server();
    const wire = await front(s3);
    wire.failing = puts;
    const first = await openStore(s3, wire.url, { retryBaseMs: 3_600_000 });
    const bytes = await fakeImage(64, 48, 'png', 'left');
    await first.writeImage(JOB, '001', bytes);
    await first.close();
    const left = await outboxOf(first);
    expect(left?.entries).toHaveLength(1);
    // An altered file: an entry that would climb out of the job's keys is not tried.
    left!.entries.push({ op: 'put', file: '../../etc/passwd', contentType: 'text/plain', remove: [] });
    await writeFile(path.join(first.cacheDir, JOB, OUTBOX_FILE), JSON.stringify(left));

    wire.failing = undefined;
    const logger = capturingLogger();
    const second = await openStore(s3, wire.url, { cacheDir: first.cacheDir, logger, retryBaseMs: 20 });
    await vi.waitFor(async () => expect(await s3.keys()).toEqual([keyOf('pending-review/001.png')]), { timeout: 10_000, interval: 20 });
    expect((await s3.object(keyOf('pending-review/001.png')))?.body).toEqual(bytes);
    await vi.waitFor(async () => expect(await outboxOf(second)).toBeUndefined(), { timeout: 10_000, interval: 20 });
    expect((await second.delivery(job([record(1, 'pending-review/001.png', 'pending')]))).waiting).toBe(0);
    expect(logger.lines.some((line) => line.level === 'warn' && (line.obj as { dropped?: number }).dropped === 1)).toBe(true);
    expect(wire.requests.some((line) => line.includes('passwd'))).toBe(false);
  });
});

describe('S3_LINK_EXPIRES', () => {
  it('is 7 days unless set; a store signs its links for what it says', async () => {
    expect(loadConfig({ S3_BUCKET: 'art' }).s3?.linkExpiresSeconds).toBe(604_800);
    expect(loadConfig({ S3_BUCKET: 'art', S3_LINK_EXPIRES: '3600' }).s3?.linkExpiresSeconds).toBe(3600);
    const s3 = await server();
    const store = await openStore(s3, s3.url, { linkExpiresSeconds: 3600 });
    const report = await store.delivery(job([]));
    expect(report.expiresInSeconds).toBe(3600);
    expect(report.links.map((link) => link.file)).toEqual(['manifest.json']);
    expect(new URL(report.links[0]!.url).searchParams.get('X-Amz-Expires')).toBe('3600');
  });

  it('refuses a value outside 60 s to 7 days, and the setting without a bucket', () => {
    const expected = 'seconds from 60 to 604800 (7 days, the longest a presigned link may last)';
    expect(configError({ S3_BUCKET: 'art', S3_LINK_EXPIRES: '59' })).toBe(`S3_LINK_EXPIRES: expected ${expected}, got "59"`);
    expect(configError({ S3_BUCKET: 'art', S3_LINK_EXPIRES: '604801' })).toBe(`S3_LINK_EXPIRES: expected ${expected}, got "604801"`);
    expect(configError({ S3_BUCKET: 'art', S3_LINK_EXPIRES: '1h' })).toBe(`S3_LINK_EXPIRES: expected ${expected}, got "1h"`);
    expect(configError({ S3_LINK_EXPIRES: '3600' })).toBe('S3_LINK_EXPIRES: needs S3_BUCKET to be set');
  });
});
