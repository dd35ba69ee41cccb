/**
 * The fetch the provider SDKs are given. Both SDKs retry on their own (fal: 1 s+ backoff that ignores
 * Retry-After; replicate: six 429 attempts within milliseconds, and a create POST again after a network
 * error, which can pay twice). Retrying is the scheduler's job — it pauses the whole provider on a 429
 * and counts attempts — so this fetch turns every transient failure into a ProviderError, and the
 * one-shot variant replays that error to an SDK that tries again instead of sending the request twice.
 */
import { ProviderError, RETRY_AFTER_CAP_MS } from '../core/provider.js';

export type Fetch = typeof fetch;

/**
 * Every Retry-After is capped at RETRY_AFTER_CAP_MS (core/provider.ts). The value comes from outside
 * (a provider, an image host), and a timer armed past 2³¹−1 ms fires at once instead of never, so an
 * absurd value would turn a pause into a hammering loop; five minutes is longer than any real provider asks.
 */
export { RETRY_AFTER_CAP_MS };

const cappedWait = (ms: number): number => Math.min(RETRY_AFTER_CAP_MS, Math.max(0, ms));

/**
 * Retry-After as milliseconds: header seconds or HTTP date, or `retry_after` in a JSON body; at most
 * RETRY_AFTER_CAP_MS.
 */
export function retryAfterMs(headers: Headers, body: unknown, now = Date.now()): number | undefined {
  const header = headers.get('retry-after');
  if (header) {
    const seconds = Number(header);
    if (Number.isFinite(seconds)) return cappedWait(seconds * 1000);
    const date = Date.parse(header);
    if (!Number.isNaN(date)) return cappedWait(date - now);
  }
  if (body && typeof body === 'object' && 'retry_after' in body) {
    const seconds = Number(body.retry_after);
    if (Number.isFinite(seconds)) return cappedWait(seconds * 1000);
  }
  return undefined;
}

function detailOf(body: unknown, fallback: string): string {
  if (body && typeof body === 'object' && 'detail' in body) {
    const detail = body.detail;
    if (typeof detail === 'string') return detail;
    if (detail !== undefined) return JSON.stringify(detail).slice(0, 300);
  }
  return fallback;
}

async function readBody(response: Response): Promise<unknown> {
  const text = await response.text().catch(() => '');
  try {
    return JSON.parse(text);
  } catch {
    return text.slice(0, 300);
  }
}

/** Maps a non-OK response that the scheduler must handle (auth, 429, 5xx) to a ProviderError. */
export async function errorFromResponse(response: Response, provider: string): Promise<ProviderError | undefined> {
  const { status } = response;
  if (status !== 401 && status !== 403 && status !== 429 && status < 500) return undefined;
  const body = await readBody(response);
  if (status === 429) {
    return new ProviderError('rate_limited', `${provider} is rate limiting: ${detailOf(body, 'too many requests')}`, {
      status,
      retryAfterMs: retryAfterMs(response.headers, body),
    });
  }
  if (status === 401 || status === 403) {
    return new ProviderError('auth', `${provider} refused the credentials (HTTP ${status}): check the key or token`, { status });
  }
  return new ProviderError('server', `${provider} answered HTTP ${status}: ${detailOf(body, 'server error')}`, { status });
}

export interface StrictFetchOptions {
  provider: string;
  /** the real fetch (tests pass one that refuses anything but loopback) */
  fetch?: Fetch;
  /** one HTTP request's time limit; a hang becomes a retryable timeout */
  requestTimeoutMs: number;
}

/** A fetch that throws ProviderError for auth, 429, 5xx, network errors and hangs. */
export function strictFetch(options: StrictFetchOptions): Fetch {
  const base = options.fetch ?? fetch;
  return (async (input: Parameters<Fetch>[0], init?: Parameters<Fetch>[1]) => {
    const timeout = AbortSignal.timeout(options.requestTimeoutMs);
    const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    let response: Response;
    try {
      response = await base(input, { ...init, signal });
    } catch (error) {
      if (timeout.aborted) throw new ProviderError('timeout', `${options.provider} did not answer within ${options.requestTimeoutMs} ms`);
      if (init?.signal?.aborted) throw error;
      throw new ProviderError('network', `${options.provider} could not be reached: ${(error as Error).message}`, { cause: error });
    }
    const failure = await errorFromResponse(response, options.provider);
    if (failure) throw failure;
    return response;
  });
}

/**
 * For one SDK operation: the first failure is remembered and thrown again to every retry the SDK
 * makes, so the server sees the request once and the scheduler decides what happens next.
 */
export function oneShot(fetchImpl: Fetch): Fetch {
  let failure: unknown;
  return (async (input: Parameters<Fetch>[0], init?: Parameters<Fetch>[1]) => {
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- replays exactly what the first try threw
    if (failure) throw failure;
    try {
      return await fetchImpl(input, init);
    } catch (error) {
      failure = error;
      throw error;
    }
  });
}
