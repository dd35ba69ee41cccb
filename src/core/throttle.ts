/**
 * Message edits, throttled per message: at most one send per `intervalMs`, always the latest state,
 * never a backlog. A burst of 50 progress events becomes two edits: the first at once, the last when
 * the interval has passed. `flush` sends the final state without waiting; `holdFor` obeys a 429.
 */
export interface ThrottleOptions<T> {
  intervalMs: number;
  send: (key: string, state: T) => Promise<void>;
  onError?: (key: string, error: unknown) => void;
  now?: () => number;
}

interface Slot<T> {
  lastSentAt: number;
  pending?: T;
  timer?: NodeJS.Timeout;
  sending?: Promise<void>;
  holdUntil: number;
}

export class LatestThrottle<T> {
  private readonly slots = new Map<string, Slot<T>>();
  private readonly now: () => number;

  constructor(private readonly options: ThrottleOptions<T>) {
    this.now = options.now ?? Date.now;
  }

  private slot(key: string): Slot<T> {
    let slot = this.slots.get(key);
    if (!slot) this.slots.set(key, (slot = { lastSentAt: -Infinity, holdUntil: 0 }));
    return slot;
  }

  /** Offers a new state; it replaces any state still waiting for this key. */
  push(key: string, state: T): void {
    const slot = this.slot(key);
    slot.pending = state;
    this.schedule(key, slot);
  }

  /** No send for this key before `ms` from now (a 429's Retry-After). */
  holdFor(key: string, ms: number): void {
    const slot = this.slot(key);
    slot.holdUntil = Math.max(slot.holdUntil, this.now() + ms);
    if (slot.pending !== undefined) this.schedule(key, slot, true);
  }

  /** Sends the waiting state now (after any send in progress), e.g. a job's final state. */
  async flush(key: string): Promise<void> {
    const slot = this.slots.get(key);
    if (!slot) return;
    clearTimeout(slot.timer);
    slot.timer = undefined;
    await slot.sending;
    const hold = slot.holdUntil - this.now();
    if (hold > 0) await new Promise((resolve) => setTimeout(resolve, hold));
    if (slot.pending !== undefined) await this.sendNow(key, slot);
  }

  /** Forgets a key (after its last send). */
  forget(key: string): void {
    const slot = this.slots.get(key);
    if (slot) clearTimeout(slot.timer);
    this.slots.delete(key);
  }

  private schedule(key: string, slot: Slot<T>, reschedule = false): void {
    if (slot.sending && !reschedule) return; // the send in progress re-schedules when it ends
    if (reschedule) {
      clearTimeout(slot.timer);
      slot.timer = undefined;
    }
    if (slot.timer) return;
    const at = Math.max(slot.lastSentAt + this.options.intervalMs, slot.holdUntil);
    const wait = at - this.now();
    if (wait <= 0 && !slot.sending) {
      void this.sendNow(key, slot);
      return;
    }
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (slot.sending) return;
      void this.sendNow(key, slot);
    }, Math.max(0, wait));
  }

  private async sendNow(key: string, slot: Slot<T>): Promise<void> {
    const state = slot.pending;
    if (state === undefined) return;
    slot.pending = undefined;
    slot.lastSentAt = this.now();
    const sending = this.options.send(key, state).catch((error: unknown) => this.options.onError?.(key, error));
    slot.sending = sending;
    await sending;
    slot.sending = undefined;
    if (slot.pending !== undefined && this.slots.get(key) === slot) this.schedule(key, slot);
  }
}
