/**
 * Provider output is untrusted: a model can return any URL and any bytes. These drive the real
 * @fal-ai/client against the fake fal queue, whose results are rewritten to hostile outputs.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startFakeFal, type FakeFal, type FakeFalOptions } from '../fakes/fal.js';
import { noisePng, solidImage } from '../fakes/png.js';
import { buildApp, filesIn, onCleanup, readManifest, requester } from '../helpers.js';

async function fakeFal(options: FakeFalOptions = {}): Promise<FakeFal> {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 20, ...options });
  onCleanup(() => fake.close());
  return fake;
}

const falEnv = (fake: FakeFal, extra: Record<string, string> = {}) => ({
  FAL_KEY: 'fal-test-key',
  FAL_BASE_URL: fake.url,
  FAL_CONCURRENCY: '1',
  ...extra,
});

const request = (count: number, extra: object = {}) => ({
  prompt: 'a red fox in snow',
  count,
  provider: 'fal' as const,
  model: 'fal-ai/flux/schnell',
  aspectRatio: '1:1' as const,
  seed: 7,
  ...extra,
});

/** A second loopback server that nobody allowed: it counts every request it receives. */
async function bystander(): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const png = await solidImage(64, 64, 'png', [200, 0, 0]);
  const server: Server = createServer((_, res) => {
    hits += 1;
    res.writeHead(200, { 'content-type': 'image/png' }).end(png);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => hits };
}

/** A PNG signature and an IHDR chunk declaring `width` × `height`, and nothing else: 94 bytes or so. */
function pngHeaderOnly(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 6, 0, 0, 0], 8);
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    return Buffer.concat([length, Buffer.from(type, 'ascii'), data, Buffer.alloc(4)]);
  };
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', Buffer.alloc(40)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

