/**
 * The delivery lifecycle on its own: the real engine (local provider, SQLite store) and an in-memory
 * platform that implements the platform interface and records what it was asked to do. What Discord,
 * Slack and the playground add on top is tested end to end in their folders.
 */
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import type { App } from '../../src/app.js';
import {
  Delivery,
  MessageGone,
  NoAccess,
  RetryAfter,
  type CourierOptions,
  type DeliveryPlatform,
  type PageLayout,
  type PageStep,
  type PlatformName,
  type ProgressCard,
} from '../../src/chat/delivery/index.js';
import type { Job, ProgressEvent, Requester } from '../../src/core/types.js';
import { createLogger } from '../../src/logger.js';
import { buildApp } from '../helpers.js';

const target = z.object({ id: z.string().min(1) });
type Target = z.infer<typeof target>;
const page = z.object({ uploaded: z.literal(true).optional(), id: z.string().min(1).optional() });
type Page = z.infer<typeof page>;

const OUTBOX = 'discord:outbox';
const IMAGES_PER_PAGE = 2;

/** A chat in memory: messages by id, every call in order, and the trouble its next calls run into. */
class MemoryChat implements DeliveryPlatform<Target, Page> {
  readonly target = target;
  readonly calls: string[] = [];
  readonly messages = new Map<string, string>();
  /** every progress edit's card, in order */
  readonly edits: ProgressCard[] = [];
  readonly trouble = { postProgress: [] as Error[], edit: [] as Error[] };
  /** pages whose post fails, and how many more times */
  readonly failing = new Map<number, number>();
  private next = 0;

  constructor(
    readonly editIntervalMs = 20,
    readonly name: PlatformName = 'discord',
    /** message ids are `${prefix}1`, `${prefix}2`, … */
    private readonly prefix = 'm',
  ) {}

  async postProgress(_job: Readonly<Job>, card: ProgressCard): Promise<Target> {
    const error = this.trouble.postProgress.shift();
    if (error) throw error;
    const id = `${this.prefix}${++this.next}`;
    this.calls.push(`post ${id}`);
    this.messages.set(id, say(card));
    return { id };
  }

  async editProgress(where: Target, _job: Readonly<Job>, card: ProgressCard): Promise<void> {
    const error = this.trouble.edit.shift();
    if (error) throw error;
    this.calls.push(`edit ${where.id}`);
    this.edits.push(card);
    this.messages.set(where.id, say(card));
  }

  readonly gallery = {
    page,
    layout: async (job: Readonly<Job>): Promise<PageLayout[]> => {
      const pages = Math.ceil(job.images.length / IMAGES_PER_PAGE);
      return Array.from({ length: pages }, (_, i) => ({
        page: i + 1,
        pages,
        images: job.images.slice(i * IMAGES_PER_PAGE, (i + 1) * IMAGES_PER_PAGE).map((image) => image.index),
      }));
    },
    // Two steps, like Slack's upload and buttons: the first is recorded before the second is tried.
    post: async ({ layout, earlier, save }: PageStep<Target, Page>): Promise<Page> => {
      if (earlier?.id) return earlier;
      if (!earlier?.uploaded) {
        this.calls.push(`upload page ${layout.page}`);
        await save({ uploaded: true });
      }
      const left = this.failing.get(layout.page) ?? 0;
      if (left > 0) {
        this.failing.set(layout.page, left - 1);
        throw new Error('network down');
      }
      const id = `${this.prefix}${++this.next}`;
      this.calls.push(`post page ${layout.page} ${id}`);
      this.messages.set(id, `page ${layout.page}: ${layout.images.join(',')}`);
      return { uploaded: true, id };
    },
  };

  pagesPosted(): string[] {
    return this.calls.filter((c) => c.startsWith('post page')).map((c) => c.split(' ')[2]!);
  }
}

function say(card: ProgressCard): string {
  return `${card.view.title} | ${card.gallery}`;
}

const person: Requester = { tenant: 'guild-1', userId: 'u1', platform: 'discord', channelId: 'c1' };

