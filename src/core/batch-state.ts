/**
 * A batch's life, as a pure state machine: its states, what can happen to it, and what to do next.
 * No I/O and no timers. The runner does what a decision says and reports what happened; the engine
 * applies each step under the job's lock. The retry policy lives here and only here.
 *
 *     queued → submitting → submitted (request id) → downloading (k of n) → done
 *        ↑          └──────────────┴───────────────────────┤
 *        └──────────── waiting to retry (reason, delay) ←──┴──→ failed
 *     (anything unfinished) → canceled
 *
 * The phases are read from the persisted record, so a record written by an earlier version resumes:
 *
 *     queued       state `queued`
 *     submitting   state `submitted`, no request id (sent, or about to be; the id is not saved yet)
 *     submitted    state `submitted` with its request id
 *     downloading  state `submitted`, request id and `download` (the call's outputs being fetched)
 *     waiting      `retryAt` set (state `queued`, or `submitted` when the call is kept and polled again)
 */
import { seedAt } from './planner.js';
import { FINAL_BATCH } from './progress.js';
import { ProviderError, RETRY_AFTER_CAP_MS, type CallStatus } from './provider.js';
import type { Batch, ImageRecord } from './types.js';
import { oneLine } from './text.js';

/** 429s a batch may meet, as a multiple of the attempt limit, before it gives up */
export const THROTTLE_ALLOWANCE = 4;

export interface RetrySettings {
  /** failed tries per batch before it fails for good */
  maxAttempts: number;
  /** longest one provider call may take from submit to result */
  callTimeoutMs: number;
  /** first retry delay @default 1000; later ones grow ×1.5 up to retryMaxMs */
  retryBaseMs?: number;
  /** @default 10000 */
  retryMaxMs?: number;
  /** time between status polls @default a tenth of the provider's typical call, 20 ms to 1 s */
  pollIntervalMs?: number;
}

export type BatchPhase =
  | { name: 'queued' }
  | { name: 'submitting' }
  | { name: 'submitted'; requestId: string }
  | { name: 'downloading'; requestId: string; delivered: number; of: number }
  | { name: 'waiting'; reason: string; until: number }
  | { name: 'done' }
  | { name: 'failed'; reason: string }
  | { name: 'canceled' };

/** One output kept in storage, as the runner reports it. */
export interface SavedOutput {
  file: string;
  width: number;
  height: number;
  contentType: string;
  nsfw: boolean;
  /** the seed the provider reports for this output, where it does */
  seed?: number;
  /** the prompt the provider rewrote ours into for this image (OpenAI's revised_prompt) */
  revisedPrompt?: string;
}

/** An earlier job's image, copied in as output `output` of the call it stands for (image number `index`). */
export interface CachedOutput extends SavedOutput {
  output: number;
  index: number;
  /** where it was copied from */
  from: { jobId: string; file: string };
}

/** What happened to a batch. */
export type BatchEvent =
  /** its task was picked up by the scheduler */
  | { type: 'start' }
  | { type: 'submitted'; requestId: string }
  /** the call succeeded and returned this many outputs */
  | { type: 'fetched'; outputs: number }
  /** `index`: the image number it was written as (the download decision's); default: the output's own */
  | { type: 'saved'; output: number; image: SavedOutput; index?: number }
  /** one output was refused (host not allowed, too large, not an image): that image fails alone */
  | { type: 'refused'; output: number; reason: string }
  /**
   * Instead of the call about to be sent: every image it would make is kept already from an earlier
   * job (same provider, model, parameters, prompt and seed), and was copied in. No call is paid for.
   */
  | { type: 'cached'; images: CachedOutput[] }
  /**
   * A try failed. `aborted`: the task's signal was aborted (a cancel or a shutdown). `dropCall`: the
   * call is over at the provider (it failed, or was cancelled past its deadline), so a retry sends a
   * new one instead of polling it.
   */
  | { type: 'error'; error: ProviderError; aborted?: boolean; dropCall?: boolean };

