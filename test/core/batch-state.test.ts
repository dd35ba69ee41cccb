import { describe, expect, it } from 'vitest';
import {
  afterStatus,
  afterStatusError,
  phaseOf,
  restart,
  transition,
  type BatchEvent,
  type RetrySettings,
  type SavedOutput,
  type StepContext,
} from '../../src/core/batch-state.js';
import { advance, cancelJob, finishJob } from '../../src/core/job-state.js';
import { planBatches } from '../../src/core/planner.js';
import { ProviderError, RETRY_AFTER_CAP_MS } from '../../src/core/provider.js';
import type { Batch, ImageRecord, Job } from '../../src/core/types.js';

const T0 = Date.parse('2026-11-27T12:00:00.000Z');
const settings: RetrySettings = { maxAttempts: 3, callTimeoutMs: 60_000 };
const at = (ms: number) => new Date(T0 + ms).toISOString();
const context = (extra: Partial<StepContext> = {}): StepContext => ({ now: T0, settings, ...extra });

/** A fresh 4-image batch (the second of its job: images 5…8), seeded 46. */
function fresh(): Batch {
  return planBatches(8, 4, 42)[1]!;
}

/** Runs events one after the other from `batch`, as the engine would apply them. */
function run(batch: Batch, events: BatchEvent[], extra: Partial<StepContext> = {}) {
  let images: ImageRecord[] = [];
  let step = { batch, decision: { kind: 'stop' } as ReturnType<typeof transition>['decision'] };
  for (const event of events) {
    const next = transition(step.batch, event, context({ images, ...extra }));
    if (next.image) images = [...images, next.image];
    step = next;
  }
  return { ...step, images };
}

/** as the runner reports it: the image number the download decision gave (5 + output for a fresh batch) */
const saved = (output: number, index = 5 + output): BatchEvent => ({ type: 'saved', output, image: image(output), index });
function image(output: number): SavedOutput {
  return { file: `pending-review/00${output}.png`, width: 64, height: 64, contentType: 'image/png', nsfw: false };
}
const error = (kind: ConstructorParameters<typeof ProviderError>[0], details: ConstructorParameters<typeof ProviderError>[2] = {}): BatchEvent => ({
  type: 'error',
  error: new ProviderError(kind, `${kind} trouble`, details),
});

