/**
 * Splits a job into provider calls: 12 → 4+4+4, 10 → 4+4+2.
 *
 * Seeds are offsets of the job's seed: image n of the job (0-based) belongs to the call seeded
 * `jobSeed + n - (its position in the call)`, so a call's seed is `jobSeed + 4·i` and the local
 * provider's images carry `jobSeed + n` exactly. The same job seed therefore gives the same calls.
 */
import type { Batch, ImagineRequest } from './types.js';

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

/**
 * A job's calls: its one prompt's, or each prompt-list entry's in turn, planned apart (a call never
 * mixes two prompts) and numbered on from the entry before. The seeds run on across entries as image
 * numbers do, so image n carries `jobSeed + n - 1` whatever entry it belongs to.
 */
export function planJob(request: Pick<ImagineRequest, 'count' | 'prompts'>, maxPerCall: number, jobSeed: number): Batch[] {
  if (!request.prompts?.length) return planBatches(request.count, maxPerCall, jobSeed);
  const batches: Batch[] = [];
  let start = 0;
  request.prompts.forEach((entry, prompt) => {
    for (const batch of planBatches(entry.count, maxPerCall, seedAt(jobSeed, start))) {
      batches.push({ ...batch, index: batches.length, start: start + batch.start, prompt });
    }
    start += entry.count;
  });
  return batches;
}

/** The prompt a batch draws: its prompt-list entry's, or the job's one prompt. */
export function promptOf(request: Pick<ImagineRequest, 'prompt' | 'prompts'>, batch: Pick<Batch, 'prompt'>): string {
  return (batch.prompt !== undefined ? request.prompts?.[batch.prompt]?.prompt : undefined) ?? request.prompt;
}

/** `seed + offset` kept inside the provider's 32-bit seed space. */
export function seedAt(seed: number, offset: number): number {
  return (seed + offset) % SEED_SPACE;
}

/** A seed for a job that was given none, so that it can still be reproduced from its manifest. */
export function randomSeed(random: () => number = Math.random): number {
  return Math.floor(random() * SEED_SPACE);
}
