/**
 * Where a job's messages live and how to reach them. While the interaction token is fresh, edits and
 * follow-ups go through the interaction webhook (it works even where the bot cannot see the channel);
 * from 14 minutes on, or at the first sign the token is dead (401 / 50027 / Unknown Webhook), they go
 * through the bot token's channel routes — and the dead token is never tried again, since 401s count
 * toward Discord's invalid-request ban.
 */
import { DiscordAPIError, Routes, makeURLSearchParams, type RawFile, type REST } from 'discord.js';
import { z } from 'zod';
import type { MessageBody } from './render.js';

/** What is stored in `job.chat.discord` about the progress message: enough to edit it after a restart. */
export const discordTarget = z.object({
  channelId: z.string().min(1),
  messageId: z.string().min(1),
  guildId: z.string().min(1).optional(),
  /** the interaction's upload limit per file, where it said */
  attachmentSizeLimit: z.number().int().positive().optional(),
});
export type MessageTarget = z.infer<typeof discordTarget>;

/**
 * One posted gallery message: its images, and those that were too large to upload. `sheet`: a contact
 * sheet (a big job's page of up to 25 tiles in one image), which is re-rendered after every review.
 */
export const discordPage = z.object({
  messageId: z.string().min(1),
  images: z.array(z.number().int()),
  skipped: z.array(z.number().int()).optional(),
  sheet: z.literal(true).optional(),
});
export type GalleryEntry = z.infer<typeof discordPage>;

export interface Upload {
  name: string;
  data: Buffer;
  contentType: string;
}

export interface Transport {
  edit(target: MessageTarget, body: MessageBody): Promise<void>;
  /** posts a new message in the channel (a follow-up of the progress message while its token lives); resolves with its id */
  post(target: { channelId: string; messageId?: string }, body: MessageBody, files?: Upload[]): Promise<string>;
  /** the interaction token of a progress message, used until `expiresAt` (epoch ms); memory only */
  useToken(messageId: string, token: string, expiresAt: number): void;
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

/** Discord's answer to a new message, as far as we read it. */
const posted = z.object({ id: z.string() });

export function createTransport(options: {
  rest: REST;
  applicationId: string;
  now?: () => number;
  onTokenDropped?: (messageId: string, error: unknown) => void;
}): Transport {
  const now = options.now ?? Date.now;
  /** interaction tokens by progress message; never stored, gone at expiry or at the first sign of death */
  const tokens = new Map<string, { token: string; expiresAt: number }>();
  const usableToken = (messageId: string): string | undefined => {
    const entry = tokens.get(messageId);
    if (entry && now() < entry.expiresAt) return entry.token;
    tokens.delete(messageId);
    return undefined;
  };

  /** Tries the interaction webhook, falls back to the bot token once the token turns out dead. */
  async function viaTokenOr<T>(messageId: string | undefined, withToken: (token: string) => Promise<T>, withBot: () => Promise<T>): Promise<T> {
    const token = messageId === undefined ? undefined : usableToken(messageId);
    if (token !== undefined && messageId !== undefined) {
      try {
        return await withToken(token);
      } catch (error) {
        if (!isDeadToken(error)) throw error;
        tokens.delete(messageId);
        options.onTokenDropped?.(messageId, error);
      }
    }
    return withBot();
  }

  return {
    useToken(messageId, token, expiresAt) {
      for (const [id, entry] of tokens) if (entry.expiresAt <= now()) tokens.delete(id);
      tokens.set(messageId, { token, expiresAt });
    },
    async edit(target, body) {
      await viaTokenOr(
        target.messageId,
        (token) => options.rest.patch(Routes.webhookMessage(options.applicationId, token, '@original'), { body, auth: false }),
        () => options.rest.patch(Routes.channelMessage(target.channelId, target.messageId), { body }),
      );
    },
    async post(target, body, files = []) {
      const payload = withFiles(body, files);
      const message = posted.parse(
        await viaTokenOr(
          target.messageId,
          (token) =>
            options.rest.post(Routes.webhook(options.applicationId, token), {
              ...payload,
              auth: false,
              query: makeURLSearchParams({ wait: true }),
            }),
          () => options.rest.post(Routes.channelMessages(target.channelId), payload),
        ),
      );
      return message.id;
    },
  };
}
