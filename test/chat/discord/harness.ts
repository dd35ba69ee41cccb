/**
 * Builds the real core, the real discord.js client of the adapter and the fake Discord it talks to,
 * and reads jobs back out of what the fake recorded. Everything is torn down after each test.
 */
import { buildApp, onCleanup, type TestAppOptions } from '../../helpers.js';
import { MessageFlag, startFakeDiscord, type FakeDiscord, type FakeMessage, type RecordedCall } from '../../fakes/discord.js';
import { createDiscordAdapter, type DiscordOptions } from '../../../src/chat/discord/index.js';
import type { App } from '../../../src/app.js';
import type { ChatAdapter } from '../../../src/chat/types.js';

export const TOKEN = 'fake-bot-token';
/** The flags of every private answer: ephemeral, and no link preview of anything it echoes. */
export const PRIVATE = MessageFlag.Ephemeral | MessageFlag.SuppressEmbeds;
/** ManageMessages, as a permission bitfield. */
export const MANAGE_MESSAGES = (1n << 13n).toString();
const JOB_ID = /job (\d{8}-[0-9a-f]{8})/;

export interface Bot {
  fake: FakeDiscord;
  app: App & { dir: string };
  adapter: ChatAdapter;
}

export interface BotOptions extends Omit<TestAppOptions, 'env'> {
  env?: Record<string, string>;
  /** reuse a running fake (a restart keeps Discord's side) */
  fake?: FakeDiscord;
  adapter?: DiscordOptions;
}

export async function startBot(options: BotOptions = {}): Promise<Bot> {
  let fake = options.fake;
  if (!fake) {
    const started = await startFakeDiscord({ token: TOKEN });
    onCleanup(() => started.close());
    fake = started;
  }
  const { env, adapter: adapterOptions, fake: _, ...rest } = options;
  const app = await buildApp({
    ...rest,
    env: {
      DISCORD_TOKEN: TOKEN,
      DISCORD_APP_ID: fake.applicationId,
      DISCORD_API_URL: fake.apiUrl,
      LOCAL_CONCURRENCY: '1',
      ...env,
    },
  });
  // Scaled time: edits every 40 ms stand for Discord's 1.5 s (the throttle test checks the default).
  const adapter = await createDiscordAdapter(app, { editIntervalMs: 40, ...adapterOptions });
  onCleanup(() => adapter.stop());
  return { fake, app, adapter };
}

/** The message the command's deferred reply became. */
export async function progressMessageOf(fake: FakeDiscord, interactionId: string): Promise<string> {
  return fake.waitFor((f) => f.interaction(interactionId)?.originalMessageId, { description: 'the deferred reply' });
}

export function jobIdIn(message: FakeMessage | undefined): string | undefined {
  return message ? JOB_ID.exec(message.content)?.[1] : undefined;
}

/** Waits until the progress message has a job id in it. */
export async function jobIdOf(fake: FakeDiscord, messageId: string): Promise<string> {
  return fake.waitFor((f) => jobIdIn(f.message(messageId)), { description: 'a job id in the progress message' });
}

export function galleryMessages(fake: FakeDiscord, jobId: string): FakeMessage[] {
  return fake.messages().filter((m) => m.content.startsWith('**Gallery') && jobIdIn(m) === jobId);
}

/** Resolves once the gallery holds `count` attachments across its pages. */
export async function waitForGallery(fake: FakeDiscord, jobId: string, count: number, timeoutMs = 15_000): Promise<FakeMessage[]> {
  return fake.waitFor(
    (f) => {
      const pages = galleryMessages(f, jobId);
      return pages.reduce((sum, m) => sum + m.attachments.length, 0) === count ? pages : undefined;
    },
    { timeoutMs, description: `a gallery of ${count} images` },
  );
}

export async function waitForContent(fake: FakeDiscord, messageId: string, pattern: RegExp | string, timeoutMs = 15_000): Promise<FakeMessage> {
  return fake.waitFor(
    (f) => {
      const message = f.message(messageId);
      const content = message?.content ?? '';
      return (typeof pattern === 'string' ? content.includes(pattern) : pattern.test(content)) ? message : undefined;
    },
    { timeoutMs, description: `message ${messageId} to show ${String(pattern)}` },
  );
}

/** Every custom id on a message. */
export function customIds(message: FakeMessage | undefined): string[] {
  const ids: string[] = [];
  for (const row of message?.components ?? []) for (const c of (row['components'] as { custom_id?: string }[]) ?? []) if (c.custom_id) ids.push(c.custom_id);
  return ids;
}

/** The callbacks of an interaction, once it has been answered. */
export async function answerOf(fake: FakeDiscord, interactionId: string) {
  return fake.waitFor((f) => {
    const interaction = f.interaction(interactionId);
    return interaction?.acknowledged && interaction.callbacks.length > 0 ? interaction.callbacks : undefined;
  }, { description: 'an answer to the interaction' });
}

/** Calls that create or edit a message (their body carries content or components). */
export function messageCalls(fake: FakeDiscord): RecordedCall[] {
  return fake.calls.filter((call) => {
    if (/\/callback$/.test(call.path)) return [4, 7].includes(Number((call.body as { type?: number } | null)?.type));
    return /^(POST|PATCH) \/(channels\/\d+\/messages|webhooks\/)/.test(`${call.method} ${call.path}`);
  });
}
