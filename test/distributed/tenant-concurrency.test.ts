/**
 * A plan's calls in flight across processes: two RedisDispatchers on one prefix (two processes) run
 * at most the tenant's cap of its tickets at once, while another tenant's go on; a ticket over the
 * cap is delayed and started once a place frees.
 */
import { afterEach, expect, it } from 'vitest';
import type { BatchTicket, TicketRunner } from '../../src/core/dispatch.js';
import { RedisDispatcher } from '../../src/distributed/dispatch.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check: () => boolean, what: string, boundMs = 20_000): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`still waiting for ${what}`);
    await sleep(10);
  }
}

describeRedis('RedisDispatcher tenant concurrency', () => {
  it('runs at most the plan’s calls of one tenant at once across two processes, while another tenant goes on', async () => {
    const prefix = testPrefix();
    const running = new Map<string, number>();
    const most = new Map<string, number>();
    const holds = new Map<string, () => void>();
    const started: string[] = [];
    const runner: TicketRunner = async (t: BatchTicket) => {
      const key = `${t.jobId}.${t.batchIndex}`;
      started.push(key);
      running.set(t.tenant, (running.get(t.tenant) ?? 0) + 1);
      most.set(t.tenant, Math.max(most.get(t.tenant) ?? 0, running.get(t.tenant)!));
      await new Promise<void>((resolve) => holds.set(key, resolve));
      running.set(t.tenant, running.get(t.tenant)! - 1);
    };
    const caps: Record<string, number> = { 'guild-a': 2, 'guild-b': 10 };
    const dispatchers = await Promise.all(
      ['one', 'two'].map(async () => {
        const dispatcher = new RedisDispatcher({
          connection: redisUrl,
          prefix,
          lanes: { fal: { concurrency: 10 } },
          lockDurationMs: 2_000,
          tenantConcurrency: (tenant) => Promise.resolve(caps[tenant]!),
        });
        cleanups.push(async () => {
          dispatcher.abortAll();
          await dispatcher.close();
        });
        await dispatcher.start(runner);
        return dispatcher;
      }),
    );
    for (let i = 0; i < 6; i += 1) await dispatchers[i % 2]!.enqueue({ jobId: `a${i % 2}`, batchIndex: i, tenant: 'guild-a', provider: 'fal', attempt: 0 });
    for (let i = 0; i < 4; i += 1) await dispatchers[i % 2]!.enqueue({ jobId: 'b', batchIndex: i, tenant: 'guild-b', provider: 'fal', attempt: 0 });

    await until(() => running.get('guild-b') === 4 && running.get('guild-a') === 2, 'B’s four and A’s two');
    // A's other four wait (delayed, polling) while its two run.
    await sleep(700);
    expect(running.get('guild-a')).toBe(2);
    // Each end of one of A's calls lets one more of A's start, in whichever process.
    for (let done = 1; done <= 6; done += 1) {
      const key = [...holds.keys()].find((k) => k.startsWith('a'))!;
      holds.get(key)!();
      holds.delete(key);
      const expected = Math.min(6, 2 + done);
      await until(() => started.filter((k) => k.startsWith('a')).length === expected, `A’s call ${expected} to start`);
      expect(running.get('guild-a')).toBeLessThanOrEqual(2);
    }
    expect(started.filter((k) => k.startsWith('a'))).toHaveLength(6);
    expect(most.get('guild-a')).toBe(2);
    expect(most.get('guild-b')).toBe(4);
    for (const release of holds.values()) release();
  }, 60_000);
});
