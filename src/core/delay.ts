/**
 * A timer as a promise, on the global `setTimeout` (looked up at each call), so that tests drive the
 * core's waits with fake timers; `node:timers/promises` keeps its own clock they cannot reach.
 */
import { MAX_TIMER_MS } from './provider.js';

/** Resolves after `ms`; rejects with an AbortError when `signal` is aborted first. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError());
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.min(MAX_TIMER_MS, Math.max(0, ms)));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** What `node:timers/promises` rejects with, so callers tell an abort from a failure the same way. */
function abortError(): Error {
  return new DOMException('The operation was aborted', 'AbortError');
}
