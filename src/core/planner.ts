/**
 * Splits a job into provider calls: 12 → 4+4+4, 10 → 4+4+2.
 *
 * Seeds are offsets of the job's seed: image n of the job (0-based) belongs to the call seeded
 * `jobSeed + n - (its position in the call)`, so a call's seed is `jobSeed + 4·i` and the local
 * provider's images carry `jobSeed + n` exactly. The same job seed therefore gives the same calls.
 */
import type { Batch } from './types.js';

export const SEED_SPACE = 2 ** 32;

export function planBatches(count: number, maxPerCall: number, jobSeed: number): Batch[] {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`count must be a positive integer, got ${count}`);
  if (!Number.isInteger(maxPerCall) || maxPerCall < 1) throw new RangeError(`maxPerCall must be a positive integer, got ${maxPerCall}`);
  const batches: Batch[] = [];
  for (let start = 0, index = 0; start < count; start += maxPerCall, index += 1) {
    batches.push({
      index,
      start,
      size: Math.min(maxPerCall, count - start),
      seed: seedAt(jobSeed, start),
      state: 'queued',
      requestIds: [],
      attempts: 0,
      failures: 0,
      delivered: 0,
    });
  }
  return batches;
}

/** `seed + offset` kept inside the provider's 32-bit seed space. */
export function seedAt(seed: number, offset: number): number {
  return (seed + offset) % SEED_SPACE;
}

/** A seed for a job that was given none, so that it can still be reproduced from its manifest. */
export function randomSeed(random: () => number = Math.random): number {
  return Math.floor(random() * SEED_SPACE);
}
