/**
 * Core view models → Block Kit. Everything the user typed is escaped for mrkdwn (&, <, >) so a prompt
 * cannot mention @channel or forge a link, and every message goes out with unfurling off (NO_UNFURL),
 * so a URL in a prompt never grows a preview. Error texts from providers and image hosts are shown as
 * one line of at most ERROR_LINE_MAX characters. Limits kept here: 50 blocks per message, ≤ 25
 * elements per actions block, action_id ≤ 255 chars (encodeAction ids are < 30), section text ≤ 3000.
 */
import type { types } from '@slack/bolt';
import { encodeAction } from '../../core/actions.js';
import { promptOf } from '../../core/planner.js';
import { oneLine, shorten, truncate } from '../../core/text.js';
import { galleryPage, STATUS_MARK } from '../../core/views.js';
import type { ImageRecord, Job, ReviewStatus } from '../../core/types.js';
import { deliveryLines, failedBatchLines, failureLines, GALLERY_FAILED, type GalleryState, type ProgressCard } from '../delivery/index.js';

type Block = types.KnownBlock;
type Button = types.Button;

export interface Rendered {
  /** the notification / fallback text */
  text: string;
  blocks: Block[];
}

/**
 * Images per gallery page: one upload message (Slack shows up to 10 files in one message) plus one
 * message of buttons, 1 + 2 × 10 = 21 blocks, well under the 50-block limit.
 */
export const PAGE_SIZE = 10;

/**
 * Spread into every chat.postMessage, chat.update, chat.postEphemeral, ack and response_url payload.
 * Slack documents the flags for postMessage (and response_url payloads, which take its arguments);
 * elsewhere they are ignored, and sending them everywhere keeps one rule with no exception to forget.
 */
export const NO_UNFURL = { unfurl_links: false, unfurl_media: false } as const;