async function setUp(env: Record<string, string> = {}) {
  const lines: string[] = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(line) });
  const app = await buildApp({ logger, env: { LOCAL_LATENCY_MS: '20', LOCAL_CONCURRENCY: '2', ...env } });
  const start = (chat: MemoryChat, options: CourierOptions = {}) =>
    new Delivery({ engine: app.engine, keyv: app.keyv, logger }).register(chat, { retryBaseMs: 10, ...options });
  const submit = (count: number, who: Requester = person) =>
    app.engine.submit({ prompt: 'a fox', count, provider: 'local', model: 'local', aspectRatio: '1:1' }, who);
  return { app, lines, start, submit };
}

async function stored(app: App, jobId: string): Promise<Record<string, unknown> | undefined> {
  const facts = (await app.engine.get(jobId))?.chat?.['discord'];
  return facts && typeof facts === 'object' ? { ...facts } : undefined;
}

async function outbox(app: App): Promise<string[]> {
  return (await app.keyv.get<string[]>(OUTBOX)) ?? [];
}

const waitLong = { timeout: 10_000, interval: 20 };

/** A running Discord job whose message is already known (as after a restart): events can be emitted for it by hand. */
function runningJob(id: string, messageId: string): Job {
  return {
    id,
    createdAt: new Date(0).toISOString(),
    updatedAt: new Date(0).toISOString(),
    requester: person,
    request: { prompt: 'a fox', count: 100, provider: 'local', model: 'local', aspectRatio: '1:1', seed: 1 },
    state: 'running',
    batches: [],
    images: [],
    estimatedCostUsd: 0,
    chat: { discord: { id: messageId } },
  };
}

function event(jobId: string, imagesDone: number): ProgressEvent {
  return { jobId, state: 'running', batchesTotal: 25, batchesDone: 0, batchesFailed: 0, imagesDone, imagesTotal: 100, imagesFailed: 0, failures: [] };
}

