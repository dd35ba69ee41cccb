import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FairScheduler, type ScheduledTask } from '../../src/core/scheduler.js';

/** A task that records its start and finishes when the test says so (or at once). */
function recorder() {
  const started: { key: string; at: number }[] = [];
  const releases = new Map<string, () => void>();
  let running = 0;
  let maxRunning = 0;
  const task = (tenant: string, key: string, jobId = tenant, hold = false): ScheduledTask => ({
    key,
    jobId,
    tenant,
    run: async () => {
      started.push({ key, at: Date.now() });
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      if (hold) await new Promise<void>((resolve) => releases.set(key, resolve));
      running -= 1;
    },
  });
  return {
    task,
    started,
    release: (key: string) => releases.get(key)?.(),
    get maxRunning() {
      return maxRunning;
    },
  };
}

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('FairScheduler', () => {
  it('interleaves two tenants round-robin instead of first come, first served', async () => {
    const r = recorder();
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 1 } } });
    for (let i = 1; i <= 6; i += 1) scheduler.enqueue('fal', r.task('A', `A${i}`));
    for (let i = 1; i <= 3; i += 1) scheduler.enqueue('fal', r.task('B', `B${i}`));
    await vi.runAllTimersAsync();
    await scheduler.idle();
    // B arrives while A1 runs: B's first call is next, then they take turns
    expect(r.started.map((s) => s.key)).toEqual(['A1', 'B1', 'A2', 'B2', 'A3', 'B3', 'A4', 'A5', 'A6']);
  });

  it('serves a small job that arrives behind a huge one at the next free slot', async () => {
    const r = recorder();
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 2 } } });
    for (let i = 1; i <= 250; i += 1) scheduler.enqueue('fal', r.task('A', `A${i}`, 'A', true));
    scheduler.enqueue('fal', r.task('B', 'B1', 'B', true));
    expect(scheduler.queuePosition('fal', 'B')).toBe(1);
    r.release('A1');
    await vi.advanceTimersByTimeAsync(0);
    r.release('A2');
    await vi.advanceTimersByTimeAsync(0);
    expect(r.started.map((s) => s.key).slice(0, 4)).toEqual(['A1', 'A2', 'B1', 'A3']);
    scheduler.stop();
  });

  it('never runs more calls at once than the lane allows', async () => {
    const r = recorder();
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 3 } } });
    for (let i = 0; i < 10; i += 1) scheduler.enqueue('fal', r.task(`T${i % 2}`, `k${i}`, `j${i}`, true));
    await vi.advanceTimersByTimeAsync(0);
    expect(scheduler.inFlight('fal')).toBe(3);
    for (let i = 0; i < 10; i += 1) {
      for (const s of r.started) r.release(s.key);
      await vi.advanceTimersByTimeAsync(0);
    }
    expect(r.started).toHaveLength(10);
    expect(r.maxRunning).toBe(3);
  });

  it('sends at most N rate-counted requests in any rolling window of the provider rate', async () => {
    const sent: number[] = [];
    const scheduler = new FairScheduler({ lanes: { replicate: { concurrency: 10, rateLimit: { limit: 3, intervalMs: 1000 } } } });
    for (let i = 0; i < 10; i += 1) {
      scheduler.enqueue('replicate', {
        key: `k${i}`,
        jobId: 'j',
        tenant: 'A',
        run: () => scheduler.throttle('replicate', async () => void sent.push(Date.now())),
      });
    }
    await vi.advanceTimersByTimeAsync(5000);
    for (const t of sent) expect(sent.filter((u) => u >= t && u < t + 1000).length).toBeLessThanOrEqual(3);
    // and it does not dawdle: three at once, then three as each window (1 s and its 1 % margin) ends
    expect(sent).toEqual([0, 0, 0, 1010, 1010, 1010, 2020, 2020, 2020, 3030]);
  });

  it('counts a send against the window until its answer arrives, not from when it left', async () => {
    const sent: number[] = [];
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 10, rateLimit: { limit: 2, intervalMs: 1000 } } } });
    // each answer takes 300 ms: the provider may have counted the send at any moment until then
    const send = () => scheduler.throttle('fal', async () => {
      sent.push(Date.now());
      await new Promise((resolve) => setTimeout(resolve, 300));
    });
    const all = Promise.all([send(), send(), send()]);
    await vi.advanceTimersByTimeAsync(5000);
    await all;
    // the first two leave at 0 and 300 and are answered at 300 and 600; the third waits until the
    // first answer is a whole window (and its margin) old: 300 + 1010, not 0 + 1010
    expect(sent).toEqual([0, 300, 1310]);
  });

  it('learns an unknown limit from one 429 and keeps to it, lowering it by one for each 429 after', async () => {
    const sent: number[] = [];
    const limited: number[] = [];
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 10 } } });
    let limit = 10;
    // a provider that takes `limit` sends in any second, answering a 429 with the wait for a place
    const send = () =>
      scheduler.throttle('fal', async () => {
        const now = Date.now();
        const inWindow = sent.filter((t) => t > now - 1000);
        if (inWindow.length >= limit) {
          limited.push(now);
          return scheduler.pause('fal', inWindow[inWindow.length - limit]! + 1000 - now);
        }
        sent.push(now);
      });
    const first = Promise.all(Array.from({ length: 40 }, send));
    await vi.advanceTimersByTimeAsync(10_000);
    await first;
    // one 429 taught it: 10 in a window of 1 s (the Retry-After's end minus the first send)
    expect(limited).toHaveLength(1);
    expect(scheduler.rateOf('fal')).toEqual({ limit: 10, intervalMs: 1000 });
    for (const t of sent) expect(sent.filter((u) => u >= t && u < t + 1000).length).toBeLessThanOrEqual(10);
    // the provider lowers its limit: each 429 lowers the learned one by one, and then there are none
    limit = 8;
    const second = Promise.all(Array.from({ length: 40 }, send));
    await vi.advanceTimersByTimeAsync(20_000);
    await second;
    expect(scheduler.rateOf('fal')).toEqual({ limit: 8, intervalMs: 1000 });
    expect(limited).toHaveLength(3);
    const after = sent.filter((t) => t > limited.at(-1)!);
    expect(after.length).toBeGreaterThan(20);
    for (const t of after) expect(after.filter((u) => u >= t && u < t + 1000).length).toBeLessThanOrEqual(8);
  });

  it('gives a call’s slot to the next as soon as the provider is done with it, while the first saves its images', async () => {
    const events: string[] = [];
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 1 } }, tenantConcurrency: () => 1 });
    const task = (key: string): ScheduledTask => ({
      key,
      jobId: key,
      tenant: 'A',
      run: async (_signal, release) => {
        events.push(`${key} call`);
        await new Promise((resolve) => setTimeout(resolve, 100));
        release();
        events.push(`${key} saving`);
        await new Promise((resolve) => setTimeout(resolve, 300));
        events.push(`${key} saved`);
      },
    });
    scheduler.enqueue('fal', task('a'));
    scheduler.enqueue('fal', task('b'));
    await vi.advanceTimersByTimeAsync(150);
    // one slot and a tenant cap of one, yet b runs while a still saves
    expect(events).toEqual(['a call', 'a saving', 'b call']);
    await vi.advanceTimersByTimeAsync(1000);
    expect(events).toEqual(['a call', 'a saving', 'b call', 'b saving', 'a saved', 'b saved']);
    await scheduler.idle();
    expect(scheduler.inFlight('fal')).toBe(0);
  });

  it('holds rate-counted requests during a pause', async () => {
    const sent: number[] = [];
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 4 } } });
    scheduler.pause('fal', 1000);
    const done = scheduler.throttle('fal', async () => void sent.push(Date.now()));
    await vi.advanceTimersByTimeAsync(999);
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await done;
    // sent the moment the pause ends, not some time after
    expect(sent).toEqual([1000]);
  });

  it('holds one tenant to its own rate while another tenant goes on', async () => {
    const r = recorder();
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 10 } }, tenantRate: { limit: 2, intervalMs: 1000 } });
    for (let i = 0; i < 6; i += 1) scheduler.enqueue('fal', r.task('A', `A${i}`));
    for (let i = 0; i < 2; i += 1) scheduler.enqueue('fal', r.task('B', `B${i}`));
    await vi.advanceTimersByTimeAsync(10);
    expect(r.started.filter((s) => s.key.startsWith('A'))).toHaveLength(2);
    expect(r.started.filter((s) => s.key.startsWith('B'))).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(3000);
    const aTimes = r.started.filter((s) => s.key.startsWith('A')).map((s) => s.at);
    expect(aTimes).toHaveLength(6);
    for (const t of aTimes) expect(aTimes.filter((u) => u >= t && u < t + 1000).length).toBeLessThanOrEqual(2);
  });

  it('pauses a lane for a Retry-After and then recovers', async () => {
    const r = recorder();
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 2 } } });
    scheduler.pause('fal', 2000);
    scheduler.enqueue('fal', r.task('A', 'a1'));
    scheduler.enqueue('fal', r.task('A', 'a2'));
    await vi.advanceTimersByTimeAsync(1999);
    expect(r.started).toHaveLength(0);
    expect(scheduler.isPaused('fal')).toBe(true);
    await vi.advanceTimersByTimeAsync(1);
    expect(scheduler.isPaused('fal')).toBe(false);
    expect(r.started).toEqual([
      { key: 'a1', at: 2000 },
      { key: 'a2', at: 2000 },
    ]);
  });

  it('waits out a task not-before time without blocking other tenants', async () => {
    const r = recorder();
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 1 } } });
    scheduler.enqueue('fal', { ...r.task('A', 'retry'), notBefore: 500 });
    scheduler.enqueue('fal', r.task('B', 'b1'));
    await vi.advanceTimersByTimeAsync(0);
    expect(r.started.map((s) => s.key)).toEqual(['b1']);
    await vi.advanceTimersByTimeAsync(600);
    expect(r.started).toEqual([
      { key: 'b1', at: 0 },
      { key: 'retry', at: 500 },
    ]);
  });

  it('drops a cancelled job’s waiting calls and aborts its running one', async () => {
    const aborted: string[] = [];
    const scheduler = new FairScheduler({ lanes: { fal: { concurrency: 1 } } });
    const started: string[] = [];
    for (const key of ['j1:0', 'j1:1', 'j1:2']) {
      scheduler.enqueue('fal', {
        key,
        jobId: 'j1',
        tenant: 'A',
        run: (signal) =>
          new Promise<void>((resolve) => {
            started.push(key);
            signal.addEventListener('abort', () => {
              aborted.push(key);
              resolve();
            });
          }),
      });
    }
    await vi.advanceTimersByTimeAsync(0);
    expect(scheduler.cancelJob('j1')).toBe(2);
    await vi.advanceTimersByTimeAsync(0);
    expect(started).toEqual(['j1:0']);
    expect(aborted).toEqual(['j1:0']);
    expect(scheduler.depth('fal')).toBe(0);
  });
});
