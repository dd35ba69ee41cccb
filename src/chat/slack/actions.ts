/**
 * Button clicks (Cancel, Approve / Reject / Undo, and a contact sheet's quick actions: Approve / Reject
 * all pending, Review by number, Review in browser). One listener takes every block action: the value
 * is decoded strictly, so an unknown or forged value is answered ("no longer available") rather than
 * left unacknowledged, and everything a button needs is read from the store, so buttons keep working
 * after a restart. Who may act is decided by mayAct (moderators.ts mayReview): the requester, or a moderator of the same team.
 */
import type { App as Bolt, BlockAction, webApi } from '@slack/bolt';
import type { App } from '../../app.js';
import { decodeAction, GONE, REFUSAL, type Action } from '../../core/actions.js';
import { GENERIC_FAILURE, isUserError } from '../../core/errors.js';
import type { Reviewer } from '../../core/ports.js';
import type { Job } from '../../core/types.js';
import { sheetView } from '../../core/views.js';
import { reviewLink } from '../../web/review-token.js';
import type { Courier } from '../delivery/index.js';
import { describe } from './errors.js';
import type { PageFacts, SlackTarget } from './platform.js';
import { mayReview, type Moderators } from './moderators.js';
import { reviewByNumberView } from './numbers.js';
import { escapeMrkdwn, NO_UNFURL, type Rendered } from './render.js';
import { sheetImages } from './sheets.js';

type Click = ReturnType<typeof clickOf>;

function clickOf(body: BlockAction) {
  const action = body.actions[0];
  const message = body.message as { thread_ts?: string } | undefined;
  return {
    value: action && 'value' in action && typeof action.value === 'string' ? action.value : undefined,
    userId: body.user.id,
    userName: body.user.username ?? body.user.name,
    // The workspace the click came from: a button value naming another team's job is refused.
    team: body.team?.id ?? body.user.team_id,
    channel: body.channel?.id ?? (body.container as { channel_id?: string } | undefined)?.channel_id,
    threadTs: message?.thread_ts,
    /** opens a dialog (views.open) within 3 s of the click */
    trigger: typeof body.trigger_id === 'string' ? body.trigger_id : undefined,
  };
}

/** A private answer: one line (escaped when sent), or a message rendered already (the review link). */
type Answer = string | Rendered | undefined;

export function registerActions(bolt: Bolt, app: App, courier: Courier<SlackTarget, PageFacts>, moderators: Moderators): void {
  bolt.action<BlockAction>({ type: 'block_actions' }, async ({ ack, body, client, respond }) => {
    await ack();
    const click = clickOf(body);
    // Private answers go next to the button (in its thread); response_url is the fallback.
    const tell = async (answer: string | Rendered) => {
      const { text, blocks } = typeof answer === 'string' ? { text: escapeMrkdwn(answer), blocks: undefined } : answer;
      const message = { text, ...(blocks ? { blocks } : {}), ...NO_UNFURL };
      try {
        if (!click.channel) throw new Error('no channel in the click');
        await client.chat.postEphemeral({ channel: click.channel, user: click.userId, ...message, ...(click.threadTs ? { thread_ts: click.threadTs } : {}) });
      } catch (error) {
        await respond({ response_type: 'ephemeral', replace_original: false, ...message }).catch(() =>
          app.logger.warn({ err: describe(error) }, 'slack: could not answer a click'),
        );
      }
    };
    try {
      const answer = await handle(click, client, app, courier, moderators);
      if (answer) await tell(answer);
    } catch (error) {
      app.logger.error({ err: describe(error), value: click.value }, 'slack: button failed');
      await tell(GENERIC_FAILURE);
    }
  });
}