describe('provider output URLs', () => {
  it('refuses an image URL on a loopback server that is not allowed, and that server sees no request', async () => {
    const other = await bystander();
    const fake = await fakeFal({ outputUrl: (url, _, index) => (index === 1 ? `${other.url}/secret.png` : url) });
    const app = await buildApp({ env: falEnv(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(other.hits()).toBe(0);
    // the three allowed outputs are kept; the refused one fails that image, with no second paid call
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(3);
    expect(fake.submits()).toHaveLength(1);
    expect(done.batches[0]).toMatchObject({ state: 'failed', delivered: 3 });
    expect(done.batches[0]!.error).toBe('1 of 4 images refused: the image URL is not on an allowed download host');
    expect(done.batches[0]!.error).not.toContain('127.0.0.1');
  });

  it('refuses a redirect from the allowed host to one that is not allowed, and that server sees no request', async () => {
    const other = await bystander();
    const fake = await fakeFal({
      fileBody: (_, index) =>
        index === 0 ? { status: 302, headers: { location: `${other.url}/x.png` }, bytes: Buffer.alloc(0), contentType: 'text/plain' } : undefined,
    });
    const app = await buildApp({ env: falEnv(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(2), requester())).id);
    expect(other.hits()).toBe(0);
    expect(done.images.map((image) => image.output)).toEqual([1]);
    expect(done.batches[0]!.error).toBe('1 of 2 images refused: the image URL is not on an allowed download host');
  });

  it('refuses SVG and HTML bodies, and a 94-byte PNG declaring 16000 × 16000', async () => {
    const bodies = [
      { bytes: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'), contentType: 'image/svg+xml' },
      { bytes: Buffer.from('<!doctype html><title>x</title><script>alert(1)</script>'), contentType: 'image/png' },
      { bytes: pngHeaderOnly(16_000, 16_000), contentType: 'image/png' },
    ];
    const fake = await fakeFal({ fileBody: (_, index) => bodies[index] });
    const app = await buildApp({ env: falEnv(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(bodies[2]!.bytes.length).toBeLessThan(120);
    expect(done.images).toHaveLength(1);
    expect(done.images[0]!.file).toMatch(/^pending-review\/\d+\.png$/);
    expect(done.batches[0]!.error).toMatch(/^3 of 4 images refused: the image is not a PNG, JPEG or WebP$/);
    // nothing but the one real picture is left in the folder, no .bin, no .svg, no temporary file
    expect(await filesIn(app, done.id, 'pending-review')).toEqual([done.images[0]!.file.split('/')[1]]);
  });

  it('refuses the 16000 × 16000 header even when it comes alone', async () => {
    const fake = await fakeFal({ fileBody: () => ({ bytes: pngHeaderOnly(16_000, 16_000), contentType: 'image/png' }) });
    const app = await buildApp({ env: falEnv(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(1), requester())).id);
    expect(done.state).toBe('failed');
    expect(done.batches[0]!.error).toBe('1 of 1 images refused: the image is larger than 67 megapixels');
    expect(fake.submits()).toHaveLength(1);
  });

  it('refuses a PNG cut short, whose header alone looks right', async () => {
    const whole = await noisePng(256, 256, 5);
    const fake = await fakeFal({ fileBody: () => ({ bytes: whole.subarray(0, Math.floor(whole.length / 2)), contentType: 'image/png' }) });
    const app = await buildApp({ env: falEnv(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(1), requester())).id);
    expect(done.state).toBe('failed');
    expect(done.batches[0]!.error).toBe('1 of 1 images refused: the image is damaged or incomplete');
    expect(await filesIn(app, done.id, 'pending-review')).toEqual([]);
  });

  it('refuses a 40 MB image against a 25 MiB cap without saving any of it', async () => {
    const big = Buffer.alloc(40 * 1024 * 1024);
    big.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const fake = await fakeFal({ fileBody: () => ({ bytes: big, contentType: 'image/png' }) });
    const app = await buildApp({ env: falEnv(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(1), requester())).id);
    expect(done.state).toBe('failed');
    expect(done.batches[0]!.error).toBe('1 of 1 images refused: the image is larger than 25 MiB (MAX_IMAGE_BYTES)');
    expect(await filesIn(app, done.id, 'pending-review')).toEqual([]);
  });
});

describe('a download that fails part-way through a call', () => {
  it('keeps the images already saved and fetches only the missing outputs: 4 distinct images, none twice', async () => {
    const fake = await fakeFal();
    // the 3rd file download of the call drops its connection mid-body
    fake.inject({ on: 'file', fault: { kind: 'drop' }, after: 2 });
    const app = await buildApp({ env: falEnv(fake) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.error).toBeUndefined();
    expect(fake.submits()).toHaveLength(1);
    const requestId = [...fake.requests.keys()][0]!;
    expect(done.images.map((image) => [image.index, image.requestId, image.output])).toEqual([
      [1, requestId, 0],
      [2, requestId, 1],
      [3, requestId, 2],
      [4, requestId, 3],
    ]);
    // each of the call's outputs was fetched once, all four at once, and the dropped one again after them
    const fetched = fake.calls.filter((c) => c.path.startsWith('/files/')).map((c) => c.path.split('/').pop());
    expect(fetched.slice(0, 4).sort()).toEqual(['0.png', '1.png', '2.png', '3.png']);
    expect(fetched.slice(4)).toEqual(['2.png']);
    const manifest = await readManifest(app, done.id);
    expect(manifest.images.map((i) => i.outputIndex)).toEqual([0, 1, 2, 3]);
    expect(manifest.images.every((i) => i.providerRequestId === requestId)).toBe(true);
  });
});

describe('Retry-After from an image host', () => {
  it('never pauses the provider: another tenant finishes, and no timer overflows', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    onCleanup(() => void process.off('warning', onWarning));
    const fake = await fakeFal();
    fake.inject({ on: 'file', fault: { kind: 'rate-limit', retryAfterSeconds: 100_000_000, where: 'header' } });
    // one call at a time: tenant B's call can only start once A's has met the 429
    const app = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '1' }) });
    const first = await app.engine.submit(request(1), requester('guild-a'));
    const second = await app.engine.submit(request(1), requester('guild-b'));
    const other = await app.engine.waitFor(second.id);
    expect(other.state).toBe('completed');
    const throttled = await app.engine.waitFor(first.id);
    // the image host's 429 was waited out (at most 10 s, here the scaled backoff), not for years
    expect(throttled.state).toBe('completed');
    expect(throttled.batches[0]).toMatchObject({ failures: 1, state: 'done' });
    expect(throttled.batches[0]!.throttled).toBeUndefined();
    expect(warnings).not.toContain('TimeoutOverflowWarning');
  });
});