/** What to do next. */
export type Decision =
  | { kind: 'submit'; count: number; seed: number }
  | { kind: 'poll'; requestId: string; deadline: number }
  /**
   * download these outputs of the call, all at once, and keep each as image number `image` of the
   * job; report each as `saved` or `refused`, in any order (the machine asks only for what is left)
   */
  | { kind: 'download'; requestId: string; outputs: readonly DownloadItem[] }
  /** run the batch again after `delayMs`; a 429 also pauses the provider's whole lane for `pauseLaneMs` */
  | { kind: 'retry'; delayMs: number; reason: string; pauseLaneMs?: number }
  | { kind: 'fail'; reason: string; pauseLaneMs?: number }
  | { kind: 'done' }
  /** the job was cancelled: cancel the call at the provider, if there is one */
  | { kind: 'cancel'; requestId?: string }
  /** nothing to do: finished, or left as saved for the next start */
  | { kind: 'stop' };

/** One output of a call to fetch, and the job's image number it becomes. */
export interface DownloadItem {
  output: number;
  image: number;
}

export interface StepContext {
  now: number;
  settings: RetrySettings;
  /** the job was cancelled */
  canceled?: boolean;
  /** the process is shutting down */
  stopping?: boolean;
  /** the images this batch has kept (outputs kept on an earlier try of the same call are skipped) */
  images?: readonly ImageRecord[];
}

export interface Step {
  /** the batch's new record; the same object when nothing changed */
  batch: Batch;
  decision: Decision;
  /** an image to add to the job */
  image?: ImageRecord;
  /** several at once (images served from the cache) */
  images?: ImageRecord[];
}

const STOP: Decision = { kind: 'stop' };

/** The phase a batch record is in. */
export function phaseOf(batch: Readonly<Batch>): BatchPhase {
  if (batch.state === 'done') return { name: 'done' };
  if (batch.state === 'failed') return { name: 'failed', reason: batch.error ?? 'failed' };
  if (batch.state === 'canceled') return { name: 'canceled' };
  if (batch.retryAt !== undefined) return { name: 'waiting', reason: batch.error ?? '', until: Date.parse(batch.retryAt) };
  if (batch.state === 'queued') return { name: 'queued' };
  if (!batch.requestId) return { name: 'submitting' };
  if (batch.download) return { name: 'downloading', requestId: batch.requestId, delivered: batch.delivered, of: batch.size };
  return { name: 'submitted', requestId: batch.requestId };
}

/** Applies one event to a batch: its next record and what to do next. */
export function transition(batch: Readonly<Batch>, event: BatchEvent, context: StepContext): Step {
  if (FINAL_BATCH.has(batch.state)) return { batch, decision: STOP };
  switch (event.type) {
    case 'start':
      return start(batch, context);
    case 'submitted':
      return {
        batch: { ...batch, requestId: event.requestId, requestIds: [...batch.requestIds, event.requestId] },
        decision: { kind: 'poll', requestId: event.requestId, deadline: deadlineOf(batch, context) },
      };
    case 'fetched':
      return next({ ...batch, download: { outputs: event.outputs, refused: [] } }, context.images ?? [], context);
    case 'saved':
      return saved(batch, event, context);
    case 'refused': {
      const download = batch.download ?? { outputs: 0, refused: [] };
      const refused = { ...download, refused: [...download.refused, event.output], reason: download.reason ?? event.reason };
      return next({ ...batch, download: refused }, context.images ?? [], context);
    }
    case 'error':
      return failed(batch, event, context);
    case 'cached':
      return cached(batch, event, context);
  }
}

/**
 * What a batch does when it enters the queue: after a restart, or when its job is admitted. A call
 * already submitted is polled, never sent again; a wait for a retry is kept (at most as long as any
 * Retry-After, whatever the record says).
 */
export function restart(batch: Readonly<Batch>, now: number, settings: RetrySettings): Decision {
  if (FINAL_BATCH.has(batch.state)) return STOP;
  const wait = batch.retryAt === undefined ? NaN : Date.parse(batch.retryAt) - now;
  if (wait > 0) return { kind: 'retry', delayMs: Math.min(wait, RETRY_AFTER_CAP_MS), reason: batch.error ?? '' };
  return start(batch, { now, settings }).decision;
}

