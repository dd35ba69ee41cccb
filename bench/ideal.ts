/**
 * The theoretical minimum makespan of N equal provider calls under a concurrency limit and a rolling
 * rate limit, computed exactly by simulating the ideal schedule: every call starts at the earliest
 * moment both limits allow.
 *
 *   start_k = max( 0,
 *                  start_{k-C} + T,     // a slot frees when the call C places earlier ends
 *                  start_{k-L} + W )    // at most L starts in any rolling window W
 *   makespan = start_{N-1} + T
 *
 * (terms with a negative index drop out). With equal call times the greedy schedule is optimal: no
 * call can start earlier without breaking one of the two limits, so no schedule finishes sooner.
 */
export interface IdealInput {
  calls: number;
  concurrency: number;
  callMs: number;
  /** at most `limit` starts in any window of `windowMs`; undefined = no rate limit */
  limit?: number;
  windowMs?: number;
}

export function idealStarts({ calls, concurrency, callMs, limit, windowMs }: IdealInput): number[] {
  if (!(calls >= 0 && concurrency >= 1 && callMs >= 0)) throw new RangeError('idealStarts: bad input');
  const starts: number[] = [];
  for (let k = 0; k < calls; k += 1) {
    let at = 0;
    if (k >= concurrency) at = Math.max(at, starts[k - concurrency]! + callMs);
    if (limit !== undefined && windowMs !== undefined && k >= limit) at = Math.max(at, starts[k - limit]! + windowMs);
    starts.push(at);
  }
  return starts;
}

export function idealMakespan(input: IdealInput): number {
  const starts = idealStarts(input);
  return starts.length === 0 ? 0 : starts[starts.length - 1]! + input.callMs;
}

/** The most starts seen in any rolling window of `windowMs` (to check a limit was obeyed). */
export function maxInWindow(times: readonly number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let best = 0;
  let first = 0;
  for (let last = 0; last < sorted.length; last += 1) {
    while (sorted[last]! - sorted[first]! >= windowMs) first += 1;
    best = Math.max(best, last - first + 1);
  }
  return best;
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}
