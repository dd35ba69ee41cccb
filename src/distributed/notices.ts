/**
 * The notice board in Redis (distributed mode): a webhook received by one process ends the call that
 * another is watching. A notice is a key (`<prefix>:notice:<provider>:<id>`, kept 10 minutes, for a
 * watcher that comes later) and a message on `<prefix>:notices` (for the watchers already waiting, in
 * whichever process). The calls we expect deliveries for and the deliveries seen are keys too, so every
 * process accepts the same deliveries and refuses the same replays (SET NX).
 *
 * Pub/sub is best effort (a message sent while a subscriber reconnects is lost): after a reconnect the
 * kept notices of every waiter are read again, and the providers' safety polls end a call regardless.
 */
import type { Redis } from 'ioredis';
import { EXPECT_TTL_MS, NOTICE_TTL_MS, REPLAY_TTL_MS, waitOn, type CallNotice, type CallNotices } from '../core/notices.js';
import { silentLogger, type Logger } from '../core/ports.js';
import { PROVIDER_NAMES, type ProviderName } from '../core/types.js';

const STATES = new Set(['queued', 'running', 'succeeded', 'failed', 'canceled']);

/** A notice as read back from Redis (written by this version or an older one): checked, never trusted blindly. */
function readNotice(text: string | null): CallNotice | undefined {
  if (!text) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const notice = value as Partial<CallNotice> | null;
  if (!notice || typeof notice !== 'object') return undefined;
  if (!PROVIDER_NAMES.includes(notice.provider as ProviderName) || typeof notice.requestId !== 'string') return undefined;
  const state = (notice.status as { state?: unknown } | undefined)?.state;
  if (typeof state !== 'string' || !STATES.has(state)) return undefined;
  if (state === 'failed' && typeof (notice.status as { error?: unknown }).error !== 'string') return undefined;
  return notice as CallNotice;
}

export class RedisCallNotices implements CallNotices {
  private subscriber: Redis | undefined;
  private readonly waiters = new Map<string, Set<(notice: CallNotice) => void>>();
  private readonly log: Logger;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    log: Logger = silentLogger,
  ) {
    this.log = log;
  }

  private key(...parts: string[]): string {
    return [this.prefix, ...parts].join(':');
  }

  private noticeKey(provider: ProviderName, requestId: string): string {
    return this.key('notice', provider, requestId);
  }

  /** Subscribes to the notices channel on a connection of its own (a subscribed connection takes no other command). */
  async start(): Promise<void> {
    const subscriber = this.redis.duplicate();
    this.subscriber = subscriber;
    subscriber.on('error', (error: Error) => this.log.warn({ err: error.message }, 'notices: Redis subscriber error'));
    subscriber.on('message', (_channel: string, text: string) => {
      const notice = readNotice(text);
      if (notice) this.wake(notice);
    });
    let subscribed = false;
    subscriber.on('ready', () => {
      // A reconnect: ioredis subscribes again by itself; what was published meanwhile is read from the keys.
      if (subscribed) void this.recheck();
    });
    await subscriber.subscribe(this.key('notices'));
    subscribed = true;
  }

  private wake(notice: CallNotice): void {
    const set = this.waiters.get(this.noticeKey(notice.provider, notice.requestId));
    for (const wake of [...(set ?? [])]) wake(notice);
  }

  private async recheck(): Promise<void> {
    for (const key of [...this.waiters.keys()]) {
      const notice = readNotice(await this.redis.get(key).catch(() => null));
      if (notice) this.wake(notice);
    }
  }

  async publish(notice: CallNotice): Promise<void> {
    const text = JSON.stringify(notice);
    await this.redis.multi().set(this.noticeKey(notice.provider, notice.requestId), text, 'PX', NOTICE_TTL_MS).publish(this.key('notices'), text).exec();
  }

  async get(provider: ProviderName, requestId: string): Promise<CallNotice | undefined> {
    return readNotice(await this.redis.get(this.noticeKey(provider, requestId)));
  }

  wait(provider: ProviderName, requestId: string, signal: AbortSignal): Promise<CallNotice> {
    return waitOn(this.waiters, this.noticeKey(provider, requestId), signal, () => this.get(provider, requestId));
  }

  async expect(provider: ProviderName, requestId: string): Promise<boolean> {
    // SET … GET answers the value it replaced: null when the call was not expected yet.
    const before = await this.redis.set(this.key('expect', provider, requestId), '1', 'PX', EXPECT_TTL_MS, 'GET');
    return before !== null;
  }

  async isExpected(provider: ProviderName, requestId: string): Promise<boolean> {
    return (await this.redis.exists(this.key('expect', provider, requestId))) === 1;
  }

  async claim(deliveryKey: string): Promise<boolean> {
    return (await this.redis.set(this.key('delivery', deliveryKey), '1', 'PX', REPLAY_TTL_MS, 'NX')) === 'OK';
  }

  async release(deliveryKey: string): Promise<void> {
    await this.redis.del(this.key('delivery', deliveryKey));
  }

  /** Closes the subscriber connection (the shared one is the caller's). */
  async close(): Promise<void> {
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    if (!subscriber) return;
    await subscriber.quit().catch(() => undefined);
    subscriber.disconnect();
  }
}
