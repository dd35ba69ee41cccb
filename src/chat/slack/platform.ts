/**
 * Slack's side of delivery (../delivery). Progress is a channel message (chat.postMessage) edited with
 * chat.update under the bot token — never through response_url, which allows 5 uses in 30 minutes.
 * Slack's answers become delivery's: the client is built with `rejectRateLimitedCalls`, so a 429
 * throws at once; on an edit it is a RetryAfter (only that message waits), a one-off post waits it out
 * here (obeyRateLimits). A channel the bot may not write in is NoAccess: the gallery waits until the
 * bot is invited.
 *
 * The gallery goes into the thread of the progress message. Hosting: the images are uploaded to Slack
 * (filesUploadV2: getUploadURLExternal → POST bytes → completeUploadExternal), so they stay visible for
 * good — no provider URL that expires in an hour, no dependency on this bot being reachable from the
 * internet (PUBLIC_URL), and Slack's own access rules apply to them. Image blocks pointing at
 * just-uploaded files (`slack_file`) are flaky, so each page is two thread messages: the upload (up to
 * PAGE_SIZE pictures, titled "#3 · seed …") and right under it a message of review buttons for the same
 * numbers, the one re-rendered on a click. Both steps are recorded, so a restart redoes neither.
 * A job of more than GALLERY_INLINE_MAX images is shown as contact sheets instead (sheets.ts): the same
 * two messages per page, the upload being one JPEG of up to 25 numbered tiles.
 *
 * Memory: at most one page (PAGE_SIZE ≤ 10 images, each capped at MAX_IMAGE_BYTES when downloaded) is
 * held at a time; pages are uploaded one after another and their buffers dropped when the page is
 * done. Streams would not lower that: filesUploadV2 (web-api 8.2, file-upload.js getFileDataAsStream)
 * reads a stream whole into one Buffer before sending anything — it must declare each file's length
 * to files.getUploadURLExternal — and it attaches no 'error' listener, so a stream that fails to read
 * would never settle the upload and would throw as an uncaught 'error' event.
 */
import type { webApi } from '@slack/bolt';
import { z } from 'zod';
import type { ContactSheets, ImageReader } from '../../core/ports.js';
import { galleryPage, shownFile, usesContactSheets } from '../../core/views.js';
import type { Job } from '../../core/types.js';
import { MessageGone, NoAccess, RetryAfter, type DeliveryPlatform, type PageLayout } from '../delivery/index.js';
import { describe, isNoAccess, obeyRateLimits, platformError, retryAfterMs } from './errors.js';
import { galleryMessage, NO_UNFURL, PAGE_SIZE, progressMessage, uploadName, type Rendered } from './render.js';
import { pageLayouts, sheetMessage, sheetUpload } from './sheets.js';

/** What is stored in `job.chat.slack` (the layout: ../delivery/facts.ts): the progress message, whose thread holds the gallery… */
export const slackTarget = z.object({ channel: z.string().min(1), ts: z.string().min(1) });
export type SlackTarget = z.infer<typeof slackTarget>;
/** …and per gallery page, its images uploaded into the thread, then its message of review buttons. */
export const slackPage = z.object({ uploaded: z.literal(true).optional(), ts: z.string().min(1).optional() });
export type PageFacts = z.infer<typeof slackPage>;

export interface SlackPlatformOptions {
  client: webApi.WebClient;
  /** where the gallery's images are read from (the output folder or the bucket) */
  images: ImageReader;
  /** stops waiting out rate limits when the adapter stops */
  signal: AbortSignal;
  /** renders the contact sheets of big jobs */
  sheets: ContactSheets;
  /** GALLERY_INLINE_MAX: a job of more images is shown as contact sheets */
  inlineMax: number;
  /** sheets offer "Review in browser" (the review page is configured) */
  browser: boolean;
  /** @default 2000 — chat.update is Tier 3 (about 50 a minute); one edit per message per 2 s stays well inside it */
  editIntervalMs?: number;
}

export function slackPlatform({ client, images, sheets, inlineMax, browser, signal, editIntervalMs }: SlackPlatformOptions): DeliveryPlatform<SlackTarget, PageFacts> {
  /** A post that must land: rate limits waited out, no access said in delivery's terms. */
  const call = async <R>(run: () => Promise<R>): Promise<R> => {
    try {
      return await obeyRateLimits(run, signal);
    } catch (error) {
      throw isNoAccess(error) ? new NoAccess(describe(error)) : error;
    }
  };
  const update = async (channel: string, ts: string, message: Rendered): Promise<void> => {
    try {
      await client.chat.update({ channel, ts, text: message.text, blocks: message.blocks, ...NO_UNFURL });
    } catch (error) {
      const wait = retryAfterMs(error);
      if (wait !== undefined) throw new RetryAfter(wait);
      throw platformError(error) === 'message_not_found' ? new MessageGone(describe(error)) : error;
    }
  };
  const post = async (channel: string, message: Rendered, threadTs?: string): Promise<string> => {
    const posted = await call(() => client.chat.postMessage({ channel, thread_ts: threadTs, text: message.text, blocks: message.blocks, ...NO_UNFURL }));
    if (!posted.ts) throw new Error('chat.postMessage answered without a ts');
    return posted.ts;
  };

  const sheetFile = async (job: Readonly<Job>, layout: PageLayout) => {
    const name = sheetUpload(job, layout);
    const sheet = await sheets.render(job, layout.images);
    return { file: sheet.data, filename: name.filename, title: name.title, alt_text: name.alt };
  };

  return {
    name: 'slack',
    target: slackTarget,
    editIntervalMs: editIntervalMs ?? 2000,
    describeError: describe,
    async postProgress(job, card) {
      const channel = job.requester.channelId;
      if (!channel) throw new Error(`job ${job.id} names no channel to post its progress in`);
      return { channel, ts: await post(channel, progressMessage(job, card)) };
    },
    editProgress: (target, job, card) => update(target.channel, target.ts, progressMessage(job, card)),
    gallery: {
      page: slackPage,
      layout: async (job) => pageLayouts(job, inlineMax),
      async post({ job, target, layout, earlier, save }) {
        if (earlier?.ts) return earlier;
        const sheet = usesContactSheets(job, inlineMax);
        if (!earlier?.uploaded) {
          // One sheet (a JPEG of up to 25 tiles), or up to PAGE_SIZE images, read when this page goes out.
          const uploads = sheet
            ? [await sheetFile(job, layout)]
            : await Promise.all(
                galleryPage(job, layout.page, PAGE_SIZE).images.map(async (image) => {
                  const name = uploadName(job, image);
                  const file = await images.read(job.id, shownFile(image));
                  return { file, filename: name.filename, title: name.title, alt_text: name.alt };
                }),
              );
          await call(() => client.filesUploadV2({ channel_id: target.channel, thread_ts: target.ts, file_uploads: uploads }));
          await save({ uploaded: true });
        }
        const message = sheet ? sheetMessage(job, layout, { browser }) : galleryMessage(job, layout.page);
        return { uploaded: true, ts: await post(target.channel, message, target.ts) };
      },
      // Per-image pages and sheets alike: the message under the upload shows the page's reviews as they are now.
      edit: async (target, page, job, layout) => {
        if (!page.ts) return;
        await update(target.channel, page.ts, usesContactSheets(job, inlineMax) ? sheetMessage(job, layout, { browser }) : galleryMessage(job, layout.page));
      },
    },
  };
}
