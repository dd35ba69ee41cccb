/**
 * Edits of posted messages through one latest-only throttle slot per message (LatestThrottle): at most
 * one per interval, always the newest state, never a backlog. An edit that changes nothing is skipped;
 * a RetryAfter holds that message only, then its newest state goes out; a MessageGone message is not
 * edited again. Slots untouched for a while are swept, so finished jobs do not stay in memory.
 */
import { LatestThrottle } from '../../core/throttle.js';
import { MessageGone, RetryAfter } from './platform.js';

interface Edit {
  /** what the message will say, to skip an edit that changes nothing */
  content: string;
  send: () => Promise<void>;
}

export interface EditsOptions {
  intervalMs: number;
  onError: (key: string, error: unknown) => void;
  onGone: (key: string) => void;
  /** @default 10 minutes */
  idleMs?: number;
  now: () => number;
}

export class Edits {
  private readonly throttle: LatestThrottle<Edit>;
  /** the newest edit of each message: what goes out once a 429's wait is over */
  private readonly latest = new Map<string, Edit>();
  private readonly sent = new Map<string, string>();
  private readonly touched = new Map<string, number>();
  private readonly gone = new Set<string>();
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

  push(key: string, content: string, send: () => Promise<void>): void {
    if (this.closed) return;
    const edit = { content, send };
    this.touched.set(key, this.options.now());
    this.latest.set(key, edit);
    this.throttle.push(key, edit);
  }

  /** A message was just posted saying `content`: its first edit waits a full interval, and only if it differs. */
  posted(key: string, content: string): void {
    this.touched.set(key, this.options.now());
    this.sent.set(key, content);
    this.throttle.holdFor(key, this.options.intervalMs);
  }

  /** Sends the waiting state now (after a send in progress, or a 429's wait). */
  flush(key: string): Promise<void> {
    return this.throttle.flush(key);
  }

  /** Drops every waiting edit and its timer; nothing is sent after this. */
  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const key of [...this.touched.keys()]) this.forget(key);
  }

  private async send(key: string, edit: Edit): Promise<void> {
    if (this.closed || this.gone.has(key) || this.sent.get(key) === edit.content) return;
    try {
      await edit.send();
      this.sent.set(key, edit.content);
    } catch (error) {
      if (error instanceof MessageGone) {
        this.gone.add(key);
        return this.options.onGone(key);
      }
      if (!(error instanceof RetryAfter)) throw error;
      this.throttle.holdFor(key, error.ms);
      const latest = this.latest.get(key);
      if (latest && !this.closed) this.throttle.push(key, latest);
    }
  }

  private forget(key: string): void {
    this.throttle.forget(key);
    for (const map of [this.latest, this.sent, this.touched]) map.delete(key);
    this.gone.delete(key);
  }
}
