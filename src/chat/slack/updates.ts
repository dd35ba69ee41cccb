/**
 * chat.update, throttled per message: at most one edit per `intervalMs` (chat.update is Tier 3, about
 * 50 a minute), always the latest state, an edit skipped when it would change nothing, and a 429
 * obeyed for that message only (holdFor Retry-After, then the latest state is sent).
 */
import type { webApi } from '@slack/bolt';
import { LatestThrottle } from '../../core/throttle.js';
import { describe, retryAfterMs } from './errors.js';
import { NO_UNFURL, type Rendered } from './render.js';

export interface Edit {
  channel: string;
  ts: string;
  message: Rendered;
}

export interface UpdaterOptions<T> {
  client: webApi.WebClient;
  intervalMs: number;
  /** what the message should say now, or undefined when there is no message to edit (yet) */
  render: (key: string, state: T) => Edit | undefined;
  onError: (key: string, error: string) => void;
  /** keys untouched this long are forgotten @default 10 minutes */
  idleMs?: number;
}

export class MessageUpdater<T> {
  private readonly throttle: LatestThrottle<T>;
  private readonly latest = new Map<string, { state: T; at: number }>();
  /** the content each message was last sent with, to skip edits that change nothing */
  private readonly sent = new Map<string, string>();
  private readonly sweeper: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly options: UpdaterOptions<T>) {
    this.throttle = new LatestThrottle<T>({
      intervalMs: options.intervalMs,
      send: (key, state) => this.send(key, state),
      onError: (key, error) => options.onError(key, describe(error)),
    });
    const idleMs = options.idleMs ?? 600_000;
    // Slots of finished jobs would otherwise stay for the life of the process.
    this.sweeper = setInterval(() => {
      const before = Date.now() - idleMs;
      for (const [key, { at }] of this.latest) if (at < before) this.forget(key);
    }, Math.min(idleMs, 60_000));
    this.sweeper.unref();
  }

  push(key: string, state: T): void {
    if (this.stopped) return;
    this.latest.set(key, { state, at: Date.now() });
    this.throttle.push(key, state);
  }

  /** A message was just posted with this content: the next edit waits a full interval, and only if it differs. */
  posted(key: string, message: Rendered): void {
    this.sent.set(key, JSON.stringify(message));
    this.throttle.holdFor(key, this.options.intervalMs);
  }

  /** Sends the waiting state now, after any send in progress or a 429's wait. */
  flush(key: string): Promise<void> {
    return this.throttle.flush(key);
  }

  forget(key: string): void {
    this.throttle.forget(key);
    this.latest.delete(key);
    this.sent.delete(key);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.sweeper);
    for (const key of [...this.latest.keys()]) this.forget(key);
  }

  private async send(key: string, state: T): Promise<void> {
    if (this.stopped) return;
    const edit = this.options.render(key, state);
    if (!edit) return;
    const content = JSON.stringify(edit.message);
    if (this.sent.get(key) === content) return;
    try {
      await this.options.client.chat.update({ channel: edit.channel, ts: edit.ts, text: edit.message.text, blocks: edit.message.blocks, ...NO_UNFURL });
      this.sent.set(key, content);
    } catch (error) {
      const wait = retryAfterMs(error);
      if (wait === undefined) throw error;
      // Only this message waits; the newest state goes out when the wait is over.
      this.throttle.holdFor(key, wait);
      const latest = this.latest.get(key);
      if (latest && !this.stopped) this.throttle.push(key, latest.state);
    }
  }
}
