/**
 * "Review by number" on Slack: the sheet's button opens a dialog (views.open with the click's
 * trigger_id) with two fields, Approve and Reject, each taking numbers such as `1-5, 8`. Its submission
 * is read strictly: who submits is checked again as for a button (the job, the team, mayAct), the
 * numbers are parsed by the core's parser, and a bad field is answered on that field
 * (`response_action: 'errors'`) with one line, nothing changed. A good one is acknowledged first (the
 * dialog closes within Slack's 3 s), then reviewed with engine.reviewMany and confirmed privately; the
 * sheets follow through the engine's `reviewed`, as for any review.
 *
 * The dialog's private_metadata names the job and where to confirm (the click's channel and thread).
 * Slack keeps it on its side and sends it back signed with the submission; it is still parsed as
 * untrusted, and nothing in it grants a right: the job is read from the store and the user re-checked.
 */
import type { App as Bolt, ViewSubmitAction, types, webApi } from '@slack/bolt';
import { z } from 'zod';
import type { App } from '../../app.js';
import { GONE, REFUSAL } from '../../core/actions.js';
import { GENERIC_FAILURE } from '../../core/errors.js';
import {
  applyNumberedReviews,
  IMAGE_NUMBERS_MAX_CHARS,
  NUMBER_FIELD_LABELS,
  NumbersRefused,
  readReviewNumbers,
  type NumberedReview,
  type NumberField,
} from '../../core/image-numbers.js';
import { shorten } from '../../core/text.js';
import type { Job } from '../../core/types.js';
import { gallerySummary } from '../../core/views.js';
import { describe } from './errors.js';
import { mayReview, type Moderators } from './moderators.js';
import { escapeMrkdwn, NO_UNFURL } from './render.js';

/** The dialog's callback_id: its submissions come back under it. */
export const REVIEW_NUMBERS = 'af-review-numbers';

/** Where the answer to a submission goes: the channel and thread of the sheet that was clicked. */
const whereSchema = z
  .object({
    job: z.string().regex(/^[0-9]{8}-[0-9a-f]{8}$/),
    channel: z.string().regex(/^[A-Z0-9]{1,32}$/).optional(),
    thread: z.string().regex(/^[0-9]{1,12}\.[0-9]{1,8}$/).optional(),
  })
  .strict();
type Where = z.infer<typeof whereSchema>;

type Field = NumberField;
/** Only the plain_text_input of each field; its value is read from view.state.values[field][INPUT]. */
const INPUT = 'numbers';

/** The dialog for `job`, opened on a click in `where`. */
export function reviewByNumberView(job: Readonly<Job>, where: Omit<Where, 'job'>): types.ModalView {
  const last = Math.max(job.request.count, ...job.images.map((image) => image.index));
  const field = (name: Field): types.InputBlock => ({
    type: 'input',
    block_id: name,
    optional: true,
    label: { type: 'plain_text', text: NUMBER_FIELD_LABELS[name] },
    element: {
      type: 'plain_text_input',
      action_id: INPUT,
      max_length: IMAGE_NUMBERS_MAX_CHARS,
      placeholder: { type: 'plain_text', text: 'e.g. 1-5, 8, 12' },
    },
  });
  return {
    type: 'modal',
    callback_id: REVIEW_NUMBERS,
    private_metadata: JSON.stringify({ job: job.id, ...where } satisfies Where),
    title: { type: 'plain_text', text: 'Review by number' },
    submit: { type: 'plain_text', text: 'Review' },
    close: { type: 'plain_text', text: 'Cancel' },
    blocks: [
      {
        type: 'section',
        text: {
          type: 'mrkdwn',
          text:
            `Job \`${job.id}\` · images 1–${last} · ${escapeMrkdwn(gallerySummary(job).text)}\n>${escapeMrkdwn(shorten(job.request.prompt, 200))}\n` +
            'Type image numbers such as `1-5, 8, 12`. Leave a field empty to skip it.',
        },
      },
      field('approve'),
      field('reject'),
    ],
  };
}

type Checked = { refused: string; field: Field } | { job: Readonly<Job>; where: Where; reviews: NumberedReview[] };

/** The submission as reviews to make, or the line that refuses it (and on which field). */
async function check(body: ViewSubmitAction, app: App, client: webApi.WebClient, moderators: Moderators): Promise<Checked> {
  let where: Where | undefined;
  try {
    const parsed = whereSchema.safeParse(JSON.parse(body.view.private_metadata));
    where = parsed.success ? parsed.data : undefined;
  } catch {
    where = undefined;
  }
  const job = where ? await app.engine.get(where.job) : undefined;
  if (!where || !job) return { refused: GONE, field: 'approve' };
  const team = body.team?.id ?? body.user.team_id;
  if (!(await mayReview(job, body.user.id, team, client, moderators)).allowed) return { refused: REFUSAL, field: 'approve' };

  // Only a string is a field's text, whatever else a forged submission puts there.
  const field = (name: Field): string => {
    const value: unknown = body.view.state.values[name]?.[INPUT]?.value;
    return typeof value === 'string' ? value : '';
  };
  try {
    const reviews = readReviewNumbers(job, { approve: field('approve'), reject: field('reject') });
    return { job, where, reviews };
  } catch (error) {
    if (error instanceof NumbersRefused) return { refused: error.message, field: error.field };
    throw error;
  }
}

export function registerReviewByNumber(bolt: Bolt, app: App, moderators: Moderators): void {
  bolt.view<ViewSubmitAction>({ callback_id: REVIEW_NUMBERS, type: 'view_submission' }, async ({ ack, body, client }) => {
    let checked: Checked;
    try {
      checked = await check(body, app, client, moderators);
    } catch (error) {
      app.logger.error({ err: describe(error) }, 'slack: review by number failed');
      await ack({ response_action: 'errors', errors: { approve: GENERIC_FAILURE } });
      return;
    }
    if ('refused' in checked) {
      await ack({ response_action: 'errors', errors: { [checked.field]: checked.refused } });
      return;
    }
    // The dialog closes now: moving files (perhaps in a bucket) may take longer than Slack waits.
    await ack();
    const { job, where, reviews } = checked;
    // Slack sends `username` too (as in block_actions); the types know only `name`.
    const name = (body.user as { username?: string }).username ?? body.user.name;
    const by = { id: body.user.id, ...(name ? { name } : {}) };
    const confirmation = await applyNumberedReviews(app.engine, job.id, reviews, by).catch((error: unknown) => {
      app.logger.error({ err: describe(error), job: job.id }, 'slack: review by number failed');
      return GENERIC_FAILURE;
    });
    const channel = where.channel ?? job.requester.channelId;
    if (!channel) return;
    await client.chat
      .postEphemeral({ channel, user: body.user.id, text: escapeMrkdwn(confirmation), ...NO_UNFURL, ...(where.thread ? { thread_ts: where.thread } : {}) })
      .catch((error: unknown) => app.logger.warn({ err: describe(error), job: job.id }, 'slack: could not confirm a review by number'));
  });
}