describe('batch machine: the way through', () => {
  it('starts a queued batch by submitting the whole batch, counting the attempt (queued → submitting)', () => {
    const step = transition(fresh(), { type: 'start' }, context());
    expect(step.decision).toEqual({ kind: 'submit', count: 4, seed: 46 });
    expect(step.batch).toMatchObject({ state: 'submitted', attempts: 1, submittedAt: at(0) });
    expect(step.batch.requestId).toBeUndefined();
    expect(phaseOf(step.batch)).toEqual({ name: 'submitting' });
  });

  it('records the request id and polls it until the call deadline (submitting → submitted)', () => {
    const { batch, decision } = run(fresh(), [{ type: 'start' }, { type: 'submitted', requestId: 'r1' }]);
    expect(decision).toEqual({ kind: 'poll', requestId: 'r1', deadline: T0 + 60_000 });
    expect(batch).toMatchObject({ requestId: 'r1', requestIds: ['r1'] });
    expect(phaseOf(batch)).toEqual({ name: 'submitted', requestId: 'r1' });
  });

  it('downloads all outputs at once, output k numbered k after the batch start (submitted → downloading k of n)', () => {
    const fetched = run(fresh(), [{ type: 'start' }, { type: 'submitted', requestId: 'r1' }, { type: 'fetched', outputs: 4 }]);
    expect(fetched.decision).toEqual({ kind: 'download', requestId: 'r1', outputs: [0, 1, 2, 3].map((output) => ({ output, image: 5 + output })) });
    const { batch, decision } = run(fresh(), [{ type: 'start' }, { type: 'submitted', requestId: 'r1' }, { type: 'fetched', outputs: 4 }, saved(2)]);
    expect(decision).toEqual({ kind: 'download', requestId: 'r1', outputs: [0, 1, 3].map((output) => ({ output, image: 5 + output })) });
    expect(phaseOf(batch)).toEqual({ name: 'downloading', requestId: 'r1', delivered: 1, of: 4 });
  });

  it('ends done when every image is kept, each image tied to its call and output (downloading → done)', () => {
    const { batch, decision, images } = run(fresh(), [
      { type: 'start' },
      { type: 'submitted', requestId: 'r1' },
      { type: 'fetched', outputs: 4 },
      ...[0, 1, 2, 3].map((output) => saved(output)),
    ]);
    expect(decision).toEqual({ kind: 'done' });
    expect(batch).toMatchObject({ state: 'done', delivered: 4, finishedAt: at(0) });
    expect(batch.download).toBeUndefined();
    expect(images.map((i) => [i.index, i.requestId, i.output, i.seed])).toEqual([
      [5, 'r1', 0, 46],
      [6, 'r1', 1, 46],
      [7, 'r1', 2, 46],
      [8, 'r1', 3, 46],
    ]);
  });

  it('skips outputs of the same call kept on an earlier try', () => {
    const batch = { ...fresh(), state: 'submitted' as const, requestId: 'r1', requestIds: ['r1'], attempts: 1, delivered: 2 };
    const kept = [0, 1].map((output) => ({ ...image(output), index: 5 + output, batchIndex: 1, requestId: 'r1', output, review: { status: 'pending' as const } }));
    const step = transition(batch, { type: 'fetched', outputs: 4 }, context({ images: kept }));
    expect(step.decision).toEqual({ kind: 'download', requestId: 'r1', outputs: [{ output: 2, image: 7 }, { output: 3, image: 8 }] });
  });

  it('never changes the record it was given', () => {
    const batch = Object.freeze(fresh());
    expect(() => run(batch, [{ type: 'start' }, { type: 'submitted', requestId: 'r1' }, { type: 'fetched', outputs: 4 }, saved(0)])).not.toThrow();
    expect(batch).toEqual(fresh());
  });
});

describe('batch machine: partial and refused output', () => {
  it('keeps a partial output and asks a new call for the rest only, with the seed moved on', () => {
    const partial = run(fresh(), [{ type: 'start' }, { type: 'submitted', requestId: 'r1' }, { type: 'fetched', outputs: 1 }, saved(0)]);
    expect(partial.decision).toEqual({ kind: 'retry', delayMs: 1000, reason: 'partial output: the provider returned 1 of 4 images' });
    expect(partial.batch).toMatchObject({ state: 'queued', delivered: 1, failures: 1, retryAt: at(1000) });
    expect(partial.batch.requestId).toBeUndefined();
    expect(phaseOf(partial.batch)).toEqual({ name: 'waiting', reason: 'partial output: the provider returned 1 of 4 images', until: T0 + 1000 });
    const again = transition(partial.batch, { type: 'start' }, context({ now: T0 + 1000 }));
    expect(again.decision).toEqual({ kind: 'submit', count: 3, seed: 47 });
    expect(again.batch).toMatchObject({ attempts: 2 });
    expect(again.batch.retryAt).toBeUndefined();
  });

  it('fails a refused output alone: the others are kept and nothing is asked again', () => {
    const { batch, decision, images } = run(fresh(), [
      { type: 'start' },
      { type: 'submitted', requestId: 'r1' },
      { type: 'fetched', outputs: 4 },
      saved(0),
      { type: 'refused', output: 1, reason: 'the image URL is not on an allowed download host' },
      saved(2),
      saved(3),
    ]);
    expect(decision).toEqual({ kind: 'fail', reason: '1 of 4 images refused: the image URL is not on an allowed download host' });
    expect(batch).toMatchObject({ state: 'failed', delivered: 3, failures: 1, finishedAt: at(0) });
    expect(batch.requestId).toBeUndefined();
    // Each output keeps its own number: the refused one's is left empty.
    expect(images.map((i) => [i.index, i.output])).toEqual([
      [5, 0],
      [7, 2],
      [8, 3],
    ]);
  });

  it('ends done despite a refusal when the call returned enough other outputs', () => {
    const { decision } = run(fresh(), [
      { type: 'start' },
      { type: 'submitted', requestId: 'r1' },
      { type: 'fetched', outputs: 5 },
      { type: 'refused', output: 0, reason: 'too large' },
      ...[1, 2, 3].map((output) => saved(output)),
    ]);
    // The fifth output, beyond the four asked, takes the refused output's number.
    expect(decision).toEqual({ kind: 'download', requestId: 'r1', outputs: [{ output: 4, image: 5 }] });
    const { decision: last, images } = run(fresh(), [
      { type: 'start' },
      { type: 'submitted', requestId: 'r1' },
      { type: 'fetched', outputs: 5 },
      { type: 'refused', output: 0, reason: 'too large' },
      ...[1, 2, 3].map((output) => saved(output)),
      saved(4, 5),
    ]);
    expect(last).toEqual({ kind: 'done' });
    expect(images.map((i) => [i.index, i.output])).toEqual([[6, 1], [7, 2], [8, 3], [5, 4]]);
  });
});

