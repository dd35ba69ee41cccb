/**
 * Where a job's messages live and how to reach them. While the interaction token is fresh, edits and
 * follow-ups go through the interaction webhook (it works even where the bot cannot see the channel);
 * from 14 minutes on, or at the first sign the token is dead (401 / 50027 / Unknown Webhook), they go
 * through the bot token's channel routes — and the dead token is never tried again, since 401s count
 * toward Discord's invalid-request ban.
 */
import { DiscordAPIError, Routes, makeURLSearchParams, type RawFile, type REST } from 'discord.js';
import type { MessageBody } from './render.js';

/** What is persisted in `job.chat.discord`: enough to find the progress message after a restart. */
export interface DiscordFacts {
  channelId: string;
  messageId: string;
  guildId?: string;
  /** when the interaction token stops being used (epoch ms); the token itself is never persisted */
  tokenExpiresAt?: number;
  attachmentSizeLimit?: number;
  gallery?: GalleryEntry[];
}

/** One posted gallery message: its images, and those that were too large to upload. */
export interface GalleryEntry {
  messageId: string;
  images: number[];
  skipped?: number[];
}

export interface MessageTarget extends DiscordFacts {
  /** the interaction token, in memory only */
  interactionToken?: string;
}

/** Reads the adapter's facts back from a job, refusing anything that is not their shape. */
export function factsOf(chat: Record<string, unknown> | undefined): DiscordFacts | undefined {
  const facts = chat?.['discord'] as Partial<DiscordFacts> | undefined;
  if (!facts || typeof facts.channelId !== 'string' || typeof facts.messageId !== 'string') return undefined;
  return facts as DiscordFacts;
}

export interface Upload {
  name: string;
  data: Buffer;
  contentType: string;
}

export interface Transport {
  edit(target: MessageTarget, body: MessageBody): Promise<void>;
  /** posts a new message in the target's channel; resolves with its id */
  post(target: MessageTarget, body: MessageBody, files?: Upload[]): Promise<string>;
}

/** Discord's answers that mean an interaction token can no longer be used. */
export function isDeadToken(error: unknown): boolean {
  return error instanceof DiscordAPIError && (error.code === 50027 || error.code === 10015 || error.status === 401);
}

/** Interaction tokens appear in webhook and callback URLs; never let one reach a log line. */
export function scrubTokens(text: string): string {
  return text.replace(/\/(webhooks|interactions)\/(\d+)\/[^/?\s]+/g, '/$1/$2/[token]');
}

/** An error as it may be logged: no URL with a token, no request body. */
export function describeError(error: unknown): Record<string, unknown> {
  if (error instanceof DiscordAPIError) {
    return { name: error.name, status: error.status, code: error.code, method: error.method, url: scrubTokens(error.url), message: error.message };
  }
  if (error instanceof Error) {
    return { name: error.name, message: scrubTokens(error.message), stack: error.stack ? scrubTokens(error.stack) : undefined };
  }
  return { message: scrubTokens(String(error)) };
}

function withFiles(body: MessageBody, files: Upload[]): { body: object; files: RawFile[] } {
  return {
    body: { ...body, attachments: files.map((file, id) => ({ id, filename: file.name })) },
    files: files.map((file) => ({ name: file.name, data: file.data, contentType: file.contentType })),
  };
}

export interface TransportOptions {
  rest: REST;
  applicationId: string;
  now?: () => number;
  onTokenDropped?: (target: MessageTarget, error: unknown) => void;
}

export function createTransport(options: TransportOptions): Transport {
  const now = options.now ?? Date.now;
  const usableToken = (target: MessageTarget): string | undefined =>
    target.interactionToken !== undefined && now() < (target.tokenExpiresAt ?? 0) ? target.interactionToken : undefined;

  /** Tries the interaction webhook, falls back to the bot token once the token turns out dead. */
  async function viaTokenOr<T>(target: MessageTarget, withToken: (token: string) => Promise<T>, withBot: () => Promise<T>): Promise<T> {
    const token = usableToken(target);
    if (token !== undefined) {
      try {
        return await withToken(token);
      } catch (error) {
        if (!isDeadToken(error)) throw error;
        delete target.interactionToken;
        options.onTokenDropped?.(target, error);
      }
    } else if (target.interactionToken !== undefined) {
      delete target.interactionToken;
    }
    return withBot();
  }

  return {
    async edit(target, body) {
      await viaTokenOr(
        target,
        (token) => options.rest.patch(Routes.webhookMessage(options.applicationId, token, '@original'), { body, auth: false }),
        () => options.rest.patch(Routes.channelMessage(target.channelId, target.messageId), { body }),
      );
    },
    async post(target, body, files = []) {
      const payload = withFiles(body, files);
      const message = (await viaTokenOr(
        target,
        (token) =>
          options.rest.post(Routes.webhook(options.applicationId, token), {
            ...payload,
            auth: false,
            query: makeURLSearchParams({ wait: true }),
          }),
        () => options.rest.post(Routes.channelMessages(target.channelId), payload),
      )) as { id: string };
      return message.id;
    },
  };
}
