// The notice board of one process, and the wait for a call's end (a notice, or a safety poll), on
// fake timers.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EXPECT_TTL_MS, MemoryCallNotices, NOTICE_TTL_MS, REPLAY_TTL_MS, untilEnded, type CallNotice } from '../../src/core/notices.js';
import type { CallStatus } from '../../src/core/provider.js';

const ended = (requestId: string): CallNotice => ({ provider: 'fal', requestId, status: { state: 'succeeded' }, output: { images: [] } });

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('MemoryCallNotices', () => {
  it('finds a notice published before anyone waited, until it expires', async () => {
    const board = new MemoryCallNotices(() => Date.now());
    await board.publish(ended('r1'));
    await expect(board.wait('fal', 'r1', new AbortController().signal)).resolves.toEqual(ended('r1'));
    // another provider's call of the same id is another call
    expect(await board.get('replicate', 'r1')).toBeUndefined();
    vi.setSystemTime(NOTICE_TTL_MS + 1);
    expect(await board.get('fal', 'r1')).toBeUndefined();
  });

  it('wakes a waiter when its notice is published, and rejects a waiter whose signal aborts', async () => {
    const board = new MemoryCallNotices(() => Date.now());
    const waiting = board.wait('fal', 'r1', new AbortController().signal);
    const stop = new AbortController();
    const abandoned = board.wait('fal', 'r2', stop.signal);
    stop.abort();
    await expect(abandoned).rejects.toMatchObject({ name: 'AbortError' });
    await board.publish(ended('r1'));
    await expect(waiting).resolves.toMatchObject({ requestId: 'r1' });
  });

  it('knows a call once it is expected, and says whether it knew it before', async () => {
    const board = new MemoryCallNotices(() => Date.now());
    expect(await board.isExpected('fal', 'r1')).toBe(false);
    expect(await board.expect('fal', 'r1')).toBe(false);
    expect(await board.expect('fal', 'r1')).toBe(true);
    expect(await board.isExpected('fal', 'r1')).toBe(true);
    vi.setSystemTime(EXPECT_TTL_MS + 1);
    expect(await board.isExpected('fal', 'r1')).toBe(false);
  });

  it('claims a delivery key once within the replay window; a released claim may be taken again', async () => {
    const board = new MemoryCallNotices(() => Date.now());
    expect(await board.claim('replicate:msg_1')).toBe(true);
    expect(await board.claim('replicate:msg_1')).toBe(false);
    await board.release('replicate:msg_1');
    expect(await board.claim('replicate:msg_1')).toBe(true);
    vi.setSystemTime(REPLAY_TTL_MS + 1);
    expect(await board.claim('replicate:msg_1')).toBe(true);
  });
});

describe('untilEnded', () => {
  /** A poll that answers `states` in turn (the last one again after), counting its calls. */
  function polls(...states: CallStatus[]) {
    let calls = 0;
    return {
      poll: async () => states[Math.min(calls++, states.length - 1)]!,
      get calls() {
        return calls;
      },
    };
  }

  it('returns the notice as soon as it is published, without a single poll', async () => {
    const board = new MemoryCallNotices(() => Date.now());
    const counter = polls({ state: 'running' });
    const end = untilEnded(board, 'fal', 'r1', new AbortController().signal, { safetyPollMs: 30_000, pollFirst: false, poll: counter.poll });
    await vi.advanceTimersByTimeAsync(10_000);
    await board.publish(ended('r1'));
    await expect(end).resolves.toEqual(ended('r1'));
    expect(counter.calls).toBe(0);
  });

  it('polls once per safety interval while no notice comes, and ends with the poll that sees the end', async () => {
    const board = new MemoryCallNotices(() => Date.now());
    const counter = polls({ state: 'running' }, { state: 'running' }, { state: 'failed', error: 'boom' });
    const end = untilEnded(board, 'fal', 'r1', new AbortController().signal, { safetyPollMs: 30_000, pollFirst: false, poll: counter.poll });
    await vi.advanceTimersByTimeAsync(29_999);
    expect(counter.calls).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(counter.calls).toBe(1);
    await vi.advanceTimersByTimeAsync(60_000);
    await expect(end).resolves.toEqual({ provider: 'fal', requestId: 'r1', status: { state: 'failed', error: 'boom' } });
    expect(counter.calls).toBe(3);
  });

  it('polls at once for a call it did not know (resumed after a restart)', async () => {
    const board = new MemoryCallNotices(() => Date.now());
    const counter = polls({ state: 'succeeded' });
    const end = untilEnded(board, 'fal', 'r1', new AbortController().signal, { safetyPollMs: 30_000, pollFirst: true, poll: counter.poll });
    await vi.advanceTimersByTimeAsync(0);
    await expect(end).resolves.toMatchObject({ status: { state: 'succeeded' } });
    expect(counter.calls).toBe(1);
  });

  it('rejects when its signal aborts, and when a poll fails (the runner then polls on its own)', async () => {
    const board = new MemoryCallNotices(() => Date.now());
    const stop = new AbortController();
    const aborted = untilEnded(board, 'fal', 'r1', stop.signal, { safetyPollMs: 30_000, pollFirst: false, poll: polls({ state: 'running' }).poll });
    stop.abort();
    await expect(aborted).rejects.toMatchObject({ name: 'AbortError' });

    const failing = untilEnded(board, 'fal', 'r2', new AbortController().signal, {
      safetyPollMs: 1_000,
      pollFirst: false,
      poll: () => Promise.reject(new Error('status poll failed')),
    });
    const settled = expect(failing).rejects.toThrow('status poll failed');
    await vi.advanceTimersByTimeAsync(1_000);
    await settled;
  });
});