function start(batch: Readonly<Batch>, context: StepContext): Step {
  if (context.canceled) return { batch, decision: STOP };
  const rest = without(batch, 'retryAt', 'download');
  if (batch.requestId) {
    return {
      batch: batch.state === 'submitted' ? rest : { ...rest, state: 'submitted' },
      decision: { kind: 'poll', requestId: batch.requestId, deadline: deadlineOf(batch, context) },
    };
  }
  return {
    // Saved lazily: a crash before the request id is saved sends the call again, as it must.
    batch: { ...rest, state: 'submitted', attempts: batch.attempts + 1, submittedAt: iso(context.now) },
    decision: { kind: 'submit', count: batch.size - batch.delivered, seed: seedAt(batch.seed, batch.delivered) },
  };
}

function saved(batch: Readonly<Batch>, event: Extract<BatchEvent, { type: 'saved' }>, context: StepContext): Step {
  const { image: stored } = event;
  const image: ImageRecord = {
    index: event.index ?? batch.start + callBase(batch, context.images ?? []) + event.output + 1,
    batchIndex: batch.index,
    file: stored.file,
    width: stored.width,
    height: stored.height,
    seed: stored.seed ?? batch.seed,
    ...(batch.requestId !== undefined ? { requestId: batch.requestId } : {}),
    output: event.output,
    nsfw: stored.nsfw,
    contentType: stored.contentType,
    review: { status: 'pending' },
    ...(batch.prompt !== undefined ? { prompt: batch.prompt } : {}),
    ...(stored.revisedPrompt ? { revisedPrompt: stored.revisedPrompt } : {}),
  };
  const kept = { ...batch, delivered: batch.delivered + 1, ...(stored.nsfw ? { nsfw: true } : {}) };
  return { ...next(kept, [...(context.images ?? []), image], context), image };
}

/**
 * A call that was about to be sent, answered from the cache: the batch is done with the copies, and
 * the try it had counted is given back (no call was made). Anything but a batch about to send, with
 * every image it was about to ask for, sends its call after all.
 */
function cached(batch: Readonly<Batch>, event: Extract<BatchEvent, { type: 'cached' }>, context: StepContext): Step {
  if (context.canceled) return failed(batch, { type: 'error', error: new ProviderError('failed', 'canceled') }, context);
  const wanted = batch.size - batch.delivered;
  if (batch.state !== 'submitted' || batch.requestId !== undefined || event.images.length !== wanted) {
    return { batch, decision: { kind: 'submit', count: wanted, seed: seedAt(batch.seed, batch.delivered) } };
  }
  const images = event.images.map(
    (stored): ImageRecord => ({
      index: stored.index,
      batchIndex: batch.index,
      file: stored.file,
      width: stored.width,
      height: stored.height,
      seed: stored.seed ?? seedAt(batch.seed, batch.delivered),
      output: stored.output,
      nsfw: stored.nsfw,
      contentType: stored.contentType,
      review: { status: 'pending' },
      cached: stored.from,
      ...(batch.prompt !== undefined ? { prompt: batch.prompt } : {}),
    }),
  );
  const { error: _error, submittedAt: _submittedAt, ...rest } = without(batch, 'retryAt', 'download');
  const done: Batch = {
    ...rest,
    state: 'done',
    attempts: Math.max(0, batch.attempts - 1),
    delivered: batch.size,
    finishedAt: iso(context.now),
    ...(batch.delivered === 0 ? { cached: true } : {}),
    ...(images.some((image) => image.nsfw) ? { nsfw: true } : {}),
  };
  return { batch: done, decision: { kind: 'done' }, images };
}

/**
 * The outputs still to fetch; or, with every output of the call handled, how the call ends. Output k of
 * a call is image number start + base + k + 1 (base: the images the batch had before this call), so
 * its file name is known before any download ends and outputs are fetched in parallel; an output past
 * what was asked takes the number of one that was refused. Asked only when no download is in flight
 * (the runner records a whole round before acting on the next decision), so numbers never collide.
 */
