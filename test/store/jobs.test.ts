import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { planBatches } from '../../src/core/planner.js';
import type { Job } from '../../src/core/types.js';
import { JobStore } from '../../src/store/jobs.js';
import { openKeyv } from '../../src/store/keyv.js';
import { tempDir } from '../helpers.js';

function job(id: string, state: Job['state'] = 'queued'): Job {
  return {
    id,
    createdAt: '2026-11-22T00:00:00.000Z',
    updatedAt: '2026-11-22T00:00:00.000Z',
    requester: { tenant: 't', userId: 'u', platform: 'cli' },
    request: { prompt: 'p', count: 4, provider: 'local', model: 'local', aspectRatio: '1:1', seed: 1 },
    state,
    batches: planBatches(4, 4, 1),
    images: [],
    estimatedCostUsd: 0,
  };
}

async function open(dir: string) {
  const keyv = await openKeyv(`sqlite://${path.join(dir, 'store.sqlite')}`);
  const calls = { setMany: 0 };
  const setMany = keyv.setMany.bind(keyv);
  keyv.setMany = (async (entries: Parameters<typeof setMany>[0]) => {
    calls.setMany += 1;
    return setMany(entries);
  });
  return { store: new JobStore(keyv), calls };
}

describe('JobStore', () => {
  it('group-commits 300 saves that arrive together into a few batches, all of them durable', async () => {
    const dir = await tempDir();
    const { store, calls } = await open(dir);
    const ids = Array.from({ length: 300 }, (_, i) => `20261122-${i.toString(16).padStart(8, '0')}`);
    await Promise.all(ids.map((id) => store.save(job(id))));
    expect(calls.setMany).toBeLessThanOrEqual(6);
    await store.close();

    const reopened = (await open(dir)).store;
    expect((await reopened.activeIds()).sort()).toEqual(ids);
    expect((await reopened.get(ids[123]!))?.id).toBe(ids[123]);
    await reopened.close();
  });

  it('stores the latest state of a job saved many times while the disk was busy', async () => {
    const dir = await tempDir();
    const { store } = await open(dir);
    const record = job('20261122-0000abcd');
    const saves: Promise<void>[] = [];
    for (let i = 1; i <= 20; i += 1) {
      record.batches[0]!.attempts = i;
      saves.push(store.save(record));
    }
    record.state = 'completed';
    saves.push(store.save(record));
    await Promise.all(saves);
    await store.close();
    const reopened = (await open(dir)).store;
    expect(await reopened.get(record.id)).toMatchObject({ state: 'completed', batches: [{ attempts: 20 }] });
    expect(await reopened.activeIds()).toEqual([]);
    await reopened.close();
  });

  it('never lets concurrent reservations pass the daily cap', async () => {
    const { store } = await open(await tempDir());
    const results = await Promise.all(Array.from({ length: 20 }, () => store.reserveImages('t', '2026-11-22', 10, 100)));
    expect(results.filter((r) => r !== undefined)).toHaveLength(10);
    expect(await store.imagesUsed('t', '2026-11-22')).toBe(100);
    await store.releaseImages('t', '2026-11-22', 30);
    expect(await store.reserveImages('t', '2026-11-22', 30, 100)).toBe(100);
    await store.close();
  });
});