/** Does what the button says; returns a private answer for the clicker, if any. */
async function handle(
  click: Click,
  client: webApi.WebClient,
  app: App,
  courier: Courier<SlackTarget, PageFacts>,
  moderators: Moderators,
): Promise<Answer> {
  const action = click.value ? decodeAction(click.value) : undefined;
  // Page buttons are Discord's; Slack posts every page, so one arriving here is not ours.
  if (!action) return GONE;
  const job = await app.engine.get(action.jobId);
  if (!job) return GONE;
  const { allowed, moderator } = await mayReview(job, click.userId, click.team, client, moderators);
  if (!allowed) return REFUSAL;
  const by = { id: click.userId, ...(click.userName ? { name: click.userName } : {}) };
  try {
    if (action.kind === 'cancel') {
      await app.engine.cancel(action.jobId, by);
      return undefined; // the progress message shows it
    }
    if (action.kind === 'retry' || action.kind === 'reroll' || action.kind === 'upscale') {
      const reopened =
        action.kind === 'retry'
          ? await app.engine.retryFailed(action.jobId, by)
          : action.kind === 'upscale'
            ? await app.engine.upscaleApproved(action.jobId, by)
            : await app.engine.reroll(action.jobId, action.image, by);
      await courier.rerun(reopened);
      return undefined; // the progress message follows the job again, and a new gallery comes at its end
    }
    if (action.kind === 'bulk' || action.kind === 'numbers' || action.kind === 'browser') return await sheetAction(action, job, { click, by, moderator }, client, app);
    if (action.kind !== 'review') return GONE;
    // The gallery page and the summary follow through the engine's `reviewed` (Delivery routes it to the courier).
    await app.engine.review(action.jobId, action.image, action.status, by);
    return undefined;
  } catch (error) {
    if (isUserError(error)) return error.message;
    throw error;
  }
}

/** A contact sheet's quick actions; the clicker may review this job (checked by the caller). */
async function sheetAction(
  action: Extract<Action, { kind: 'bulk' | 'numbers' | 'browser' }>,
  job: Readonly<Job>,
  { click, by, moderator }: { click: Click; by: Reviewer; moderator: boolean },
  client: webApi.WebClient,
  app: App,
): Promise<Answer> {
  if (action.kind === 'bulk') {
    const sheet = sheetImages(job, app.config.galleryInlineMax, action.sheet);
    if (!sheet) return GONE;
    // The sheet's pending images as they are now: one reviewed meanwhile (a click, the page) stays as it is.
    const pending = sheetView(job, sheet.images, sheet.page, sheet.pages).pending;
    if (pending.length === 0) return 'Nothing on this sheet is pending review any more.';
    // The sheet and the summary follow through the engine's `reviewed`, as for one image.
    await app.engine.reviewMany(job.id, pending, action.status, by);
    return undefined;
  }
  if (action.kind === 'numbers') {
    if (!click.trigger) return GONE;
    const where = { ...(click.channel ? { channel: click.channel } : {}), ...(click.threadTs ? { thread: click.threadTs } : {}) };
    await client.views.open({ trigger_id: click.trigger, view: reviewByNumberView(job, where) });
    return undefined;
  }
  // Not offered without PUBLIC_URL and REVIEW_SECRET; a button from before they were removed lands here.
  if (!app.config.review) return 'Review in browser is not available here: the bot has no public address for the review page.';
  const reviewer = { tenant: job.requester.tenant, userId: by.id, ...(by.name !== undefined ? { name: by.name } : {}), moderator };
  return browserLink(job, reviewLink(app.config.review, job.id, reviewer, Date.now()));
}

/**
 * The private answer carrying a review link. The link is the reviewer's own (it is signed for them), so
 * it is only ever posted ephemerally to them; it is never logged. The expiry is Slack's date token, so
 * each reader sees it in their own time zone.
 */
function browserLink(job: Readonly<Job>, link: { url: string; expiresAt: number }): Rendered {
  const seconds = Math.floor(link.expiresAt / 1000);
  const until = `<!date^${seconds}^{date_short_pretty} at {time}|${new Date(link.expiresAt).toISOString().replace('T', ' ').slice(0, 16)} UTC>`;
  const text = `Your review page for job \`${job.id}\`: <${link.url}|open it in your browser>. The link is yours alone and works until ${until}.`;
  return { text, blocks: [{ type: 'section', text: { type: 'mrkdwn', text } }] };
}
