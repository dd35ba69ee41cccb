/**
 * The notice board for ended provider calls. A webhook (received by any process) publishes that a call
 * ended; the provider watching that call waits for the notice, and polls the call itself now and then in
 * case the webhook never comes. A notice published before anyone waits is kept (a fast call can end
 * before the runner starts watching it), and so is the list of calls we expect notices for: a delivery
 * for a call nobody submitted is refused. In memory here (one process); in Redis in distributed mode
 * (src/distributed/notices.ts), where a webhook received by one process ends the call in another.
 */
import { delay } from './delay.js';
import type { CallStatus } from './provider.js';
import type { ProviderName } from './types.js';

/** One ended call, as a webhook told it. `output` is whatever the provider keeps for `result()`. */
export interface CallNotice {
  provider: ProviderName;
  requestId: string;
  status: CallStatus;
  output?: unknown;
}

export interface CallNotices {
  /** Tells every waiter of this call, and keeps the notice for NOTICE_TTL_MS for those who come later. */
  publish(notice: CallNotice): Promise<void>;
  /** The kept notice of a call, if one came within NOTICE_TTL_MS. */
  get(provider: ProviderName, requestId: string): Promise<CallNotice | undefined>;
  /** Resolves with the call's notice (a kept one at once); rejects with an AbortError when `signal` aborts. */
  wait(provider: ProviderName, requestId: string, signal: AbortSignal): Promise<CallNotice>;
  /**
   * Marks a call as one we wait on (just submitted, or watched again after a restart) for EXPECT_TTL_MS;
   * answers whether it was marked already.
   */
  expect(provider: ProviderName, requestId: string): Promise<boolean>;
  /** Whether a delivery for this call may be accepted: it was submitted or watched recently. */
  isExpected(provider: ProviderName, requestId: string): Promise<boolean>;
  /** True the first time a delivery key is claimed within REPLAY_TTL_MS, false for a replay. */
  claim(deliveryKey: string): Promise<boolean>;
  /** Forgets a claim whose delivery could not be acted on, so the provider's retry is not a replay. */
  release(deliveryKey: string): Promise<void>;
}

/** What a provider needs to end its calls by webhook. */
export interface CallWebhook {
  /** the full delivery URL given with each submit */
  url: string;
  notices: CallNotices;
  /** one status poll of a watched call this often, in case its webhook never comes */
  safetyPollMs: number;
}

/** How long a notice is kept for a waiter that has not come yet. */
export const NOTICE_TTL_MS = 10 * 60_000;
/**
 * How long a submitted call's id is accepted in a delivery: far longer than a call may run
 * (PROVIDER_TIMEOUT, 5 minutes by default); a call watched again after a restart is marked again. A
 * delivery later than this is refused (404) and changes nothing: the call ended by its safety poll.
 */
export const EXPECT_TTL_MS = 60 * 60_000;
/** How long a delivery's key is remembered: twice the five-minute timestamp tolerance, so a replay is always seen. */
export const REPLAY_TTL_MS = 10 * 60_000;

/** Whether a status is an end (nothing more will change). */
export function hasEnded(status: CallStatus): boolean {
  return status.state !== 'queued' && status.state !== 'running';
}

const noticeKey = (provider: ProviderName, requestId: string) => `${provider}:${requestId}`;

/**
 * Keys that expire after a fixed time. Every key lives equally long, so the Map's insertion order is
 * the order of expiry (a key set again moves to the end): the expired ones are always at the front.
 */
class ExpiringMap<V> {
  private readonly entries = new Map<string, { value: V; until: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number,
  ) {}

  get(key: string): V | undefined {
    this.sweep();
    return this.entries.get(key)?.value;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  set(key: string, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, { value, until: this.now() + this.ttlMs });
    this.sweep();
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  private sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.entries) {
      if (entry.until > now) break;
      this.entries.delete(key);
    }
  }
}

/** The notice board of one process. */
export class MemoryCallNotices implements CallNotices {
  private readonly notices: ExpiringMap<CallNotice>;
  private readonly expected: ExpiringMap<true>;
  private readonly claimed: ExpiringMap<true>;
  private readonly waiters = new Map<string, Set<(notice: CallNotice) => void>>();

  constructor(now: () => number = Date.now) {
    this.notices = new ExpiringMap(NOTICE_TTL_MS, now);
    this.expected = new ExpiringMap(EXPECT_TTL_MS, now);
    this.claimed = new ExpiringMap(REPLAY_TTL_MS, now);
  }

