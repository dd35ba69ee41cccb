/**
 * Core view models → Discord message bodies (raw API JSON, so the same body goes through an
 * interaction callback, an interaction webhook or the bot-token channel route). Everything that came
 * from a user or a provider is escaped here: markdown, links and mentions — allowed_mentions already
 * stops the ping, but an echoed `@everyone` should not even look like one — and every body carries
 * SuppressEmbeds, so a URL that is shown at all never unfurls into a preview.
 */
import { ActionRowBuilder, ButtonBuilder, ButtonStyle, MessageFlags, escapeMarkdown, type APIActionRowComponent, type APIButtonComponent } from 'discord.js';
import { encodeAction } from '../../core/actions.js';
import { oneLine, shorten, truncateUnits } from '../../core/text.js';
import { promptHeading, sheetView, STATUS_MARK, type GallerySummary, type ProgressView } from '../../core/views.js';
import type { ImageRecord, Job } from '../../core/types.js';
import { deliveryLines, failedBatchLines, failureLines, GALLERY_FAILED, type GalleryState, type PageLayout } from '../delivery/index.js';
import type { DeliveryReport } from '../../core/ports.js';

/** Discord's content limit. */
export const CONTENT_MAX = 2000;
/** Attachments per message. */
export const IMAGES_PER_MESSAGE = 10;
/** Sent with every message, so nothing we echo can ping anyone. */
export const NO_MENTIONS = { parse: [] as never[] };

export interface MessageBody {
  content: string;
  components: APIActionRowComponent<APIButtonComponent>[];
  allowed_mentions: typeof NO_MENTIONS;
  flags: number;
}

/** Sent with every message: echoed text may hold a URL, and no preview of it may appear. */
export const NO_EMBEDS = MessageFlags.SuppressEmbeds;

/**
 * Makes user or provider text render as plain text:
 * - `scheme://` gets a zero-width space after its colon, so neither a bare URL nor `<url>` is
 *   autolinked (done first, so escapeMarkdown no longer spares the `_` and `*` inside a URL);
 * - markdown is escaped, line-start headings, subtext and lists included;
 * - `[` and `]` are escaped: `[Claim Nitro](https://…)` cannot become a masked link;
 * - `@everyone` / `@here` and every `<…>` construct (mentions, channels, emoji, timestamps,
 *   command links) get a zero-width space, so they show as typed.
 */
