/**
 * Edits of posted messages through one latest-only throttle slot per message (LatestThrottle): at most
 * one per interval, always the newest state, never a backlog. An edit that changes nothing is skipped;
 * a RetryAfter holds that message only, then its newest state goes out; a MessageGone message is not
 * edited again. Slots untouched for a while are swept, so finished jobs do not stay in memory.
 *
 * With a gate (distributed mode, shared.ts) the interval holds across processes too: an edit whose
 * gate another process holds is put off like a RetryAfter, its newest state kept, and tried when the
 * gate frees.
 */
import { LatestThrottle } from '../../core/throttle.js';
import { MessageGone, RetryAfter } from './platform.js';
import type { EditGate, EditHold } from './shared.js';

interface Edit {
  /** what the message will say, to skip an edit that changes nothing */
  content: string;
  /** resolves with what the message says now, when that is not `content` (it was rendered afresh) */
  send: () => Promise<string | void>;
}

export interface EditsOptions {
  intervalMs: number;
  onError: (key: string, error: unknown) => void;
  onGone: (key: string) => void;
  /** @default 10 minutes */
  idleMs?: number;
  now: () => number;
  /** spaces edits of one message across processes; undefined in one process */
  gate?: Pick<EditGate, 'take' | 'hold'>;
}

/** How many times flush() waits out a gate another process keeps taking before it leaves the edit to the timer. */
const FLUSH_TRIES = 4;

export class Edits {
  private readonly throttle: LatestThrottle<Edit>;
  /** the newest edit of each message: what goes out once a 429's wait is over */
  private readonly latest = new Map<string, Edit>();
  private readonly sent = new Map<string, string>();
  private readonly touched = new Map<string, number>();
  private readonly gone = new Set<string>();
  /** messages whose last try found the gate taken: flush() waits for them */
  private readonly gated = new Set<string>();
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly options: EditsOptions) {
    const { intervalMs, onError, now } = options;
    this.throttle = new LatestThrottle<Edit>({ intervalMs, onError, now, send: (key, edit) => this.send(key, edit) });
    const idleMs = options.idleMs ?? 600_000;
    this.sweeper = setInterval(() => {
      for (const [key, at] of this.touched) if (at < options.now() - idleMs) this.forget(key);
    }, Math.min(idleMs, 60_000));
    this.sweeper.unref();
  }

  push(key: string, content: string, send: () => Promise<string | void>): void {
    if (this.closed) return;
    const edit = { content, send };
    this.touched.set(key, this.options.now());
    this.latest.set(key, edit);
    this.throttle.push(key, edit);
  }

  /** A message was just posted saying `content`: its first edit waits a full interval, and only if it differs. */
  posted(key: string, content: string): Promise<void> {
    this.touched.set(key, this.options.now());
    this.sent.set(key, content);
    this.throttle.holdFor(key, this.options.intervalMs);
    // The other processes wait too: they learn of the message from the job's facts, maybe at once.
    return this.hold(key, this.options.intervalMs);
  }

  /** Sends the waiting state now (after a send in progress, a 429's wait, or another process's edit). */
  async flush(key: string): Promise<void> {
    await this.throttle.flush(key);
    for (let tries = 1; tries < FLUSH_TRIES && this.gated.has(key) && !this.closed; tries += 1) await this.throttle.flush(key);
  }

  /** Drops every waiting edit and its timer; nothing is sent after this. */
  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const key of [...this.touched.keys()]) this.forget(key);
  }

  private async send(key: string, edit: Edit): Promise<void> {
    if (this.closed || this.gone.has(key) || this.sent.get(key) === edit.content) return;
    let hold: EditHold | undefined;
    if (this.options.gate) {
      // Redis out of reach: the edit goes anyway, spaced by this process's throttle alone.
      const taken = await this.options.gate.take(key).catch((error: unknown) => {
        this.options.onError(key, error);
        return undefined;
      });
      if (typeof taken === 'number') {
        this.gated.add(key);
        return this.putOff(key, taken);
      }
      this.gated.delete(key);
      hold = taken;
    }
    let holdMs = this.options.intervalMs;
    try {
      const said = await edit.send();
      this.sent.set(key, typeof said === 'string' ? said : edit.content);
    } catch (error) {
      if (error instanceof MessageGone) {
        this.gone.add(key);
        return this.options.onGone(key);
      }
      if (!(error instanceof RetryAfter)) throw error;
      holdMs = Math.max(holdMs, error.ms);
      this.putOff(key, error.ms);
    } finally {
      // Every try counts for the others, a failed one too: it reached the platform.
      await hold?.done(holdMs).catch((error: unknown) => this.options.onError(key, error));
    }
  }

  /** The message's newest state goes out after `ms` (its slot is held, the state kept). */
  private putOff(key: string, ms: number): void {
    this.throttle.holdFor(key, ms);
    const latest = this.latest.get(key);
    if (latest && !this.closed) this.throttle.push(key, latest);
  }

  private async hold(key: string, ms: number): Promise<void> {
    await this.options.gate?.hold(key, ms).catch((error: unknown) => this.options.onError(key, error));
  }

  private forget(key: string): void {
    this.throttle.forget(key);
    for (const map of [this.latest, this.sent, this.touched]) map.delete(key);
    this.gone.delete(key);
    this.gated.delete(key);
  }
}
