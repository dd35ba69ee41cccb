/**
 * Reading @slack/web-api errors. The client is built with `rejectRateLimitedCalls: true`, so a 429
 * throws at once (code `slack_webapi_rate_limited_error`, `retryAfter` in seconds) instead of pausing
 * the client's whole queue: every caller decides how long to wait, and progress edits simply skip
 * ahead to the latest state.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { textOf } from '../../core/text.js';

const RATE_LIMITED = 'slack_webapi_rate_limited_error';
const PLATFORM = 'slack_webapi_platform_error';

/** Errors meaning "the bot cannot write here" — asking again will not help until someone invites it. */
const NO_ACCESS = new Set(['not_in_channel', 'channel_not_found', 'is_archived', 'restricted_action', 'cannot_dm_bot']);

interface CodedError {
  code?: unknown;
  retryAfter?: unknown;
  data?: { error?: unknown };
}

function coded(error: unknown): CodedError {
  return typeof error === 'object' && error !== null ? error : {};
}

/** The `error` string of a Slack platform answer (`{ ok: false, error }`), if that is what this is. */
export function platformError(error: unknown): string | undefined {
  const e = coded(error);
  return e.code === PLATFORM && typeof e.data?.error === 'string' ? e.data.error : undefined;
}

/** Milliseconds Slack asked us to wait, when this is a rate limit. */
export function retryAfterMs(error: unknown): number | undefined {
  const e = coded(error);
  if (e.code !== RATE_LIMITED) return undefined;
  const seconds = typeof e.retryAfter === 'number' && Number.isFinite(e.retryAfter) ? e.retryAfter : 1;
  return Math.max(0, seconds) * 1000;
}

export function isNoAccess(error: unknown): boolean {
  const code = platformError(error);
  return code !== undefined && NO_ACCESS.has(code);
}

/** A short description for logs: never the request, which carries the token in its headers. */
export function describe(error: unknown): string {
  const code = platformError(error);
  if (code) return code;
  if (error instanceof Error) return `${textOf(coded(error).code ?? error.name)}: ${error.message}`;
  return String(error);
}

/**
 * Runs a Web API call, waiting out rate limits (Slack's Retry-After) up to `attempts` times. Used for
 * one-off posts (gallery pages, uploads) that must land; progress edits go through the throttle instead.
 */
export async function obeyRateLimits<T>(call: () => Promise<T>, signal: AbortSignal, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await call();
    } catch (error) {
      const wait = retryAfterMs(error);
      if (wait === undefined || attempt >= attempts || signal.aborted) throw error;
      await sleep(wait, undefined, { signal });
    }
  }
}
