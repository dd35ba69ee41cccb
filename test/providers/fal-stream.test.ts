// The runner learns that a fal call ended from the queue's status stream (server-sent events), and
// polls only when the stream fails: the real @fal-ai/client against the fake, counted at the fake.
import { describe, expect, it } from 'vitest';
import { startFakeFal, type FakeFal } from '../fakes/fal.js';
import { buildApp, onCleanup, requester, untilProgress } from '../helpers.js';

async function fakeFal(latencyMs: number): Promise<FakeFal> {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs });
  onCleanup(() => fake.close());
  return fake;
}

const falEnv = (fake: FakeFal, extra: Record<string, string> = {}) => ({ FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url, ...extra });

const request = (count: number) => ({
  prompt: 'a heron at dawn',
  count,
  provider: 'fal' as const,
  model: 'fal-ai/flux/schnell',
  aspectRatio: '1:1' as const,
});

describe('fal status stream under the runner', () => {
  it('finishes a call through the stream with zero status polls', async () => {
    // Long enough that a poll every 10 ms (the test apps' interval) would have been made many times.
    const fake = await fakeFal(200);
    const app = await buildApp({ env: falEnv(fake) });
    const calls: string[] = [];
    app.engine.on('call', (call) => calls.push(`${call.operation} ${call.outcome}`));
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    expect(fake.submits()).toHaveLength(1);
    expect(fake.statusStreams()).toBe(1);
    expect(fake.statusPolls()).toBe(0);
    // the wait on the stream is a provider request in the metrics like any other
    expect(calls.slice(0, 3)).toEqual(['submit ok', 'watch ok', 'result ok']);
    const [requestId] = fake.requests.keys();
    const kinds = fake.calls.map((c) => (c.method === 'POST' ? 'submit' : c.path.replace(requestId!, 'ID').replace(/^\/files\/ID\/\d\.png$/, 'file')));
    expect(kinds).toEqual(['submit', '/fal-ai/flux/requests/ID/status/stream', '/fal-ai/flux/requests/ID', 'file', 'file', 'file', 'file']);
    expect(done.batches[0]).toMatchObject({ attempts: 1, failures: 0, state: 'done' });
  });

  it('falls back to polling when the stream keeps dropping mid-way (every reconnect too), and still finishes the same call', async () => {
    const fake = await fakeFal(200);
    // the first stream and its three reconnects
    fake.dropStatusStreams({ times: 4, afterEvents: 1 });
    const app = await buildApp({ env: falEnv(fake), falStreamRetryMs: [5, 10, 20] });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    expect(fake.submits()).toHaveLength(1);
    expect(fake.statusStreams()).toBe(4);
    expect(fake.statusPolls()).toBeGreaterThan(0);
    // every poll came after the stream (the fallback), and the result only once the call had ended
    const streamAt = fake.calls.findIndex((c) => c.path.endsWith('/status/stream'));
    const pollsAt = fake.calls.flatMap((c, i) => (c.path.endsWith('/status') ? [i] : []));
    expect(Math.min(...pollsAt)).toBeGreaterThan(streamAt);
    expect(done.batches[0]).toMatchObject({ attempts: 1, failures: 0, state: 'done' });
  });

  it('watches a call resumed after a restart on the stream, without polling or submitting it again', async () => {
    const fake = await fakeFal(800);
    const first = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '2' }) });
    const job = await first.engine.submit(request(8), requester());
    await untilProgress(first, (j) => j.id === job.id && j.batches.every((b) => b.requestId !== undefined));
    await first.close();

    const second = await buildApp({ env: falEnv(fake, { FAL_CONCURRENCY: '2' }), dir: first.dir });
    expect(await second.engine.resume()).toBe(1);
    const done = await second.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(8);
    expect(fake.submits()).toHaveLength(2);
    expect(fake.statusPolls()).toBe(0);
    // each call's stream was opened again by the second process
    for (const id of fake.requests.keys()) {
      expect(fake.calls.filter((c) => c.path.endsWith(`${id}/status/stream`)).length).toBeGreaterThanOrEqual(2);
    }
  });

  it('stops watching at the call deadline: one status poll decides, and the call is cancelled at fal', async () => {
    const fake = await fakeFal(60_000);
    const app = await buildApp({ env: falEnv(fake, { PROVIDER_TIMEOUT: '1', PROVIDER_MAX_ATTEMPTS: '1' }) });
    const done = await app.engine.waitFor((await app.engine.submit(request(4), requester())).id);
    expect(done.state).toBe('failed');
    expect(done.error).toContain('no result within 1 s');
    expect(fake.statusStreams()).toBe(1);
    expect(fake.statusPolls()).toBe(1);
    const [requestId] = fake.requests.keys();
    expect(fake.calls.filter((c) => c.method === 'PUT').map((c) => c.path)).toEqual([`/fal-ai/flux/requests/${requestId}/cancel`]);
  });
});