describe('batch machine: failures', () => {
  const submitted = () => run(fresh(), [{ type: 'start' }, { type: 'submitted', requestId: 'r1' }]).batch;
  const queuedTry = () => run(fresh(), [{ type: 'start' }]).batch;

  it('retries a failed submit after 1 s, then 1.5 s, and fails the batch at the attempt limit', () => {
    const one = transition(queuedTry(), error('server', { status: 500 }), context());
    expect(one.decision).toEqual({ kind: 'retry', delayMs: 1000, reason: 'server trouble' });
    const two = transition({ ...one.batch, state: 'submitted' }, error('server'), context());
    expect(two.decision).toMatchObject({ kind: 'retry', delayMs: 1500 });
    const three = transition({ ...two.batch, state: 'submitted' }, error('server'), context());
    expect(three.decision).toEqual({ kind: 'fail', reason: 'server trouble' });
    expect(three.batch).toMatchObject({ state: 'failed', failures: 3, error: 'server trouble', finishedAt: at(0) });
    expect(three.batch.retryAt).toBeUndefined();
  });

  it('caps the backoff at retryMaxMs', () => {
    const batch = { ...queuedTry(), failures: 20 };
    const step = transition(batch, error('server'), context({ settings: { ...settings, maxAttempts: 50 } }));
    expect(step.decision).toMatchObject({ kind: 'retry', delayMs: 10_000 });
  });

  it('fails at once on an error that cannot be retried', () => {
    const step = transition(queuedTry(), error('auth', { status: 401 }), context());
    expect(step.decision).toEqual({ kind: 'fail', reason: 'auth trouble' });
    expect(step.batch.failures).toBe(1);
  });

  it('counts a 429 apart from failures, pauses the lane for its Retry-After and waits at least as long', () => {
    const step = transition(queuedTry(), error('rate_limited', { status: 429, retryAfterMs: 4_000 }), context());
    expect(step.decision).toEqual({ kind: 'retry', delayMs: 4_000, reason: 'rate_limited trouble', pauseLaneMs: 4_000 });
    expect(step.batch).toMatchObject({ state: 'queued', failures: 0, throttled: 1, retryAt: at(4_000) });
  });

  it('pauses the lane by the backoff when a 429 names no Retry-After', () => {
    const batch = { ...queuedTry(), throttled: 2 };
    expect(transition(batch, error('rate_limited'), context()).decision).toEqual({
      kind: 'retry',
      delayMs: 2_250,
      reason: 'rate_limited trouble',
      pauseLaneMs: 2_250,
    });
  });

  it('honours a provider 429 up to 5 minutes, and anyone else’s Retry-After only up to the backoff ceiling', () => {
    const limited = transition(queuedTry(), error('rate_limited', { retryAfterMs: 3_600_000 }), context());
    expect(limited.decision).toMatchObject({ delayMs: RETRY_AFTER_CAP_MS, pauseLaneMs: RETRY_AFTER_CAP_MS });
    const busy = transition(queuedTry(), error('server', { status: 503, retryAfterMs: 60_000 }), context());
    expect(busy.decision).toEqual({ kind: 'retry', delayMs: 10_000, reason: 'server trouble' });
  });

  it('waits out 429s up to four times the attempt limit, then fails', () => {
    const almost = { ...queuedTry(), throttled: 3 * 4 - 2 };
    expect(transition(almost, error('rate_limited'), context()).decision.kind).toBe('retry');
    const last = transition({ ...almost, throttled: 3 * 4 - 1 }, error('rate_limited', { retryAfterMs: 500 }), context());
    expect(last.decision).toEqual({ kind: 'fail', reason: 'rate_limited trouble', pauseLaneMs: 500 });
    expect(last.batch).toMatchObject({ state: 'failed', throttled: 12, failures: 0 });
  });

  it('keeps the call when its download failed: the retry polls it instead of paying again', () => {
    const step = transition(submitted(), error('server', { status: 503 }), context());
    expect(step.batch).toMatchObject({ state: 'submitted', requestId: 'r1', failures: 1 });
    expect(restart(step.batch, T0 + 1000, settings)).toEqual({ kind: 'poll', requestId: 'r1', deadline: T0 + 60_000 });
  });

  it('sends a lost call (not_found with a request id) again', () => {
    const step = transition(submitted(), error('not_found', { status: 404 }), context());
    expect(step.decision).toEqual({ kind: 'retry', delayMs: 1000, reason: 'the provider no longer knows call r1; sending it again' });
    expect(step.batch.state).toBe('queued');
    expect(step.batch.requestId).toBeUndefined();
    expect(step.batch.requestIds).toEqual(['r1']);
  });

  it('drops a call past its deadline (cancelled at the provider) so that it is sent again', () => {
    const poll = afterStatus({ state: 'running' }, { now: T0 + 60_001, deadline: T0 + 60_000, settings });
    expect(poll).toMatchObject({ kind: 'abandon' });
    if (poll.kind !== 'abandon') return;
    expect(poll.error).toMatchObject({ kind: 'timeout', message: 'no result within 60 s; the call was cancelled' });
    const step = transition(submitted(), { type: 'error', error: poll.error, dropCall: true }, context({ now: T0 + 60_001 }));
    expect(step.decision).toMatchObject({ kind: 'retry', delayMs: 1000 });
    expect(step.batch.state).toBe('queued');
    expect(step.batch.requestId).toBeUndefined();
  });

  it('cancels: the batch ends canceled and the call in flight is cancelled at the provider', () => {
    const step = transition(submitted(), { ...error('timeout'), aborted: true } as BatchEvent, context({ canceled: true }));
    expect(step.decision).toEqual({ kind: 'cancel', requestId: 'r1' });
    expect(step.batch).toMatchObject({ state: 'canceled', finishedAt: at(0) });
    expect(transition(fresh(), { type: 'start' }, context({ canceled: true })).decision).toEqual({ kind: 'stop' });
  });

  it('leaves a batch as saved when a shutdown aborts it', () => {
    const batch = submitted();
    const step = transition(batch, { ...error('timeout'), aborted: true } as BatchEvent, context({ stopping: true }));
    expect(step).toEqual({ batch, decision: { kind: 'stop' } });
  });

  it('ignores anything that happens to a finished batch', () => {
    const done = { ...fresh(), state: 'done' as const };
    expect(transition(done, error('server'), context())).toEqual({ batch: done, decision: { kind: 'stop' } });
  });
});

