/**
 * Live review pages across processes (distributed mode): a page served by one process follows a review
 * made in another — its engine tells only itself, and the review feed (Redis pub/sub) tells the rest.
 */
import path from 'node:path';
import { expect, it } from 'vitest';
import { silentLogger } from '../../src/core/ports.js';
import { Thumbnails } from '../../src/store/thumbnails.js';
import { reviewRoutes } from '../../src/web/review-page.js';
import { reviewLink } from '../../src/web/review-token.js';
import { startWebServer } from '../../src/web/server.js';
import { buildApp, onCleanup, requester, tempDir } from '../helpers.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';

const SECRET = 'a-review-secret-for-the-review-feed-test-0123456';

/** Server-sent events from `res`, parsed as they come. */
async function* events(res: Response): AsyncGenerator<{ event: string; data: unknown }> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(frame)?.[1];
      const data = /^data: (.*)$/m.exec(frame)?.[1];
      if (event && data) yield { event, data: JSON.parse(data) as unknown };
    }
  }
}

describeRedis('review pages across processes', () => {
  it('a page served by one process shows, live, a review made in another', async () => {
    const env = { REDIS_URL: redisUrl, REDIS_PREFIX: testPrefix(), OUTPUT_DIR: path.join(await tempDir('af-feed-'), 'output') };
    const [a, b] = await Promise.all([buildApp({ env }), buildApp({ env })]);
    expect(a.reviewFeed).toBeDefined();
    const job = await a.engine.waitFor((await a.engine.submit({ prompt: 'a red fox', count: 4, provider: 'local', model: 'local', aspectRatio: '1:1' }, requester('guild-1', 'owner'))).id);

    const web = await startWebServer({ port: 0, host: '127.0.0.1', log: silentLogger });
    onCleanup(() => web.stop());
    web.add(...reviewRoutes({ engine: a.engine, files: a.files, thumbnails: new Thumbnails(), feed: a.reviewFeed, access: { kind: 'token', secret: SECRET, publicUrl: web.url }, now: Date.now, log: silentLogger }));
    const { url } = reviewLink({ baseUrl: web.url, secret: SECRET, linkMs: 3_600_000 }, job.id, { tenant: 'guild-1', userId: 'owner', name: 'Olive', moderator: false }, Date.now());
    const cookie = (await fetch(url, { redirect: 'manual' })).headers.get('set-cookie')!.split(';')[0]!;
    const controller = new AbortController();
    onCleanup(() => controller.abort());
    const stream = await fetch(`${web.url}/review/${job.id}/events`, { headers: { cookie }, signal: controller.signal });
    const seen = events(stream);
    const first = await seen.next();
    expect(first.value).toMatchObject({ event: 'state', data: { counts: { pending: 4, approved: 0 } } });

    // Reviewed in the other process: this one's engine never hears of it.
    let heardHere = 0;
    a.engine.on('reviewed', () => (heardHere += 1));
    await b.engine.reviewMany(job.id, [1, 3], 'approved', { id: 'mod', name: 'Mo' });

    const next = await seen.next();
    expect(next.value).toMatchObject({ event: 'state', data: { counts: { pending: 2, approved: 2 } } });
    expect(heardHere).toBe(0);
    controller.abort();
  });
});
