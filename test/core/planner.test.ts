import { describe, expect, it } from 'vitest';
import { planBatches, SEED_SPACE } from '../../src/core/planner.js';

describe('planBatches', () => {
  it('splits 12 images into 4 + 4 + 4', () => {
    expect(planBatches(12, 4, 0).map((b) => b.size)).toEqual([4, 4, 4]);
  });

  it('splits 10 images into 4 + 4 + 2', () => {
    expect(planBatches(10, 4, 0).map((b) => b.size)).toEqual([4, 4, 2]);
  });

  it('makes one call for up to 4 images', () => {
    expect(planBatches(3, 4, 0).map((b) => b.size)).toEqual([3]);
    expect(planBatches(1, 4, 0).map((b) => b.size)).toEqual([1]);
  });

  it('numbers images across batches without gaps', () => {
    expect(planBatches(10, 4, 0).map((b) => b.start)).toEqual([0, 4, 8]);
  });

  it('derives each call seed from the job seed, so the same seed plans the same job', () => {
    const first = planBatches(10, 4, 42);
    expect(first.map((b) => b.seed)).toEqual([42, 46, 50]);
    expect(planBatches(10, 4, 42)).toEqual(first);
  });

  it('wraps seeds inside the 32-bit seed space', () => {
    expect(planBatches(8, 4, SEED_SPACE - 2).map((b) => b.seed)).toEqual([SEED_SPACE - 2, 2]);
  });

  it('plans 1000 images as 250 calls', () => {
    const batches = planBatches(1000, 4, 7);
    expect(batches).toHaveLength(250);
    expect(batches.reduce((sum, b) => sum + b.size, 0)).toBe(1000);
  });
});