describe('batch machine: polling a call', () => {
  const poll = { now: T0, deadline: T0 + 60_000, settings, typicalCallMs: 5_000 };

  it('waits a tenth of a typical call between polls, and fetches once the call succeeded', () => {
    expect(afterStatus({ state: 'running' }, poll)).toEqual({ kind: 'wait', ms: 500 });
    expect(afterStatus({ state: 'queued', queuePosition: 3 }, { ...poll, settings: { ...settings, pollIntervalMs: 20 } })).toEqual({ kind: 'wait', ms: 20 });
    expect(afterStatus({ state: 'succeeded' }, { ...poll, now: T0 + 600_000 })).toEqual({ kind: 'fetch' });
  });

  it('gives up a call the provider failed or cancelled, dropping it', () => {
    expect(afterStatus({ state: 'failed', error: 'model crashed' }, poll)).toMatchObject({
      kind: 'give_up',
      dropCall: true,
      error: { kind: 'failed', message: 'the provider reported: model crashed' },
    });
    expect(afterStatus({ state: 'canceled' }, poll)).toMatchObject({ kind: 'give_up', dropCall: true });
  });

  it('waits out a transient status error with backoff or its Retry-After, keeping the call', () => {
    expect(afterStatusError(new ProviderError('server', 'x'), 2, false, poll)).toEqual({ kind: 'wait', ms: 1500 });
    expect(afterStatusError(new ProviderError('rate_limited', 'x', { retryAfterMs: 9_000 }), 1, false, poll)).toEqual({ kind: 'wait', ms: 9_000 });
    expect(afterStatusError(new ProviderError('server', 'x'), 1, false, { ...poll, now: T0 + 60_001 })).toMatchObject({ kind: 'abandon' });
  });

  it('hands a lasting or aborted status error to the batch, keeping the call', () => {
    expect(afterStatusError(new ProviderError('auth', 'x'), 1, false, poll)).toMatchObject({ kind: 'give_up', dropCall: false });
    expect(afterStatusError(new ProviderError('timeout', 'x'), 1, true, poll)).toMatchObject({ kind: 'give_up', dropCall: false });
  });
});

