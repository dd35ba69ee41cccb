/**
 * A finished call's outputs are fetched at once, not one after another: the real @fal-ai/client
 * against the fake fal queue, behind a front that holds every image answer until the whole call's
 * downloads are open together (or gives up after a while, so a runner that fetched one at a time
 * would finish, and fail the assertion, rather than hang).
 */
import { describe, expect, it } from 'vitest';
import { startFakeFal } from '../fakes/fal.js';
import { startFront, type Front } from '../fakes/front.js';
import { buildApp, filesIn, onCleanup, requester } from '../helpers.js';

/** Holds each image request until `together` are open at once, or `giveUpMs` passed; counts the most open. */
function barrier(together: number, giveUpMs: number) {
  const waiting: (() => void)[] = [];
  const paths: string[] = [];
  let open = 0;
  let mostOpen = 0;
  return {
    paths,
    mostOpen: () => mostOpen,
    hooks: {
      before: (req: { url?: string }) => {
        if (!req.url?.startsWith('/files/')) return Promise.resolve();
        paths.push(req.url);
        open += 1;
        mostOpen = Math.max(mostOpen, open);
        return new Promise<void>((resolve) => {
          const release = () => {
            clearTimeout(timer);
            open -= 1;
            resolve();
          };
          const timer = setTimeout(release, giveUpMs);
          waiting.push(release);
          if (waiting.length >= together) for (const go of waiting.splice(0)) go();
        });
      },
    },
  };
}

describe('downloads of one call', () => {
  it('fetches a call’s four outputs at the same time and numbers each image by its output', async () => {
    // the fake's image URLs name the front (known once both listen)
    const origin = { url: '' };
    const fake = await startFakeFal({ key: 'fal-test-key', latencyMs: 20, outputUrl: (url) => url.replace(/^http:\/\/[^/]+/, origin.url) });
    onCleanup(() => fake.close());
    const held = barrier(4, 5_000);
    const front: Front = await startFront(() => fake.url, held.hooks);
    onCleanup(() => front.close());
    origin.url = front.url;
    const app = await buildApp({ env: { FAL_KEY: 'fal-test-key', FAL_BASE_URL: front.url, FAL_CONCURRENCY: '1' } });
    const job = await app.engine.submit(
      { prompt: 'four herons', count: 4, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' },
      requester(),
    );
    const done = await app.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    // all four were open together: one at a time, the host would never have seen more than one
    expect(held.mostOpen()).toBe(4);
    expect(held.paths).toHaveLength(4);
    expect(fake.submits()).toHaveLength(1);
    // output k of the call is image k + 1, whatever order the downloads ended in
    expect(done.images.map((image) => [image.index, image.output, image.file])).toEqual(
      [0, 1, 2, 3].map((output) => [output + 1, output, `pending-review/00${output + 1}.png`]),
    );
    expect(await filesIn(app, job.id, 'pending-review')).toEqual(['001.png', '002.png', '003.png', '004.png']);
  });
});
