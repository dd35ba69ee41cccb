/**
 * The engine's batch policy on in-memory ports (MemoryJobs, MemoryFiles, ScriptedProvider) and fake
 * timers: the production delays, asserted to the millisecond, in milliseconds of real time.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ProviderError, RETRY_AFTER_CAP_MS } from '../../src/core/provider.js';
import type { Batch, Job } from '../../src/core/types.js';
import { memoryCore, request, requester, settle } from './memory-core.js';
import { ScriptedProvider } from './scripted-provider.js';

const rateLimited = (retryAfterMs?: number) =>
  new ProviderError('rate_limited', 'fal is rate limiting (HTTP 429)', { status: 429, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
const serverError = (details: { retryAfterMs?: number } = {}) => new ProviderError('server', 'fal answered HTTP 500: Internal Server Error', { status: 500, ...details });

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('engine on in-memory ports', () => {
  it('delivers 10 images from three calls of 4, 4 and 2, numbered in order, with the manifest at the end', async () => {
    const { engine, provider, files } = memoryCore();
    const job = await engine.submit(request(10, { seed: 42 }), requester());
    const done = await settle(engine.waitFor(job.id));
    expect(done.state).toBe('completed');
    expect(provider.paid().map((s) => [s.call.count, s.call.seed])).toEqual([
      [4, 42],
      [4, 46],
      [2, 50],
    ]);
    expect(done.images.map((i) => i.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(files.list(job.id, 'pending-review')).toEqual(done.images.map((i) => i.file.split('/')[1]));
    expect(files.manifests.get(job.id)).toMatchObject({ state: 'completed', summary: { requested: 10, delivered: 10 } });
  });

  it('hands out frozen snapshots: what a reader holds does not move, and cannot change the engine’s job', async () => {
    const { engine } = memoryCore();
    const seen: Readonly<Job>[] = [];
    engine.on('progress', (_, job) => seen.push(job));
    const job = await engine.submit(request(4), requester());
    const [snapshot] = engine.activeJobs();
    const stateThen = snapshot!.state;
    expect(stateThen).not.toBe('completed');
    expect(Object.isFrozen(snapshot)).toBe(true);
    expect(() => ((snapshot as Job).state = 'failed')).toThrow(TypeError);
    expect(() => ((snapshot!.batches[0] as Batch).state = 'done')).toThrow(TypeError);
    const done = await settle(engine.waitFor(job.id));
    expect(done.state).toBe('completed');
    expect(snapshot!.state).toBe(stateThen);
    // each event carries the job as it was then: the image counts climb, they are not all the last one
    // (accepted, started, submitted, fetched, four images kept, finished)
    expect(seen.map((j) => j.images.length)).toEqual([0, 0, 0, 0, 1, 2, 3, 4, 4]);
    expect(seen.at(-1)!.state).toBe('completed');
  });
});

describe('retries', () => {
  it('retries a failing submit after 1 s and 1.5 s, then fails the batch with the provider’s reason', async () => {
    const provider = new ScriptedProvider({ calls: [{ submitError: serverError() }, { submitError: serverError() }, { submitError: serverError() }] });
    const { engine } = memoryCore({ provider });
    const done = await settle(engine.waitFor((await engine.submit(request(4), requester())).id));
    expect(provider.submits.map((s) => s.at)).toEqual([0, 1000, 2500]);
    expect(done.batches[0]).toMatchObject({ state: 'failed', attempts: 3, failures: 3, error: 'fal answered HTTP 500: Internal Server Error' });
    expect(done).toMatchObject({ state: 'failed', error: 'all 4 images failed: fal answered HTTP 500: Internal Server Error' });
  });

  it('keeps what a partial output delivered and asks a new call only for the rest, one backoff later', async () => {
    const provider = new ScriptedProvider({ calls: [{ outputs: 1 }] });
    const { engine } = memoryCore({ provider });
    const done = await settle(engine.waitFor((await engine.submit(request(4, { seed: 7 }), requester())).id));
    expect(done.state).toBe('completed');
    expect(provider.paid().map((s) => [s.at, s.call.count, s.call.seed])).toEqual([
      [0, 4, 7],
      [1000, 3, 8],
    ]);
    expect(done.images.map((i) => [i.index, i.requestId, i.output])).toEqual([
      [1, 'call-1', 0],
      [2, 'call-2', 0],
      [3, 'call-2', 1],
      [4, 'call-2', 2],
    ]);
    expect(done.batches[0]).toMatchObject({ delivered: 4, attempts: 2, failures: 1, requestIds: ['call-1', 'call-2'] });
  });

  it('fails a refused output alone: the other images are kept and no second call is paid for', async () => {
    const provider = new ScriptedProvider({ calls: [{ refused: [1] }] });
    const { engine } = memoryCore({ provider });
    const done = await settle(engine.waitFor((await engine.submit(request(4), requester())).id));
    expect(provider.paid()).toHaveLength(1);
    expect(done.images.map((i) => [i.index, i.output])).toEqual([
      [1, 0],
      [3, 2],
      [4, 3],
    ]);
    expect(done.batches[0]).toMatchObject({ state: 'failed', delivered: 3, error: '1 of 4 images refused: the image URL is not on an allowed download host' });
    expect(done).toMatchObject({ state: 'completed', error: 'completed with 1 image failed: 1 of 4 images refused: the image URL is not on an allowed download host' });
  });

  it('downloads again only the outputs a failed download missed, polling the same call', async () => {
    const provider = new ScriptedProvider({ calls: [{ downloadErrors: { 2: new ProviderError('server', 'image download failed (HTTP 503)', { status: 503 }) } }] });
    const { engine } = memoryCore({ provider });
    const done = await settle(engine.waitFor((await engine.submit(request(4), requester())).id));
    expect(provider.paid()).toHaveLength(1);
    expect(provider.downloads.map((d) => [d.at, d.output])).toEqual([
      [0, 0],
      [0, 1],
      [0, 2],
      [0, 3],
      [1000, 2],
    ]);
    expect(done.images.map((i) => [i.requestId, i.output])).toEqual([0, 1, 2, 3].map((output) => ['call-1', output]));
    expect(done.batches[0]).toMatchObject({ state: 'done', attempts: 1, failures: 1 });
  });

  it('sends a call again that the provider lost', async () => {
    const provider = new ScriptedProvider({ calls: [{ lost: true }] });
    const { engine } = memoryCore({ provider });
    const done = await settle(engine.waitFor((await engine.submit(request(4), requester())).id));
    expect(done.state).toBe('completed');
    expect(provider.paid().map((s) => s.at)).toEqual([0, 1000]);
    expect(done.batches[0]).toMatchObject({ requestIds: ['call-1', 'call-2'], failures: 1 });
  });

  it('cancels a call past its deadline at the provider and sends it again', async () => {
    const provider = new ScriptedProvider({ calls: [{ hangs: true }] });
    const { engine } = memoryCore({ provider, settings: { callTimeoutMs: 60_000 } });
    const done = await settle(engine.waitFor((await engine.submit(request(4), requester())).id));
    expect(done.state).toBe('completed');
    expect(provider.cancels).toEqual(['call-1']);
    // polled every 500 ms; the first status past 60 s gives it up, and the retry waits its 1 s
    expect(provider.paid().map((s) => s.at)).toEqual([0, 61_500]);
  });
});

describe('429s', () => {
  it('pauses the whole provider lane for a Retry-After: another tenant’s batch is not submitted meanwhile', async () => {
    const provider = new ScriptedProvider({ calls: [{ submitError: rateLimited(5_000) }] });
    const { engine } = memoryCore({ provider });
    const a = await engine.submit(request(4, { prompt: 'A' }), requester('guild-A'));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(provider.submits.map((s) => [s.at, s.error])).toEqual([[0, 'fal is rate limiting (HTTP 429)']]);
    const b = await engine.submit(request(4, { prompt: 'B' }), requester('guild-B'));
    await settle(Promise.all([engine.waitFor(a.id), engine.waitFor(b.id)]));
    const at = (prompt: string) => provider.paid().filter((s) => s.call.prompt === prompt).map((s) => s.at);
    expect(at('B')).toEqual([5_000]);
    expect(at('A')).toEqual([5_000]);
  });

  it('does not pause the lane for a 5xx: its Retry-After delays that batch alone, up to 10 s', async () => {
    const provider = new ScriptedProvider({ calls: [{ submitError: serverError({ retryAfterMs: 60_000 }) }] });
    const { engine } = memoryCore({ provider });
    const a = await engine.submit(request(4, { prompt: 'A' }), requester('guild-A'));
    await vi.advanceTimersByTimeAsync(1_000);
    const b = await engine.submit(request(4, { prompt: 'B' }), requester('guild-B'));
    await settle(Promise.all([engine.waitFor(a.id), engine.waitFor(b.id)]));
    const at = (prompt: string) => provider.paid().filter((s) => s.call.prompt === prompt).map((s) => s.at);
    expect(at('B')).toEqual([1_000]);
    expect(at('A')).toEqual([10_000]);
  });

  it('honours a provider’s Retry-After up to 5 minutes', async () => {
    const provider = new ScriptedProvider({ calls: [{ submitError: rateLimited(3_600_000) }] });
    const { engine } = memoryCore({ provider });
    await settle(engine.waitFor((await engine.submit(request(4), requester())).id));
    expect(provider.submits.map((s) => s.at)).toEqual([0, RETRY_AFTER_CAP_MS]);
  });

  it('waits out more 429s than the attempt limit, backing off 1 s ×1.5 when no Retry-After is given', async () => {
    const provider = new ScriptedProvider({ calls: Array.from({ length: 4 }, () => ({ submitError: rateLimited() })) });
    const { engine } = memoryCore({ provider, settings: { maxAttempts: 2 } });
    const done = await settle(engine.waitFor((await engine.submit(request(4), requester())).id));
    expect(provider.submits.map((s) => s.at)).toEqual([0, 1000, 2500, 4750, 8125]);
    expect(done.batches[0]).toMatchObject({ state: 'done', attempts: 5, failures: 0, throttled: 4 });
  });

  it('gives up after four times the attempt limit of 429s', async () => {
    const provider = new ScriptedProvider({ calls: Array.from({ length: 9 }, () => ({ submitError: rateLimited(100) })) });
    const { engine } = memoryCore({ provider, settings: { maxAttempts: 2 } });
    const done = await settle(engine.waitFor((await engine.submit(request(4), requester())).id));
    expect(provider.submits).toHaveLength(8);
    expect(done.batches[0]).toMatchObject({ state: 'failed', attempts: 8, throttled: 8, failures: 0 });
  });
});

describe('scheduling', () => {
  it('lets a second tenant’s small job through at the next free slot, not behind a first tenant’s ten calls', async () => {
    const provider = new ScriptedProvider({ calls: Array.from({ length: 12 }, () => ({ takesMs: 1_000 })) });
    const { engine } = memoryCore({ provider, settings: { lanes: { fal: { concurrency: 1 } } } });
    const big = await engine.submit(request(40, { prompt: 'big' }), requester('guild-A'));
    await vi.advanceTimersByTimeAsync(100);
    const small = await engine.submit(request(4, { prompt: 'small' }), requester('guild-B'));
    expect((await engine.listJobs('guild-B'))[0]!.progress.queuePosition).toBe(1);
    await settle(engine.waitFor(small.id));
    expect(provider.paid().map((s) => [s.call.prompt, s.at])).toEqual([
      ['big', 0],
      ['small', 1_000],
      ['big', 2_000],
    ]);
    await engine.cancel(big.id, { id: 'test' });
    await settle(engine.waitFor(big.id));
  });

  it('cancels a job: its call in flight is cancelled at the provider and its waiting batches never start', async () => {
    const provider = new ScriptedProvider({ calls: [{ takesMs: 10_000 }] });
    const { engine, files } = memoryCore({ provider, settings: { lanes: { fal: { concurrency: 1 } } } });
    const job = await engine.submit(request(12), requester());
    await vi.advanceTimersByTimeAsync(2_000);
    await engine.cancel(job.id, { id: 'user-1', name: 'Ada' });
    const done = await settle(engine.waitFor(job.id));
    expect(provider.paid()).toHaveLength(1);
    expect(provider.cancels).toEqual(['call-1']);
    expect(done.batches.map((b) => b.state)).toEqual(['canceled', 'canceled', 'canceled']);
    expect(done).toMatchObject({ state: 'canceled', error: 'canceled by Ada with 0 images delivered' });
    expect(files.manifests.get(job.id)).toMatchObject({ state: 'canceled' });
  });
});

describe('restarts', () => {
  it('has the request id saved before it polls the call, even on a slow store', async () => {
    const provider = new ScriptedProvider();
    const { engine, jobs } = memoryCore({ provider });
    jobs.saveDelayMs = 50;
    const job = await settle(engine.submit(request(4), requester()));
    const storedAtPoll: (string | undefined)[] = [];
    provider.onStatus = () => storedAtPoll.push(jobs.jobs.get(job.id)?.batches[0]?.requestId);
    await settle(engine.waitFor(job.id));
    expect(storedAtPoll[0]).toBe('call-1');
  });

  it('polls a call submitted before the restart and never submits it again', async () => {
    const provider = new ScriptedProvider({ calls: [{ takesMs: 10_000 }] });
    const first = memoryCore({ provider });
    const job = await first.engine.submit(request(4), requester());
    await vi.advanceTimersByTimeAsync(2_000);
    await settle(first.engine.stop());
    expect(first.jobs.jobs.get(job.id)!.batches[0]).toMatchObject({ state: 'submitted', requestId: 'call-1' });

    const second = memoryCore({ provider, jobs: first.jobs, files: first.files });
    expect(await second.engine.resume()).toBe(1);
    const done = await settle(second.engine.waitFor(job.id));
    expect(done.state).toBe('completed');
    expect(provider.submits).toHaveLength(1);
    expect(done.batches[0]).toMatchObject({ attempts: 1, requestIds: ['call-1'] });
  });

  it('keeps a retry’s wait across a restart', async () => {
    const provider = new ScriptedProvider({ calls: [{ submitError: rateLimited(120_000) }] });
    const first = memoryCore({ provider });
    const job = await first.engine.submit(request(4), requester());
    await vi.advanceTimersByTimeAsync(1_000);
    await settle(first.engine.stop());
    const second = memoryCore({ provider, jobs: first.jobs, files: first.files });
    await second.engine.resume();
    await settle(second.engine.waitFor(job.id));
    expect(provider.submits.map((s) => s.at)).toEqual([0, 120_000]);
  });

  it('finishes a job stored by the previous version mid-call, polling its saved request id', async () => {
    const provider = new ScriptedProvider();
    const requestId = await provider.submit({ prompt: 'a fox', model: 'fal-ai/flux/schnell', aspectRatio: '1:1', count: 4, seed: 42 });
    const { engine, jobs } = memoryCore({ provider });
    // as written before batches had retryAt or download
    const stored = JSON.parse(`{
      "id": "20261127-0000abcd", "createdAt": "1970-01-01T00:00:00.000Z", "updatedAt": "1970-01-01T00:00:00.000Z",
      "requester": { "tenant": "guild-1", "userId": "user-1", "platform": "cli" },
      "request": { "prompt": "a fox", "count": 4, "provider": "fal", "model": "fal-ai/flux/schnell", "aspectRatio": "1:1", "seed": 42 },
      "state": "running",
      "batches": [{ "index": 0, "start": 0, "size": 4, "seed": 42, "state": "submitted", "requestId": "${requestId}",
        "requestIds": ["${requestId}"], "attempts": 1, "failures": 0, "delivered": 0, "submittedAt": "1970-01-01T00:00:00.000Z" }],
      "images": [], "outputDir": "/memory/output"
    }`) as Job;
    await jobs.save(stored);
    expect(await engine.resume()).toBe(1);
    const done = await settle(engine.waitFor(stored.id));
    expect(done.state).toBe('completed');
    expect(done.images.map((i) => [i.index, i.requestId])).toEqual([1, 2, 3, 4].map((index) => [index, requestId]));
    expect(provider.submits).toHaveLength(1);
  });
});