export function safe(text: string): string {
  const unlinked = text.replace(/:(?=\/\/)/g, ':\u200b');
  return escapeMarkdown(unlinked, { heading: true, bulletedList: true, numberedList: true })
    .replace(/^(\s*)-#/gm, '$1\\-#')
    .replace(/[[\]]/g, '\\$&')
    .replace(/@(everyone|here)/gi, '@\u200b$1')
    .replace(/<(?=[@#:/a-z])/gi, '<\u200b');
}

/**
 * A command's answer as Discord shows it: our own text, where `code spans` are meant as code and
 * everything else — which may echo what the user typed — is made plain text by safe().
 */
export function safeText(text: string): string {
  return text
    .split(/(`[^`\n]*`)/)
    .map((part, i) => (i % 2 === 1 ? part : safe(part)))
    .join('');
}

/** Characters of a progress message the delivery links may take (of Discord's 2000). */
const DELIVERY_BUDGET = 900;

/**
 * The delivery location (`s3://bucket/prefix/job/`) is the operator's config, not user text: its
 * markdown is escaped, but not its `://` — safe()'s zero-width space would ride along when it is
 * copied into a terminal, and Discord does not autolink `s3://`.
 */
const location = (text: string) => escapeMarkdown(text);

/**
 * Keeps content under Discord's limit whatever a provider put into an error message (escaping can
 * double its length), cutting the body but never the footer that names the job.
 */
function fit(lines: string[], footer: string): string {
  const text = lines.join('\n');
  const room = CONTENT_MAX - footer.length - 1;
  return `${truncateUnits(text, room)}\n${footer}`;
}

/**
 * The progress message: title, prompt, bar, the view's lines, failures while it runs, the summary
 * once finished (and a line if its gallery could not be posted), Cancel while it runs.
 */
export function progressBody(view: ProgressView, summary?: GallerySummary, gallery: GalleryState = 'none', delivery?: DeliveryReport): MessageBody {
  const lines = [
    // A failed job's title carries its error, which is provider text.
    `**${safe(oneLine(view.title))}**`,
    `> ${safe(view.prompt)}`,
    `\`${view.bar}\` ${view.percent}%`,
    ...view.lines.map(safe),
    ...failureLines(view, safe).map((line) => `⚠️ ${line}`),
    // Counts by review status, then every batch that did not deliver, with its reason.
    ...(view.finished && summary
      ? [
          summary.text,
          ...(summary.costs ? [`Drafts: ${summary.costs}`] : []),
          // before the failed batches: a message too long loses those lines, never half a link
          ...(delivery ? deliveryLines(delivery, (url, label) => `[${label}](${url})`, DELIVERY_BUDGET, location) : []),
          ...failedBatchLines(summary, safe),
        ]
      : []),
    ...(gallery === 'failed' ? [`⚠️ ${GALLERY_FAILED}`] : []),
  ];
  const retryable = view.finished ? (summary?.retryable ?? 0) : 0;
  const upscalable = view.finished ? (summary?.upscalable ?? 0) : 0;
  const after = [
    ...(retryable > 0
      ? [new ButtonBuilder().setCustomId(encodeAction({ kind: 'retry', jobId: view.jobId })).setLabel(`Retry ${retryable} failed`).setStyle(ButtonStyle.Primary)]
      : []),
    ...(upscalable > 0
      ? [new ButtonBuilder().setCustomId(encodeAction({ kind: 'upscale', jobId: view.jobId })).setLabel(`Upscale ${upscalable} approved`).setStyle(ButtonStyle.Success)]
      : []),
  ];
  const components = view.cancellable
    ? [
        new ActionRowBuilder<ButtonBuilder>()
          .addComponents(
            new ButtonBuilder().setCustomId(encodeAction({ kind: 'cancel', jobId: view.jobId })).setLabel('Cancel').setStyle(ButtonStyle.Danger),
          )
          .toJSON(),
      ]
    : after.length > 0
      ? [new ActionRowBuilder<ButtonBuilder>().addComponents(...after).toJSON()]
      : [];
  return { content: fit(lines, `-# job ${view.jobId}`), components, allowed_mentions: NO_MENTIONS, flags: NO_EMBEDS };
}

/** Upload name of an image: its file name, `SPOILER_`-prefixed when the provider flagged it. */
export function uploadName(image: Pick<ImageRecord, 'file' | 'nsfw'>): string {
  const base = image.file.split(/[\\/]/).pop() ?? image.file;
  return image.nsfw ? `SPOILER_${base}` : base;
}

function reviewButton(jobId: string, image: ImageRecord, status: 'approved' | 'rejected'): ButtonBuilder {
  const decided = image.review.status;
  // The chosen answer keeps its colour, the other turns grey; both stay clickable to change one's mind.
  const style =
    decided === 'pending' || decided === status ? (status === 'approved' ? ButtonStyle.Success : ButtonStyle.Danger) : ButtonStyle.Secondary;
  return new ButtonBuilder()
    .setCustomId(encodeAction({ kind: 'review', jobId, image: image.index, status }))
    .setLabel(`${STATUS_MARK[status]} ${image.index}`)
    .setStyle(style);
}

/** A rejected image's second button: Reroll (a new seed into its slot), in place of the Reject already chosen. */
function rerollButton(jobId: string, image: ImageRecord): ButtonBuilder {
  return new ButtonBuilder()
    .setCustomId(encodeAction({ kind: 'reroll', jobId, image: image.index }))
    .setLabel(`🎲 Reroll ${image.index}`)
    .setStyle(ButtonStyle.Primary);
}

/**
 * A gallery page: header, job summary, one status mark per image, and Approve / Reject per image (a
 * rejected one: Approve / Reroll) — two images per action row, so 10 images fill the 5 rows Discord allows.
 */
export function galleryBody(
  job: Pick<Job, 'id' | 'request' | 'images'>,
  layout: PageLayout,
  summary: GallerySummary,
  notUploaded: ReadonlySet<number> = new Set(),
): MessageBody {
  const images = layout.images
    .map((index) => job.images.find((image) => image.index === index))
    .filter((image): image is ImageRecord => image !== undefined);
  const marks = images.map((image) => `\`#${image.index}\` ${STATUS_MARK[image.review.status]}${image.nsfw ? ' 🔞' : ''}`);
  const heading = promptHeading(job.request, images[0]?.prompt);
  const lines = [
    `**Gallery${layout.pages > 1 ? ` ${layout.page}/${layout.pages}` : ''}** · ${safe(heading ?? shorten(job.request.prompt, 100))}`,
    summary.text,
    marks.join('  '),
  ];
  if (notUploaded.size > 0) {
    const list = [...notUploaded].map((n) => `#${n}`).join(', ');
    lines.push(`${list}: too large to upload here; the file is in the job's output folder.`);
  }
  const rows: APIActionRowComponent<APIButtonComponent>[] = [];
  for (let i = 0; i < images.length; i += 2) {
    const row = new ActionRowBuilder<ButtonBuilder>();
    for (const image of images.slice(i, i + 2)) {
      const second = image.review.status === 'rejected' ? rerollButton(job.id, image) : reviewButton(job.id, image, 'rejected');
      row.addComponents(reviewButton(job.id, image, 'approved'), second);
    }
    rows.push(row.toJSON());
  }
  return { content: fit(lines, `-# job ${job.id}`), components: rows, allowed_mentions: NO_MENTIONS, flags: NO_EMBEDS };
}

/** Upload name of contact sheet `page`: `sheet-2.jpg`, `SPOILER_`-prefixed when any of its images was flagged. */
export function sheetUploadName(job: Pick<Job, 'images'>, layout: PageLayout): string {
  const flagged = job.images.some((image) => image.nsfw && layout.images.includes(image.index));
  return `${flagged ? 'SPOILER_' : ''}sheet-${layout.page}.jpg`;
}

/**
 * A contact sheet's message (its image is the attachment, posted once and kept by every edit): the
 * sheet's title and prompt, its counts, which images are reviewed, and one row of quick actions —
 * Approve / Reject all pending (this sheet's pending images; greyed out once none is), Review by
 * number, and Review in browser where the review page is served (`browser`).
 */
export function sheetBody(job: Pick<Job, 'id' | 'request' | 'images'>, layout: PageLayout, browser: boolean): MessageBody {
  const view = sheetView(job, layout.images, layout.page, layout.pages);
  const lines = [
    `**${view.title}** · ${safe(view.heading ?? shorten(job.request.prompt, 100))}`,
    view.counts,
    ...(view.marks ? [safe(view.marks)] : []),
  ];
  const none = view.pending.length === 0;
  const row = new ActionRowBuilder<ButtonBuilder>().addComponents(
    new ButtonBuilder()
      .setCustomId(encodeAction({ kind: 'bulk', jobId: job.id, status: 'approved', sheet: layout.page }))
      .setLabel(`${STATUS_MARK.approved} Approve all pending`)
      .setStyle(ButtonStyle.Success)
      .setDisabled(none),
    new ButtonBuilder()
      .setCustomId(encodeAction({ kind: 'bulk', jobId: job.id, status: 'rejected', sheet: layout.page }))
      .setLabel(`${STATUS_MARK.rejected} Reject all pending`)
      .setStyle(ButtonStyle.Danger)
      .setDisabled(none),
    new ButtonBuilder().setCustomId(encodeAction({ kind: 'numbers', jobId: job.id })).setLabel('Review by number').setStyle(ButtonStyle.Primary),
    ...(browser
      ? [new ButtonBuilder().setCustomId(encodeAction({ kind: 'browser', jobId: job.id })).setLabel('Review in browser').setStyle(ButtonStyle.Secondary)]
      : []),
  );
  return { content: fit(lines, `-# job ${job.id}`), components: [row.toJSON()], allowed_mentions: NO_MENTIONS, flags: NO_EMBEDS };
}
