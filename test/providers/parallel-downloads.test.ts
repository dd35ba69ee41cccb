/**
 * A finished call's outputs are fetched at once, not one after another: the real @fal-ai/client
 * against the fake fal queue, behind a front that holds every image answer until the whole call's
 * downloads are open together (or gives up after a while, so a runner that fetched one at a time
 * would finish, and fail the assertion, rather than hang).
 */
import { createServer, type Server } from 'node:http';
import { describe, expect, it } from 'vitest';
import { startFakeFal, type FakeFal } from '../fakes/fal.js';
import { listenOnLoopback } from '../fakes/http.js';
import { buildApp, filesIn, onCleanup, requester } from '../helpers.js';

interface Front {
  url: string;
  /** the most image downloads that were open at the same moment */
  mostOpen: () => number;
  /** image paths in the order their requests arrived */
  paths: string[];
}

/**
 * The fal fake behind a loopback front (so the images' host is FAL_BASE_URL's, which is allowed):
 * queue requests pass straight through; image requests are held until `together` are open at once,
 * or `giveUpMs` passed, then fetched from the fake.
 */
async function frontOf(fake: FakeFal, together: number, giveUpMs: number): Promise<Front> {
  const waiting: (() => void)[] = [];
  const paths: string[] = [];
  let open = 0;
  let mostOpen = 0;
  const server: Server = createServer((req, res) => {
    const forward = async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = req.method === 'POST' ? Buffer.concat(chunks) : undefined;
      const headers = Object.fromEntries(Object.entries(req.headers).filter(([name]) => name !== 'host' && name !== 'content-length')) as Record<string, string>;
      const answer = await fetch(fake.url + (req.url ?? ''), { method: req.method ?? 'GET', headers, ...(body ? { body } : {}) });
      const bytes = Buffer.from(await answer.arrayBuffer());
      res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/octet-stream' }).end(bytes);
    };
    if (!req.url?.startsWith('/files/')) return void forward();
    paths.push(req.url);
    open += 1;
    mostOpen = Math.max(mostOpen, open);
    const release = () => {
      clearTimeout(timer);
      void forward().finally(() => (open -= 1));
    };
    const timer = setTimeout(release, giveUpMs);
    waiting.push(release);
    if (waiting.length >= together) for (const go of waiting.splice(0)) go();
  });
  const port = await listenOnLoopback(server);
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${port}`, mostOpen: () => mostOpen, paths };
}

describe('downloads of one call', () => {
  it('fetches a call’s four outputs at the same time and numbers each image by its output', async () => {
    // the fake's image URLs name the front (known once both listen)
    const origin = { url: '' };
    const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 20, outputUrl: (url) => url.replace(/^http:\/\/[^/]+/, origin.url) });
    onCleanup(() => fake.close());
    const front = await frontOf(fake, 4, 5_000);
    origin.url = front.url;
    const app = await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: front.url, FAL_CONCURRENCY: '1' } });
    const job = await app.engine.submit(
      { prompt: 'four herons', count: 4, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' },
      requester(),
    );
    const done = await app.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    // all four were open together: one at a time, the host would never have seen more than one
    expect(front.mostOpen()).toBe(4);
    expect(front.paths).toHaveLength(4);
    expect(fake.submits()).toHaveLength(1);
    // output k of the call is image k + 1, whatever order the downloads ended in
    expect(done.images.map((image) => [image.index, image.output, image.file])).toEqual(
      [0, 1, 2, 3].map((output) => [output + 1, output, `pending-review/00${output + 1}.png`]),
    );
    expect(await filesIn(app, job.id, 'pending-review')).toEqual(['001.png', '002.png', '003.png', '004.png']);
  });
});