describe('batch machine: a restart in each state', () => {
  const base = fresh();
  const submitting = { ...base, state: 'submitted' as const, attempts: 1, submittedAt: at(-5_000) };
  const submitted = { ...submitting, requestId: 'r1', requestIds: ['r1'] };

  it('submits a queued batch', () => {
    expect(restart(base, T0, settings)).toEqual({ kind: 'submit', count: 4, seed: 46 });
  });

  it('submits again a batch whose request id was never saved (submitting)', () => {
    expect(restart(submitting, T0, settings)).toEqual({ kind: 'submit', count: 4, seed: 46 });
    expect(transition(submitting, { type: 'start' }, context()).batch.attempts).toBe(2);
  });

  it('polls the saved request id of a submitted batch and never submits it again', () => {
    expect(restart(submitted, T0, settings)).toEqual({ kind: 'poll', requestId: 'r1', deadline: T0 + 55_000 });
    const step = transition(submitted, { type: 'start' }, context());
    expect(step.decision).toEqual({ kind: 'poll', requestId: 'r1', deadline: T0 + 55_000 });
    expect(step.batch.attempts).toBe(1);
  });

  it('polls a batch cut off while downloading, to fetch the outputs it has not kept yet', () => {
    const downloading = { ...submitted, delivered: 2, download: { outputs: 4, refused: [] } };
    expect(phaseOf(downloading).name).toBe('downloading');
    expect(restart(downloading, T0, settings)).toMatchObject({ kind: 'poll', requestId: 'r1' });
    expect(transition(downloading, { type: 'start' }, context()).batch.download).toBeUndefined();
  });

  it('keeps the rest of a retry’s wait, and at most the longest Retry-After', () => {
    const waiting = { ...base, failures: 1, error: 'server trouble', retryAt: at(4_000) };
    expect(restart(waiting, T0 + 1_000, settings)).toEqual({ kind: 'retry', delayMs: 3_000, reason: 'server trouble' });
    expect(restart(waiting, T0 + 4_000, settings)).toEqual({ kind: 'submit', count: 4, seed: 46 });
    expect(restart({ ...waiting, retryAt: at(365 * 86_400_000) }, T0, settings)).toMatchObject({ delayMs: RETRY_AFTER_CAP_MS });
    expect(restart({ ...waiting, retryAt: 'not a date' }, T0, settings)).toMatchObject({ kind: 'submit' });
  });

  it('does nothing for a batch that has ended', () => {
    for (const state of ['done', 'failed', 'canceled'] as const) expect(restart({ ...submitted, state }, T0, settings)).toEqual({ kind: 'stop' });
  });

  it('resumes a record written by the previous version (no retryAt, no download) like any other', () => {
    const old = JSON.parse(
      '{"index":1,"start":4,"size":4,"seed":46,"state":"submitted","requestId":"r1","requestIds":["r1"],"attempts":1,"failures":0,"delivered":0,"submittedAt":"2026-11-27T11:59:55.000Z"}',
    ) as Batch;
    expect(phaseOf(old)).toEqual({ name: 'submitted', requestId: 'r1' });
    expect(restart(old, T0, settings)).toEqual({ kind: 'poll', requestId: 'r1', deadline: T0 + 55_000 });
  });
});

