/**
 * Contact sheets on Slack: a job of more than GALLERY_INLINE_MAX images is shown as sheets of up to 25
 * numbered tiles (core/views.ts SHEET_TILES) instead of one upload per image. Each sheet is two thread
 * messages, as a gallery page is: the sheet's JPEG (filesUploadV2) and right under it a message with
 * the sheet's title, counts and marks and its quick actions, the one re-rendered after every review.
 *
 * Everything a person typed (a prompt list's heading) is escaped for mrkdwn, so it cannot mention or
 * link; the rest is numbers and emoji the core wrote.
 */
import type { types } from '@slack/bolt';
import { encodeAction } from '../../core/actions.js';
import { promptOf } from '../../core/planner.js';
import { shorten } from '../../core/text.js';
import { imagePages, SHEET_TILES, sheetView, usesContactSheets } from '../../core/views.js';
import type { Job } from '../../core/types.js';
import type { PageLayout } from '../delivery/index.js';
import { escapeMrkdwn, PAGE_SIZE, type Rendered } from './render.js';

type Block = types.KnownBlock;
type Button = types.Button;

/** The job's pages: sheets of SHEET_TILES for a big job, gallery pages of PAGE_SIZE otherwise; a prompt list's never mix prompts. */
export function pageLayouts(job: Readonly<Job>, inlineMax: number): PageLayout[] {
  return imagePages(job, usesContactSheets(job, inlineMax) ? SHEET_TILES : PAGE_SIZE);
}

/** The numbers on sheet `sheet` (1-based) of a job shown as sheets; undefined when there is no such sheet. */
export function sheetImages(job: Readonly<Job>, inlineMax: number, sheet: number): PageLayout | undefined {
  if (!usesContactSheets(job, inlineMax)) return undefined;
  return pageLayouts(job, inlineMax).find((layout) => layout.page === sheet);
}

/** The uploaded file of a sheet: `sheet-2.jpg`, titled like the sheet, its alt text the prompt. */
export function sheetUpload(job: Readonly<Job>, layout: PageLayout): { filename: string; title: string; alt: string } {
  const view = sheetView(job, layout.images, layout.page, layout.pages);
  const first = job.images.find((image) => image.index === layout.images[0]);
  const prompt = first ? promptOf(job.request, first) : job.request.prompt;
  return { filename: `sheet-${layout.page}.jpg`, title: view.title, alt: shorten(`${view.title}: ${prompt}`, 900) };
}

export interface SheetOptions {
  /** offer "Review in browser" (PUBLIC_URL and REVIEW_SECRET are set) */
  browser: boolean;
}

/**
 * The message under a sheet: title, the prompt's heading (a prompt list), this sheet's counts and
 * marks, and its actions. "Approve / Reject all pending" are left out once nothing on the sheet is
 * pending; each asks for a confirmation, as it reviews up to 25 images at once.
 */
export function sheetMessage(job: Readonly<Job>, layout: PageLayout, options: SheetOptions): Rendered {
  const view = sheetView(job, layout.images, layout.page, layout.pages);
  const title = escapeMrkdwn(view.title);
  const blocks: Block[] = [
    { type: 'section', text: { type: 'mrkdwn', text: `*${title}* · job \`${job.id}\`` } },
    ...(view.heading ? [{ type: 'section', text: { type: 'mrkdwn', text: `*${escapeMrkdwn(view.heading)}*` } } satisfies Block] : []),
    { type: 'section', text: { type: 'mrkdwn', text: [view.counts, view.marks].filter(Boolean).map(escapeMrkdwn).join('\n') } },
  ];
  const buttons: Button[] = [];
  if (view.pending.length > 0) {
    const pending = view.pending.length;
    const approve = encodeAction({ kind: 'bulk', jobId: job.id, status: 'approved', sheet: layout.page });
    const reject = encodeAction({ kind: 'bulk', jobId: job.id, status: 'rejected', sheet: layout.page });
    buttons.push(
      {
        type: 'button',
        action_id: approve,
        value: approve,
        style: 'primary',
        text: { type: 'plain_text', text: 'Approve all pending' },
        confirm: bulkConfirm('Approve', pending),
      },
      {
        type: 'button',
        action_id: reject,
        value: reject,
        style: 'danger',
        text: { type: 'plain_text', text: 'Reject all pending' },
        confirm: bulkConfirm('Reject', pending),
      },
    );
  }
  const numbers = encodeAction({ kind: 'numbers', jobId: job.id });
  buttons.push({ type: 'button', action_id: numbers, value: numbers, text: { type: 'plain_text', text: 'Review by number' } });
  if (options.browser) {
    const browser = encodeAction({ kind: 'browser', jobId: job.id });
    buttons.push({ type: 'button', action_id: browser, value: browser, text: { type: 'plain_text', text: 'Review in browser' } });
  }
  blocks.push({ type: 'actions', block_id: `sheet:${layout.page}`, elements: buttons });
  return { text: escapeMrkdwn(`${view.title}: ${view.counts}`), blocks };
}

function bulkConfirm(verb: 'Approve' | 'Reject', pending: number): types.ConfirmationDialog {
  return {
    title: { type: 'plain_text', text: `${verb} all pending?` },
    text: { type: 'plain_text', text: `${verb}s the ${pending === 1 ? 'image' : `${pending} images`} of this sheet still pending review.` },
    confirm: { type: 'plain_text', text: verb },
    deny: { type: 'plain_text', text: 'Back' },
  };
}