/** The longest provider or image-host error text a user is shown. */
export function escapeMrkdwn(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Section text is limited to 3000 characters. */
const clip = (text: string) => truncate(text, 2900);

function section(text: string): Block {
  return { type: 'section', text: { type: 'mrkdwn', text: clip(text) } };
}

function context(text: string): Block {
  return { type: 'context', elements: [{ type: 'mrkdwn', text: clip(text) }] };
}

/** Where the gallery stands, shown under a finished job's progress. */
const GALLERY_NOTE: Record<GalleryState, string> = {
  none: '',
  posting: ' · posting them in the thread…',
  posted: ' · review them in the thread',
  blocked: ' · I can’t post them here yet: invite me with `/invite @Art Factory`',
  failed: ` · ${GALLERY_FAILED}`,
};

/**
 * The progress message: the same facts as every platform shows (prompt, bar, images done/total,
 * "Batch i/n", queue position, failures, ETA, provider and model) and a Cancel button while it runs;
 * when finished, the review summary in its place, and "Retry N failed" when images are missing.
 */
export function progressMessage(job: Readonly<Job>, card: ProgressCard): Rendered {
  const { view, summary } = card;
  const prompt = escapeMrkdwn(view.prompt);
  const lines = view.lines.map(escapeMrkdwn);
  // A failed job's title carries the provider's error ("Failed: all 4 images failed: …").
  const title = oneLine(view.title);
  const blocks: Block[] = [
    section(`*${escapeMrkdwn(title)}*\n>${prompt}`),
    section(`\`${view.bar}\` ${view.percent}%\n${lines.join('\n')}`),
  ];
  // The latest failures matter most while it runs; once finished, the summary lists every one.
  const failures = failureLines(view, escapeMrkdwn);
  if (failures.length > 0) blocks.push(context(`:warning: ${failures.map((line) => `• ${line}`).join('\n')}`));
  if (view.finished && summary) {
    const note = job.images.length === 0 ? '' : GALLERY_NOTE[card.gallery];
    const batches = failedBatchLines(summary, escapeMrkdwn).map((line) => `:warning: ${line}`);
    const costs = summary.costs ? [`Drafts: ${escapeMrkdwn(summary.costs)}`] : [];
    blocks.push(section([`${escapeMrkdwn(summary.text)}${note}`, ...costs, ...batches].join('\n')));
    // A section's text holds 3000 characters: the links get a section of their own.
    if (card.delivery) blocks.push(section(deliveryLines(card.delivery, (url, label) => `<${url}|${escapeMrkdwn(label)}>`, 2800, escapeMrkdwn).join('\n')));
  }
  blocks.push(context(`Job \`${job.id}\` · requested by <@${escapeMrkdwn(job.requester.userId)}>`));
  if (view.cancellable) {
    const value = encodeAction({ kind: 'cancel', jobId: job.id });
    blocks.push({
      type: 'actions',
      block_id: 'progress',
      elements: [
        {
          type: 'button',
          action_id: value,
          value,
          style: 'danger',
          text: { type: 'plain_text', text: 'Cancel' },
          confirm: {
            title: { type: 'plain_text', text: 'Cancel this job?' },
            text: { type: 'plain_text', text: 'Images already made are kept; the rest are not generated.' },
            confirm: { type: 'plain_text', text: 'Cancel job' },
            deny: { type: 'plain_text', text: 'Keep going' },
          },
        },
      ],
    });
  }
  const retryable = view.finished ? (summary?.retryable ?? 0) : 0;
  const upscalable = view.finished ? (summary?.upscalable ?? 0) : 0;
  const after: Button[] = [];
  if (retryable > 0) {
    const value = encodeAction({ kind: 'retry', jobId: job.id });
    after.push({ type: 'button', action_id: value, value, style: 'primary', text: { type: 'plain_text', text: `Retry ${retryable} failed` } });
  }
  if (upscalable > 0) {
    const value = encodeAction({ kind: 'upscale', jobId: job.id });
    after.push({ type: 'button', action_id: value, value, style: 'primary', text: { type: 'plain_text', text: `Upscale ${upscalable} approved` } });
  }
  if (after.length > 0) blocks.push({ type: 'actions', block_id: 'rerun', elements: after });
  const text = `${title}: “${shorten(view.prompt, 80)}” · ${view.lines.join(' · ')}`;
  return { text: escapeMrkdwn(text), blocks };
}

const STATUS_WORD: Record<ReviewStatus, string> = { approved: 'approved', rejected: 'rejected', pending: 'pending review' };

function reviewButton(job: Readonly<Job>, image: ImageRecord, status: ReviewStatus, label: string): Button {
  const value = encodeAction({ kind: 'review', jobId: job.id, image: image.index, status });
  const button: Button = { type: 'button', action_id: value, value, text: { type: 'plain_text', text: label } };
  // The state is told by the colour too: the button of the current verdict is the filled one.
  if (image.review.status === status && status === 'approved') button.style = 'primary';
  if (image.review.status === status && status === 'rejected') button.style = 'danger';
  return button;
}

/** One gallery page: per image its state and one-click Approve / Reject (and Undo once reviewed; Reroll once rejected). */
export function galleryMessage(job: Readonly<Job>, page: number): Rendered {
  const current = galleryPage(job, page, PAGE_SIZE);
  const first = current.images[0]?.index ?? 0;
  const last = current.images.at(-1)?.index ?? 0;
  // Numbers, not positions: a failed batch leaves a gap, and the numbers are what the files are called.
  const blocks: Block[] = [
    section(`*Gallery* · page ${current.page}/${current.pages} · images #${first}–#${last} of ${job.images.length} · job \`${job.id}\``),
    ...(current.heading ? [section(`*${escapeMrkdwn(current.heading)}*`)] : []),
  ];
  for (const image of current.images) {
    const by = image.review.by ? ` by ${escapeMrkdwn(image.review.by)}` : '';
    const facts = [`${image.width}×${image.height}`, ...(image.seed !== undefined ? [`seed ${image.seed}`] : []), ...(image.nsfw ? ['flagged NSFW'] : [])];
    blocks.push({
      type: 'section',
      block_id: `image:${image.index}`,
      text: { type: 'mrkdwn', text: `${STATUS_MARK[image.review.status]} *#${image.index}* ${STATUS_WORD[image.review.status]}${by} · ${facts.join(' · ')}` },
    });
    const buttons = [reviewButton(job, image, 'approved', 'Approve'), reviewButton(job, image, 'rejected', 'Reject')];
    if (image.review.status !== 'pending') buttons.push(reviewButton(job, image, 'pending', 'Undo'));
    if (image.review.status === 'rejected') {
      // a new seed into this slot; the rejected file is kept
      const value = encodeAction({ kind: 'reroll', jobId: job.id, image: image.index });
      buttons.push({ type: 'button', action_id: value, value, text: { type: 'plain_text', text: 'Reroll' } });
    }
    blocks.push({ type: 'actions', block_id: `review:${image.index}`, elements: buttons });
  }
  const marks = current.images.map((image) => `${STATUS_MARK[image.review.status]}${image.index}`).join(' ');
  // The notification and screen readers get the prompt a prompt list's page is about too.
  const about = current.heading ? ` · ${escapeMrkdwn(current.heading)}` : '';
  return { text: `Gallery page ${current.page}/${current.pages}${about}: ${marks}`, blocks };
}

/** The file name and title of an uploaded image: the number the gallery's buttons refer to. */
export function uploadName(job: Readonly<Job>, image: ImageRecord): { filename: string; title: string; alt: string } {
  const extension = (image.final?.file ?? image.file).split('.').pop() ?? 'png';
  const number = String(image.index).padStart(3, '0');
  return {
    filename: `${job.id}-${number}.${extension}`,
    title: `#${image.index}${image.seed !== undefined ? ` · seed ${image.seed}` : ''}`,
    alt: shorten(promptOf(job.request, image), 900),
  };
}

/** The answer when the bot may not write where /imagine was typed. */
export function inviteHint(jobId: string): string {
  return (
    `I can't post in this conversation yet, so your images have nowhere to go. Invite me with ` +
    `\`/invite @Art Factory\` (or add the app from the channel's settings). Job \`${jobId}\` is running ` +
    `anyway; its progress and gallery will appear here as soon as I'm in.`
  );
}

/** Slack shows help best as a code block; the text is mrkdwn, so it is escaped like any other. */
export function helpText(help: string): string {
  return `\`\`\`${escapeMrkdwn(help)}\`\`\``;
}