describe('delivery', () => {
  it('posts the progress message, edits it, and delivers the gallery page by page, recording each page', async () => {
    const { app, start, submit } = await setUp();
    const chat = new MemoryChat();
    const courier = start(chat);
    const job = await submit(5);
    await courier.follow(job);
    expect(chat.calls[0]).toBe('post m1');
    expect(await stored(app, job.id)).toEqual({ id: 'm1' });

    await vi.waitFor(async () => expect((await stored(app, job.id))?.['delivered']).toBe(true), waitLong);
    expect(chat.pagesPosted()).toEqual(['1', '2', '3']);
    expect((await stored(app, job.id))?.['pages']).toEqual([
      { uploaded: true, id: 'm2' },
      { uploaded: true, id: 'm3' },
      { uploaded: true, id: 'm4' },
    ]);
    expect(chat.messages.get('m3')).toBe('page 2: 3,4');
    // The final state goes out before the gallery; then the message says where the gallery is.
    const final = chat.edits.findIndex((card) => card.view.finished);
    expect(chat.edits[final]).toMatchObject({ view: { title: 'Done: 5 images' }, summary: { pending: 5 }, gallery: 'posting' });
    const editsAt = chat.calls.flatMap((call, i) => (call === 'edit m1' ? [i] : []));
    expect(editsAt[final]).toBeLessThan(chat.calls.indexOf('upload page 1'));
    await vi.waitFor(() => expect(chat.messages.get('m1')).toBe('Done: 5 images | posted'), waitLong);
    await vi.waitFor(async () => expect(await outbox(app)).toEqual([]), waitLong);
    await courier.stop();
  });

  it('routes each job to its own platform only, and listens to the engine once for every platform', async () => {
    const { app, submit } = await setUp();
    const delivery = new Delivery({ engine: app.engine, keyv: app.keyv, logger: app.logger });
    const discordChat = new MemoryChat();
    const pageChat = new MemoryChat(20, 'playground');
    const discord = delivery.register(discordChat);
    const playground = delivery.register(pageChat);
    expect(app.engine.listenerCount('progress')).toBe(1);
    expect(app.engine.listenerCount('finished')).toBe(1);
    expect(() => delivery.register(new MemoryChat())).toThrow(/discord is registered already/);

    // A playground job that even carries Discord facts is the playground's alone.
    const theirs = await submit(1, { ...person, platform: 'playground' });
    await app.engine.annotate(theirs.id, 'discord', { id: 'x1' });
    await playground.follow(theirs);
    await app.engine.waitFor(theirs.id);
    await vi.waitFor(() => expect(pageChat.messages.get('m1')).toMatch(/^Done: 1 images? \| posted$/), waitLong);
    // A Discord job no message was posted or registered for is not delivery's to show.
    const untold = await submit(1);
    await app.engine.waitFor(untold.id);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(discordChat.calls).toEqual([]);

    await discord.stop();
    expect(app.engine.listenerCount('progress')).toBe(1);
    await playground.stop();
    expect(app.engine.listenerCount('progress')).toBe(0);
    expect(app.engine.listenerCount('finished')).toBe(0);
  });

  it('edits a message at most once per interval with the latest state, and skips an edit that changes nothing', async () => {
    const { app, start } = await setUp();
    const chat = new MemoryChat(10_000);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const courier = start(chat);
    try {
      const job = runningJob('20250101-aaaaaaaa', 'm7');
      for (let i = 1; i <= 20; i++) app.engine.emit('progress', event(job.id, i), job);
      await vi.advanceTimersByTimeAsync(0);
      expect(chat.edits.map((c) => c.view.percent)).toEqual([1]);
      await vi.advanceTimersByTimeAsync(9_999);
      expect(chat.edits).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(chat.edits.map((c) => c.view.percent)).toEqual([1, 20]);
      // The same state again would change nothing: nothing is sent.
      app.engine.emit('progress', event(job.id, 20), job);
      await vi.advanceTimersByTimeAsync(30_000);
      expect(chat.calls).toEqual(['edit m7', 'edit m7']);
    } finally {
      vi.useRealTimers();
      await courier.stop();
    }
  });

  it('holds a message for its RetryAfter, then sends its newest state; a gone message is not edited again', async () => {
    const { app, start } = await setUp();
    const chat = new MemoryChat(10);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const courier = start(chat);
    try {
      const limited = runningJob('20250101-bbbbbbbb', 'm1');
      chat.trouble.edit.push(new RetryAfter(500));
      app.engine.emit('progress', event(limited.id, 1), limited);
      await vi.advanceTimersByTimeAsync(0);
      app.engine.emit('progress', event(limited.id, 2), limited);
      await vi.advanceTimersByTimeAsync(499);
      expect(chat.calls).toEqual([]);
      await vi.advanceTimersByTimeAsync(1);
      expect(chat.edits.map((c) => c.view.percent)).toEqual([2]);

      const gone = runningJob('20250101-cccccccc', 'm2');
      chat.trouble.edit.push(new MessageGone('deleted'));
      app.engine.emit('progress', event(gone.id, 1), gone);
      await vi.advanceTimersByTimeAsync(0);
      app.engine.emit('progress', event(gone.id, 2), gone);
      await vi.advanceTimersByTimeAsync(1_000);
      expect(chat.calls).toEqual(['edit m1']);
    } finally {
      vi.useRealTimers();
      await courier.stop();
    }
  });

  it('continues a gallery a restart cut off from the recorded pages, posting none twice', async () => {
    const { app, start, submit } = await setUp();
    const first = new MemoryChat();
    first.failing.set(2, 2);
    const courier = start(first, { attempts: 2 });
    const job = await submit(6);
    await courier.follow(job);
    // Page 1 went out; page 2 was uploaded, then its post failed on both tries: the message says so.
    await vi.waitFor(() => expect(first.messages.get('m1')).toBe('Done: 6 images | failed'), waitLong);
    expect(first.calls.filter((c) => c.includes('page'))).toEqual(['upload page 1', 'post page 1 m2', 'upload page 2']);
    expect(await outbox(app)).toEqual([job.id]);
    await courier.stop();

    // The next start: the same progress message (found in the store), page 2's upload not redone.
    const second = new MemoryChat(20, 'discord', 'n');
    const restarted = start(second);
    await vi.waitFor(async () => expect((await stored(app, job.id))?.['delivered']).toBe(true), waitLong);
    expect(second.calls[0]).toBe('edit m1');
    expect(second.calls.filter((c) => c.includes('page'))).toEqual(['post page 2 n1', 'upload page 3', 'post page 3 n2']);
    await vi.waitFor(async () => expect(await outbox(app)).toEqual([]), waitLong);
    await vi.waitFor(() => expect(second.messages.get('m1')).toBe('Done: 6 images | posted'), waitLong);
    await restarted.stop();
  });

  it('a platform without access waits — no retries of its own — and retry() delivers once access is given', async () => {
    const { app, lines, start, submit } = await setUp();
    const chat = new MemoryChat();
    const courier = start(chat);
    const job = await submit(2);
    chat.trouble.postProgress.push(new NoAccess('not in channel'), new NoAccess('not in channel'));
    await expect(courier.follow(job)).rejects.toBeInstanceOf(NoAccess);
    await app.engine.waitFor(job.id);
    // At its end it tried once more, was refused, and waits.
    await vi.waitFor(() => expect(lines.join('')).toContain('the gallery waits until the bot has access'), waitLong);
    expect(chat.trouble.postProgress).toEqual([]);
    expect(chat.calls).toEqual([]);
    expect(await outbox(app)).toEqual([job.id]);

    await courier.retry((j) => j.requester.channelId === 'c1');
    await vi.waitFor(async () => expect((await stored(app, job.id))?.['delivered']).toBe(true), waitLong);
    expect(chat.calls[0]).toBe('post m1');
    expect(chat.pagesPosted()).toEqual(['1']);
    // `delivered` is recorded first, then the job leaves the outbox
    await vi.waitFor(async () => expect(await outbox(app)).toEqual([]), waitLong);
  });

  it('at start drops, and logs, outbox entries whose job is gone or finished over 7 days ago, and delivers the rest', async () => {
    const { app, lines, start, submit } = await setUp();
    const old = await submit(1);
    const fresh = await submit(1);
    await app.engine.waitFor(old.id);
    await app.engine.waitFor(fresh.id);
    const stale = (await app.jobs.get(old.id))!;
    await app.jobs.save({ ...stale, finishedAt: new Date(Date.now() - 8 * 86_400_000).toISOString() });
    await app.engine.annotate(fresh.id, 'discord', { id: 'm9' });
    await app.keyv.set(OUTBOX, [old.id, '20200101-deadbeef', fresh.id]);

    const chat = new MemoryChat();
    start(chat);
    await vi.waitFor(async () => expect(await outbox(app)).toEqual([]), waitLong);
    const logged = lines.join('');
    expect(logged).toMatch(new RegExp(`"job":"${old.id}".*dropped from the outbox: still undelivered after 7 days`));
    expect(logged).toMatch(/"job":"20200101-deadbeef".*dropped from the outbox: the job is no longer in the store/);
    // The fresh job's stored message was edited, not posted anew, and its gallery went out; the old one got nothing.
    expect(chat.calls[0]).toBe('edit m9');
    expect(chat.calls.filter((c) => /^post m/.test(c))).toEqual([]);
    expect(chat.pagesPosted()).toEqual(['1']);
  });

  it('reads a stored record that does not fit the schema as no record at all', async () => {
    const { app, start, submit } = await setUp();
    const job = await submit(2);
    await app.engine.waitFor(job.id);
    await app.engine.annotate(job.id, 'discord', { id: 42, pages: 'many', delivered: 'yes' });
    await app.keyv.set(OUTBOX, [job.id]);
    const chat = new MemoryChat();
    const courier = start(chat);
    expect(courier.factsOf((await app.engine.get(job.id))!)).toEqual({ target: undefined, pages: [], delivered: false });
    // No message to edit and no gallery posted, as far as anyone can tell: both are posted.
    await vi.waitFor(() => expect(chat.calls).toEqual(['post m1', 'upload page 1', 'post page 1 m2', 'edit m1']), waitLong);
    expect((await stored(app, job.id))?.['delivered']).toBe(true);
    expect(chat.messages.get('m1')).toBe('Done: 2 images | posted');
  });
});
