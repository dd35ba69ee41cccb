/**
 * The seam between the engine and whatever runs batches in turn: the `Dispatcher`. One process uses
 * the in-memory fair scheduler (scheduler.ts, behind `LocalDispatcher`); distributed mode uses BullMQ
 * queues on Redis (src/distributed/dispatch.ts), where any process may run any ticket.
 *
 * A ticket names a batch, never carries it: whoever runs it reads the job as stored, so a ticket run
 * twice (a stalled worker's job taken over) or run late (after a cancel) does what the batch's
 * recorded state says — poll a recorded request id, or nothing — and never pays for a second submit.
 */
import type { Rate } from './rate.js';
import type { ProviderName } from './types.js';

export interface LaneOptions {
  /** provider calls in flight at once (across all processes in distributed mode) */
  concurrency: number;
  /** provider calls sent per period; undefined = none but the provider's 429s */
  rateLimit?: Rate;
}

/** One batch's turn at its provider. */
export interface BatchTicket {
  jobId: string;
  batchIndex: number;
  tenant: string;
  provider: ProviderName;
  /**
   * The batch's tries so far (failures + throttled). With job and batch it names the ticket, so
   * queueing the same turn twice (a resume beside a live process) queues it once.
   */
  attempt: number;
}

export interface EnqueueOptions {
  /** do not start before this many ms from now (a retry's backoff) */
  delayMs?: number;
  /** before the tenant's other waiting calls: a retry keeps its turn */
  front?: boolean;
}

/** Runs one ticket; settles its own errors. The signal aborts it (cancel, shutdown). */
/**
 * Runs a ticket. `release`, where the dispatcher gives it, is called once the provider is done with the
 * call (its outputs fetched), so the call's slot can start another while this one saves its images.
 */
export type TicketRunner = (ticket: BatchTicket, signal: AbortSignal, release?: () => void) => Promise<void>;

export interface Dispatcher {
  /** Starts handing tickets to `run`. Called once, before anything is enqueued. */
  start(run: TicketRunner): Promise<void>;
  /** Queues a ticket; resolves once it is queued (durably, in distributed mode). */
  enqueue(ticket: BatchTicket, options?: EnqueueOptions): Promise<void>;
  /** Drops a job's waiting tickets and aborts its running ones (in every process, where it can). */
  cancelJob(jobId: string): Promise<void>;
  /**
   * Runs one request that counts against the provider's rate (a submit): waits for a pause to end and
   * for a place in the provider's rolling window, then sends it.
   */
  throttle<T>(provider: ProviderName, request: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  /** Stops starting calls on a provider for `ms` (a 429's Retry-After, capped), in every process. */
  pause(provider: ProviderName, ms: number): void;
  /** Where a job's next waiting call stands (1 = next), when this dispatcher can tell cheaply. */
  queuePosition(provider: ProviderName, jobId: string): number | undefined;
  /** Calls waiting to start on a provider, as last known (for progress and metrics). */
  depth(provider: ProviderName): number;
  /** Starts nothing more here; waiting tickets stay queued (persisted), running ones go on. */
  halt(): void;
  /** Aborts every ticket running here; in distributed mode they go back to the queue for another process. */
  abortAll(): void;
  /** Releases connections; after halt() and abortAll(). */
  close(): Promise<void>;
}