function next(batch: Batch, images: readonly ImageRecord[], context: StepContext): Step {
  const wanted = batch.size - batch.delivered;
  if (wanted <= 0) {
    const { error: _error, ...rest } = without(batch, 'retryAt', 'download');
    return { batch: { ...rest, state: 'done', finishedAt: iso(context.now) }, decision: { kind: 'done' } };
  }
  const download = batch.download ?? { outputs: 0, refused: [] };
  const requestId = batch.requestId ?? '';
  const ofCall = imagesOfCall(batch, images);
  const kept = new Set(ofCall.map((image) => image.output));
  const base = batch.delivered - ofCall.length;
  const room = batch.size - base;
  const first = batch.start + base + 1;
  const outputs: DownloadItem[] = [];
  // The call's own slots: output k is image first + k, unless it was refused or never came.
  const free: number[] = [];
  const taken = new Set(ofCall.map((image) => image.index));
  for (let output = 0; output < room; output += 1) {
    const slot = first + output;
    if (output >= download.outputs || download.refused.includes(output)) {
      if (!taken.has(slot)) free.push(slot);
    } else if (!kept.has(output)) {
      outputs.push({ output, image: slot });
    }
  }
  // Outputs beyond what was asked fill the slots of refused or missing ones, in order.
  for (let output = room; output < download.outputs && free.length > 0; output += 1) {
    if (!kept.has(output) && !download.refused.includes(output)) outputs.push({ output, image: free.shift()! });
  }
  if (outputs.length > 0) return { batch, decision: { kind: 'download', requestId, outputs } };
  const rest = without(batch, 'download');
  if (download.refused.length > 0) {
    // Asking again would pay for the same refusal: the batch ends with what it kept.
    const reason = `${download.refused.length} of ${download.outputs} images refused: ${download.reason ?? 'refused'}`;
    return failed(rest, { type: 'error', error: new ProviderError('refused', reason) }, context);
  }
  // A partial output keeps what came and asks again for the rest, as a new call.
  const reason = `partial output: the provider returned ${download.outputs} of ${download.outputs + wanted} images`;
  return failed(rest, { type: 'error', error: new ProviderError('failed', reason), dropCall: true }, context);
}

function failed(batch: Readonly<Batch>, event: Extract<BatchEvent, { type: 'error' }>, context: StepContext): Step {
  const { now, settings } = context;
  if (context.canceled) {
    const rest = without(batch, 'retryAt', 'download');
    return {
      batch: { ...rest, state: 'canceled', finishedAt: iso(now) },
      decision: { kind: 'cancel', ...(batch.requestId !== undefined ? { requestId: batch.requestId } : {}) },
    };
  }
  // Shutting down: the batch stays as saved (its request id, if any, is polled on the next start).
  if (context.stopping && event.aborted) return { batch, decision: STOP };

  let failure = event.error;
  // A call the provider no longer knows (purged, or the local provider restarted) is sent again.
  const lost = failure.kind === 'not_found' && batch.requestId !== undefined;
  if (lost) failure = new ProviderError('failed', `the provider no longer knows call ${batch.requestId}; sending it again`);
  const limited = failure.kind === 'rate_limited';
  // A 429 is pacing, not a fault of the call: it has its own, larger allowance, so a batch that
  // waits its turn through a busy minute does not fail for it.
  const throttled = (batch.throttled ?? 0) + (limited ? 1 : 0);
  const failures = batch.failures + (limited ? 0 : 1);
  // A provider's 429 may ask for up to 5 minutes; anyone else's Retry-After (an image host's, a 503's)
  // is honoured only up to the normal backoff's ceiling.
  const retryAfterCap = limited ? RETRY_AFTER_CAP_MS : (settings.retryMaxMs ?? 10_000);
  const retryAfterMs = failure.details.retryAfterMs === undefined ? undefined : Math.min(retryAfterCap, failure.details.retryAfterMs);
  // Only the provider's own API answers get here as rate_limited (image hosts never do: asImageError).
  const pause = limited ? { pauseLaneMs: retryAfterMs ?? backoff(throttled, settings) } : {};
  const retry = failure.retryable && (limited ? throttled < settings.maxAttempts * THROTTLE_ALLOWANCE : failures < settings.maxAttempts);
  const reason = oneLine(failure.message);
  const kept = without(batch, 'retryAt', 'download', ...(lost || event.dropCall ? (['requestId'] as const) : []));
  const counted = { ...kept, failures, ...(throttled > 0 ? { throttled } : {}), error: reason };
  if (!retry) {
    return {
      batch: { ...without(counted, 'requestId'), state: 'failed', finishedAt: iso(now) },
      decision: { kind: 'fail', reason, ...pause },
    };
  }
  const delayMs = Math.max(backoff(failures + throttled, settings), retryAfterMs ?? 0);
  return {
    batch: { ...counted, state: counted.requestId ? 'submitted' : 'queued', retryAt: iso(now + delayMs) },
    decision: { kind: 'retry', delayMs, reason, ...pause },
  };
}

