/**
 * Discord's side of delivery (../delivery): the progress message is the command's deferred reply (or,
 * for a job whose reply is lost, a channel message), edited through the interaction webhook while its
 * token lives and with the bot token after. A 429 needs nothing here: @discordjs/rest waits it out and
 * retries, and delivery sends nothing more to that message meanwhile. The gallery is one message per
 * page (gallery.ts), uploaded from image storage (the output folder or the bucket, whichever process
 * downloaded them) — provider URLs expire, the files do not; an image above the per-file limit is
 * listed instead of uploaded (it still gets its review buttons).
 */
import { DiscordAPIError } from 'discord.js';
import type { ImageReader } from '../../core/ports.js';
import { gallerySummary, shownFile } from '../../core/views.js';
import { MessageGone, type DeliveryPlatform, type ProgressCard } from '../delivery/index.js';
import { DEFAULT_FILE_LIMIT, planPages } from './gallery.js';
import { galleryBody, progressBody, uploadName, type MessageBody } from './render.js';
import { describeError, discordPage, discordTarget, type GalleryEntry, type MessageTarget, type Transport, type Upload } from './transport.js';

/**
 * Unknown Message / Unknown Channel (deleted), Missing Access / Missing Permissions (the bot token
 * may not edit there, and no other route is left): editing again would only fail again.
 */
const GONE_CODES: ReadonlySet<number | string> = new Set([10008, 10003, 50001, 50013]);

const bodyOf = (card: ProgressCard): MessageBody => progressBody(card.view, card.summary, card.gallery, card.delivery);

export function discordPlatform(deps: {
  transport: Transport;
  /** where the gallery's images are read from */
  images: ImageReader;
  /** @default 1500 */
  editIntervalMs?: number;
}): DeliveryPlatform<MessageTarget, GalleryEntry> {
  const { transport, images } = deps;
  return {
    name: 'discord',
    target: discordTarget,
    editIntervalMs: deps.editIntervalMs ?? 1500,
    describeError,
    async postProgress(job, card) {
      const channelId = job.requester.channelId;
      if (!channelId) throw new Error(`job ${job.id} names no channel to post its progress in`);
      const guildId = job.requester.tenant.startsWith('dm:') ? undefined : job.requester.tenant;
      return { channelId, messageId: await transport.post({ channelId }, bodyOf(card)), ...(guildId ? { guildId } : {}) };
    },
    async editProgress(target, _job, card) {
      try {
        await transport.edit(target, bodyOf(card));
      } catch (error) {
        if (error instanceof DiscordAPIError && GONE_CODES.has(error.code)) throw new MessageGone(`message ${target.messageId}: ${error.message}`);
        throw error;
      }
    },
    gallery: {
      page: discordPage,
      // Pages from the files' sizes: the same files give the same pages after a restart.
      async layout(job, target) {
        const sized = await Promise.all(
          job.images.map(async (image) => ({
            index: image.index,
            bytes: await images.size(job.id, shownFile(image)),
            ...(image.prompt !== undefined ? { group: image.prompt } : {}),
          })),
        );
        return planPages(sized, target.attachmentSizeLimit ?? DEFAULT_FILE_LIMIT);
      },
      async post({ job, target, layout, earlier }) {
        if (earlier) return earlier;
        const files: Upload[] = [];
        const skipped: number[] = [];
        for (const image of job.images.filter((i) => layout.images.includes(i.index))) {
          const file = shownFile(image);
          if ((await images.size(job.id, file)) > (target.attachmentSizeLimit ?? DEFAULT_FILE_LIMIT)) skipped.push(image.index);
          else files.push({ name: uploadName({ file, nsfw: image.nsfw }), data: await images.read(job.id, file), contentType: image.final?.contentType ?? image.contentType });
        }
        const messageId = await transport.post(target, galleryBody(job, layout, gallerySummary(job), new Set(skipped)), files);
        return { messageId, images: layout.images, ...(skipped.length > 0 ? { skipped } : {}) };
      },
    },
  };
}