describe('job transitions', () => {
  const job = (): Job => ({
    id: '20261127-0000abcd',
    createdAt: at(0),
    updatedAt: at(0),
    requester: { tenant: 'g', userId: 'u', platform: 'cli' },
    request: { prompt: 'fox', count: 8, provider: 'fal', model: 'm', aspectRatio: '1:1', seed: 42 },
    state: 'queued',
    batches: planBatches(8, 4, 42),
    images: [],
  });

  it('runs a job from its first batch’s start, changing a copy and never the record given', () => {
    const before = Object.freeze(job());
    const step = advance(before, 1, { type: 'start' }, { now: T0, settings });
    expect(step.job).toMatchObject({ state: 'running' });
    expect(step.job!.batches[0]).toBe(before.batches[0]);
    expect(before.state).toBe('queued');
  });

  it('reports no change when an event changes nothing', () => {
    const canceled = { ...job(), canceledBy: 'Ada' };
    expect(advance(canceled, 0, { type: 'start' }, { now: T0, settings })).toEqual({ decision: { kind: 'stop' } });
  });

  it('adds a kept image in order of its number', () => {
    let current: Job = job();
    for (const [index, event] of [
      [1, { type: 'start' }],
      [1, { type: 'submitted', requestId: 'r2' }],
      [1, { type: 'fetched', outputs: 4 }],
      [1, saved(0)],
      [0, { type: 'start' }],
      [0, { type: 'submitted', requestId: 'r1' }],
      [0, { type: 'fetched', outputs: 4 }],
      [0, saved(0, 1)],
    ] as [number, BatchEvent][]) {
      current = advance(current, index, event, { now: T0, settings }).job ?? current;
    }
    expect(current.images.map((i) => i.index)).toEqual([1, 5]);
  });

  it('cancels the waiting batches at once and leaves running ones to their call', () => {
    const running = job();
    running.batches[0] = { ...running.batches[0]!, state: 'submitted', requestId: 'r1' };
    const canceled = cancelJob(running, 'Ada', T0);
    expect(canceled.canceledBy).toBe('Ada');
    expect(canceled.batches.map((b) => b.state)).toEqual(['submitted', 'canceled']);
  });

  it('ends a job completed, failed or canceled, naming what failed', () => {
    const some = job();
    some.batches = [{ ...some.batches[0]!, state: 'done', delivered: 4 }, { ...some.batches[1]!, state: 'failed', error: 'HTTP 500' }];
    some.images = [1, 2, 3, 4].map((index) => ({ ...image(0), index, batchIndex: 0, review: { status: 'pending' as const } }));
    expect(finishJob(some, T0)).toMatchObject({ state: 'completed', error: 'completed with 4 images failed: HTTP 500', finishedAt: at(0) });
    expect(finishJob({ ...some, images: [] }, T0)).toMatchObject({ state: 'failed', error: 'all 8 images failed: HTTP 500' });
    const canceled = finishJob({ ...job(), canceledBy: 'Ada' }, T0);
    expect(canceled).toMatchObject({ state: 'canceled', error: 'canceled by Ada with 0 images delivered' });
    expect(canceled.batches.map((b) => b.state)).toEqual(['canceled', 'canceled']);
  });
});
