/**
 * A command's attachment option (a `prompts` file), fetched before the command validates it. The URL
 * comes from the interaction and is fetched through the same download layer as provider images: only
 * Discord's CDN (https, public addresses) and the origin of DISCORD_API_URL (what a proxy or a test
 * fake serves), under the option's byte cap and a short time limit — the command must still be
 * acknowledged within Discord's 3 s.
 */
import type { Attachment } from 'discord.js';
import { fileTooLarge, type AttachedFile } from '../../core/command.js';
import { UserError } from '../../core/errors.js';
import type { FileFetcher } from '../../core/ports.js';
import { ProviderError } from '../../core/provider.js';

/** Where Discord serves attachments from. */
export const DISCORD_CDN_HOSTS: readonly string[] = ['cdn.discordapp.com', 'media.discordapp.net'];
/** Leaves a second of Discord's 3 s for the command itself and its deferral. */
const FETCH_TIMEOUT_MS = 2000;
/** A file with no cap of its own is a text file of a command: small. */
const DEFAULT_MAX_BYTES = 64 * 1024;

/** The attachment as it came with the interaction (discord.js's Attachment, as far as it is used). */
export type AttachmentInfo = Pick<Attachment, 'url' | 'name' | 'size' | 'contentType'>;

/** Fetches option `option`'s file; refusals (too large, not fetchable) are UserErrors, in one line. */
export type AttachmentFetcher = (option: string, attachment: AttachmentInfo, maxBytes?: number) => Promise<AttachedFile>;

/** `fetchFile`: the download layer's, from the composition root (app.fetchFile). */
export function attachmentFetcher(apiUrl: string, fetchFile: FileFetcher, options: { timeoutMs?: number } = {}): AttachmentFetcher {
  const origins = [new URL(apiUrl).origin];
  return async (option, attachment, maxBytes = DEFAULT_MAX_BYTES) => {
    // Discord reports the size: a file too large is refused before a byte is fetched.
    if (attachment.size > maxBytes) throw fileTooLarge(option, maxBytes, attachment.size);
    const unfetchable = new UserError('invalid_option', `Could not fetch the \`${option}\` file from Discord; attach it again.`);
    let data: Buffer;
    try {
      data = await fetchFile(attachment.url, { hosts: DISCORD_CDN_HOSTS, origins, maxBytes, timeoutMs: options.timeoutMs ?? FETCH_TIMEOUT_MS });
    } catch (error) {
      if (!(error instanceof ProviderError)) throw error;
      // A refusal once the host was allowed is the size (or a redirect off Discord's CDN).
      if (error.kind === 'refused') throw fileTooLarge(option, maxBytes);
      if (error.kind === 'timeout') throw new UserError('invalid_option', `Fetching the \`${option}\` file from Discord took too long; try again.`);
      throw unfetchable;
    }
    return {
      name: attachment.name,
      ...(attachment.contentType ? { contentType: attachment.contentType } : {}),
      data,
    };
  };
}
