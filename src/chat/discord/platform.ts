/**
 * Discord's side of delivery (../delivery): the progress message is the command's deferred reply (or,
 * for a job whose reply is lost, a channel message), edited through the interaction webhook while its
 * token lives and with the bot token after. A 429 needs nothing here: @discordjs/rest waits it out and
 * retries, and delivery sends nothing more to that message meanwhile. The gallery is one message per
 * page (gallery.ts), uploaded from image storage (the output folder or the bucket, whichever process
 * downloaded them) — provider URLs expire, the files do not; an image above the per-file limit is
 * listed instead of uploaded (it still gets its review buttons). A job of more than GALLERY_INLINE_MAX
 * images gets contact sheets instead: one message per 25 images, the sheet as its only attachment,
 * re-rendered after every review wherever it was made (button, review page, CLI).
 */
import { DiscordAPIError } from 'discord.js';
import type { ContactSheets, ImageReader } from '../../core/ports.js';
import type { Job } from '../../core/types.js';
import { gallerySummary, shownFile, usesContactSheets } from '../../core/views.js';
import { readFacts } from '../delivery/facts.js';
import { MessageGone, type DeliveryPlatform, type ProgressCard } from '../delivery/index.js';
import { DEFAULT_FILE_LIMIT, planPages, sheetPages } from './gallery.js';
import { galleryBody, progressBody, sheetBody, sheetUploadName, uploadName, type MessageBody } from './render.js';
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
  /** big jobs' contact sheets; unset: every job gets the per-image gallery */
  sheets?: {
    renderer: ContactSheets;
    /** GALLERY_INLINE_MAX: a job of more images gets contact sheets */
    inlineMax: number;
    /** the review page is served (PUBLIC_URL and REVIEW_SECRET): sheets offer "Review in browser" */
    reviewPage: boolean;
  };
  /** @default 1500 */
  editIntervalMs?: number;
}): DeliveryPlatform<MessageTarget, GalleryEntry> {
  const { transport, images, sheets } = deps;
  const asSheets = (job: Pick<Job, 'request'>): boolean => sheets !== undefined && usesContactSheets(job, sheets.inlineMax);
  /** An edit; a message deleted, or one no route may edit, becomes MessageGone (delivery stops editing it). */
  const editOrGone = async (target: MessageTarget, body: MessageBody) => {
    try {
      await transport.edit(target, body);
    } catch (error) {
      if (error instanceof DiscordAPIError && GONE_CODES.has(error.code)) throw new MessageGone(`message ${target.messageId}: ${error.message}`);
      throw error;
    }
  };
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
      await editOrGone(target, bodyOf(card));
    },
    gallery: {
      page: discordPage,
      // Pages from the files' sizes: the same files give the same pages after a restart.
      async layout(job, target) {
        if (asSheets(job)) return sheetPages(job);
        // A delivered gallery's pages are as recorded: a review (which asks for them) reads no file sizes.
        const posted = readFacts(job.chat?.['discord'], discordTarget, discordPage);
        if (posted.delivered && posted.pages.length > 0 && posted.pages.every((page) => page !== undefined)) {
          return posted.pages.map((page, i) => ({ page: i + 1, pages: posted.pages.length, images: page.images }));
        }
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
        if (sheets && asSheets(job)) {
          const sheet = await sheets.renderer.render(job, layout.images);
          const upload = { name: sheetUploadName(job, layout), data: sheet.data, contentType: sheet.contentType };
          const messageId = await transport.post(target, sheetBody(job, layout, sheets.reviewPage), [upload]);
          return { messageId, images: layout.images, sheet: true };
        }
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
      /**
       * A contact sheet after a review: its text and buttons (the image stays; an edit without
       * `attachments` keeps it). A per-image page needs nothing: the click's own update() re-rendered it.
       */
      async edit(target, page, job, layout) {
        if (!page.sheet) return;
        const shown = { page: layout.page, pages: layout.pages, images: page.images };
        // The sheet is a message of its own: the channel route with the bot token (no interaction token is kept for it).
        await editOrGone({ channelId: target.channelId, messageId: page.messageId }, sheetBody(job, shown, sheets?.reviewPage ?? false));
      },
    },
  };
}