// ── polling a call ────────────────────────────────────────────────────────────────────────────

/** While a call runs: wait and ask again, fetch its outputs, give it up past its deadline, or fail. */
export type PollDecision =
  | { kind: 'wait'; ms: number }
  | { kind: 'fetch' }
  /** past its deadline: cancel the call at the provider, then report `error` with `dropCall` */
  | { kind: 'abandon'; error: ProviderError }
  /** report `error` (a batch event), dropping the call when `dropCall` */
  | { kind: 'give_up'; error: ProviderError; dropCall: boolean };

export interface PollContext {
  now: number;
  deadline: number;
  settings: RetrySettings;
  /** the provider's usual call time, for the default poll interval */
  typicalCallMs?: number;
}

/** Time between status polls: configured, else a tenth of a typical call, from 20 ms to 1 s. */
export function pollInterval(settings: RetrySettings, typicalCallMs = 5000): number {
  return settings.pollIntervalMs ?? Math.min(1000, Math.max(20, typicalCallMs / 10));
}

/** After a status answer. The deadline is checked after a status, not before: a call that finished while we were down is still collected. */
export function afterStatus(status: CallStatus, context: PollContext): PollDecision {
  if (status.state === 'succeeded') return { kind: 'fetch' };
  if (status.state === 'failed' || status.state === 'canceled') {
    const message = status.state === 'failed' ? `the provider reported: ${status.error}` : 'the call was cancelled at the provider';
    return { kind: 'give_up', error: new ProviderError('failed', message), dropCall: true };
  }
  if (context.now > context.deadline) return abandon(context);
  return { kind: 'wait', ms: pollInterval(context.settings, context.typicalCallMs) };
}

/** After a status request failed: a transient error is waited out, and the call kept, not resent. */
export function afterStatusError(error: ProviderError, transient: number, aborted: boolean, context: PollContext): PollDecision {
  if (aborted || !error.retryable) return { kind: 'give_up', error, dropCall: false };
  if (context.now > context.deadline) return abandon(context);
  return { kind: 'wait', ms: Math.min(RETRY_AFTER_CAP_MS, Math.max(error.details.retryAfterMs ?? 0, backoff(transient, context.settings))) };
}

function abandon(context: PollContext): PollDecision {
  const seconds = Math.round(context.settings.callTimeoutMs / 1000);
  return { kind: 'abandon', error: new ProviderError('timeout', `no result within ${seconds} s; the call was cancelled`) };
}

// ── helpers ───────────────────────────────────────────────────────────────────────────────────

/** 1 s, 1.5 s, 2.25 s … capped at 10 s (both configurable). */
export function backoff(failures: number, settings: Pick<RetrySettings, 'retryBaseMs' | 'retryMaxMs'>): number {
  const base = settings.retryBaseMs ?? 1000;
  const max = settings.retryMaxMs ?? 10_000;
  return Math.min(max, base * 1.5 ** Math.max(0, failures - 1));
}

/** The images the batch kept from its current call. */
function imagesOfCall(batch: Readonly<Batch>, images: readonly ImageRecord[]): ImageRecord[] {
  const requestId = batch.requestId ?? '';
  return images.filter((img) => img.batchIndex === batch.index && img.requestId === requestId);
}

/** The images the batch had before its current call: output k of the call is image start + base + k + 1. */
function callBase(batch: Readonly<Batch>, images: readonly ImageRecord[]): number {
  return batch.delivered - imagesOfCall(batch, images).length;
}

/** The moment a call is given up: its submit time (as saved) plus the call timeout. */
function deadlineOf(batch: Readonly<Batch>, context: StepContext): number {
  const submitted = Date.parse(batch.submittedAt ?? '');
  return (Number.isFinite(submitted) ? submitted : context.now) + context.settings.callTimeoutMs;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

type Transient = 'retryAt' | 'download' | 'requestId';

/** The batch without these fields (the same object when it has none of them). */
function without(batch: Readonly<Batch>, ...keys: Transient[]): Batch {
  if (keys.every((key) => batch[key] === undefined)) return batch;
  const copy = { ...batch };
  for (const key of keys) delete copy[key];
  return copy;
}
