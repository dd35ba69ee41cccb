/**
 * Posting a finished job's gallery into the thread of its progress message.
 *
 * Hosting: the images are uploaded to Slack (filesUploadV2: getUploadURLExternal → POST bytes →
 * completeUploadExternal), so they stay visible for good — no provider URL that expires in an hour,
 * no dependency on this bot being reachable from the internet (PUBLIC_URL), and Slack's own access
 * rules apply to them. Image blocks pointing at just-uploaded files (`slack_file`) are flaky, so each
 * page is two thread messages: the upload (up to PAGE_SIZE pictures, titled "#3 · seed …") and right
 * under it a message of review buttons for the same numbers, which is the one re-rendered on a click.
 *
 * Every step is recorded in job.chat.slack.pages as it succeeds, so a restart continues where it
 * stopped instead of posting a page twice.
 *
 * Memory: at most one page (PAGE_SIZE ≤ 10 images, each capped at MAX_IMAGE_BYTES when downloaded) is
 * held at a time; pages are uploaded one after another and their buffers dropped when the page is
 * done. Streams would not lower that: filesUploadV2 (web-api 8.2, file-upload.js getFileDataAsStream)
 * reads a stream whole into one Buffer before sending anything — it must declare each file's length
 * to files.getUploadURLExternal — and it attaches no 'error' listener, so a stream that fails to read
 * would never settle the upload and would throw as an uncaught 'error' event.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { webApi } from '@slack/bolt';
import type { Engine } from '../../core/engine.js';
import type { Job } from '../../core/types.js';
import { galleryPage } from '../../core/views.js';
import { obeyRateLimits } from './errors.js';
import { factsOf, PLATFORM, type PageFacts } from './facts.js';
import { galleryMessage, NO_UNFURL, PAGE_SIZE, uploadName } from './render.js';

export interface GalleryContext {
  client: webApi.WebClient;
  engine: Engine;
  jobDir: (jobId: string) => string;
  signal: AbortSignal;
}

export class StoppedError extends Error {
  override name = 'StoppedError';
}

/** Posts every page not posted yet. Throws on the first failure; what was posted stays recorded. */
export async function postGallery(ctx: GalleryContext, jobId: string, channel: string, threadTs: string): Promise<void> {
  let job = await load(ctx, jobId);
  const pages = Math.ceil(job.images.length / PAGE_SIZE);
  const records: PageFacts[] = [...(factsOf(job)?.pages ?? [])];
  const save = async (page: number, change: PageFacts) => {
    records[page - 1] = { ...records[page - 1], ...change };
    // Holes (pages not reached yet) are stored as empty records, never as null.
    await ctx.engine.annotate(jobId, PLATFORM, { pages: Array.from(records, (r) => r ?? {}) });
  };
  for (let page = 1; page <= pages; page += 1) {
    const record = records[page - 1] ?? {};
    if (!record.uploaded) {
      await uploadPage(ctx, job, page, channel, threadTs);
      await save(page, { uploaded: true });
    }
    if (!record.ts) {
      // Fresh: a review may have happened on an earlier page while this one was uploading.
      job = await load(ctx, jobId);
      const message = galleryMessage(job, page);
      const posted = await obeyRateLimits(
        () => ctx.client.chat.postMessage({ channel, thread_ts: threadTs, text: message.text, blocks: message.blocks, ...NO_UNFURL }),
        ctx.signal,
      );
      if (!posted.ts) throw new Error('chat.postMessage answered without a ts');
      await save(page, { ts: posted.ts });
    }
  }
}

async function load(ctx: GalleryContext, jobId: string): Promise<Job> {
  if (ctx.signal.aborted) throw new StoppedError('the Slack adapter is stopping');
  const job = await ctx.engine.get(jobId);
  if (!job) throw new Error(`job ${jobId} is gone from the store`);
  return job;
}

async function uploadPage(ctx: GalleryContext, job: Job, page: number, channel: string, threadTs: string): Promise<void> {
  const { images } = galleryPage(job, page, PAGE_SIZE);
  const uploads = await Promise.all(
    images.map(async (image) => {
      const name = uploadName(job, image);
      const file = await readFile(path.join(ctx.jobDir(job.id), image.file));
      return { file, filename: name.filename, title: name.title, alt_text: name.alt };
    }),
  );
  if (ctx.signal.aborted) throw new StoppedError('the Slack adapter is stopping');
  await obeyRateLimits(() => ctx.client.filesUploadV2({ channel_id: channel, thread_ts: threadTs, file_uploads: uploads }), ctx.signal);
}