  async publish(notice: CallNotice): Promise<void> {
    const key = noticeKey(notice.provider, notice.requestId);
    this.notices.set(key, notice);
    for (const wake of this.waiters.get(key) ?? []) wake(notice);
  }

  async get(provider: ProviderName, requestId: string): Promise<CallNotice | undefined> {
    return this.notices.get(noticeKey(provider, requestId));
  }

  wait(provider: ProviderName, requestId: string, signal: AbortSignal): Promise<CallNotice> {
    return waitOn(this.waiters, noticeKey(provider, requestId), signal, () => this.get(provider, requestId));
  }

  async expect(provider: ProviderName, requestId: string): Promise<boolean> {
    const key = noticeKey(provider, requestId);
    const known = this.expected.has(key);
    this.expected.set(key, true);
    return known;
  }

  async isExpected(provider: ProviderName, requestId: string): Promise<boolean> {
    return this.expected.has(noticeKey(provider, requestId));
  }

  async claim(deliveryKey: string): Promise<boolean> {
    if (this.claimed.has(deliveryKey)) return false;
    this.claimed.set(deliveryKey, true);
    return true;
  }

  async release(deliveryKey: string): Promise<void> {
    this.claimed.delete(deliveryKey);
  }
}

/**
 * Waits for the notice under `key`: registers the waiter first, then looks for a kept notice, so a
 * notice published in between is not missed. Shared by the in-memory and the Redis boards.
 */
export function waitOn(
  waiters: Map<string, Set<(notice: CallNotice) => void>>,
  key: string,
  signal: AbortSignal,
  lookUp: () => Promise<CallNotice | undefined>,
): Promise<CallNotice> {
  return new Promise<CallNotice>((resolve, reject) => {
    if (signal.aborted) return reject(abortError());
    let set = waiters.get(key);
    if (!set) waiters.set(key, (set = new Set()));
    const done = () => {
      set.delete(wake);
      if (set.size === 0 && waiters.get(key) === set) waiters.delete(key);
      signal.removeEventListener('abort', onAbort);
    };
    const wake = (notice: CallNotice) => {
      done();
      resolve(notice);
    };
    const onAbort = () => {
      done();
      reject(abortError());
    };
    set.add(wake);
    signal.addEventListener('abort', onAbort, { once: true });
    lookUp().then(
      (notice) => {
        if (notice && set.has(wake)) wake(notice);
      },
      // The board cannot be read now: the waiter stays, and the caller's own polls carry on.
      () => undefined,
    );
  });
}

function abortError(): Error {
  return new DOMException('The operation was aborted', 'AbortError');
}

export interface UntilEndedOptions {
  /** time between the caller's own status polls while no notice comes */
  safetyPollMs: number;
  /** poll at once instead of after the first interval (a call we did not know: resumed after a restart) */
  pollFirst: boolean;
  /** one status poll of the call */
  poll: (signal: AbortSignal) => Promise<CallStatus>;
}

/**
 * The call's end: its notice, or what one of our own status polls (one every `safetyPollMs`) says once it
 * has ended, whichever comes first. A webhook that never arrives is caught by the poll. Rejects when a
 * poll fails (the runner then polls on its own) or `signal` aborts.
 */
export async function untilEnded(
  board: CallNotices,
  provider: ProviderName,
  requestId: string,
  signal: AbortSignal,
  options: UntilEndedOptions,
): Promise<CallNotice> {
  signal.throwIfAborted();
  const stop = new AbortController();
  const stopAll = AbortSignal.any([signal, stop.signal]);
  const noticed = board.wait(provider, requestId, stopAll);
  // Rejected only by an abort, which the loop below reports itself.
  noticed.catch(() => undefined);
  try {
    let waitMs = options.pollFirst ? 0 : options.safetyPollMs;
    for (;;) {
      const pause = new AbortController();
      const timer = delay(waitMs, AbortSignal.any([stopAll, pause.signal])).then(
        () => undefined,
        () => undefined,
      );
      const notice = await Promise.race([noticed, timer]);
      pause.abort();
      if (notice) return notice;
      signal.throwIfAborted();
      const status = await options.poll(signal);
      if (hasEnded(status)) return { provider, requestId, status };
      waitMs = options.safetyPollMs;
    }
  } finally {
    stop.abort();
  }
}
