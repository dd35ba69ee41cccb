/**
 * Button clicks (Cancel, Approve / Reject / Undo). One listener takes every block action: the value
 * is decoded strictly, so an unknown or forged value is answered ("no longer available") rather than
 * left unacknowledged, and everything a button needs is read from the store, so buttons keep working
 * after a restart. Who may act is decided by mayAct: the requester, or a moderator of the same team.
 */
import type { App as Bolt, BlockAction, webApi } from '@slack/bolt';
import type { App } from '../../app.js';
import { decodeAction, GONE, mayAct, REFUSAL } from '../../core/actions.js';
import { GENERIC_FAILURE, isUserError } from '../../core/errors.js';
import type { Courier } from '../delivery/index.js';
import { describe } from './errors.js';
import type { PageFacts, SlackTarget } from './platform.js';
import type { Moderators } from './moderators.js';
import { escapeMrkdwn, NO_UNFURL } from './render.js';

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
  };
}

export function registerActions(bolt: Bolt, app: App, courier: Courier<SlackTarget, PageFacts>, moderators: Moderators): void {
  bolt.action<BlockAction>({ type: 'block_actions' }, async ({ ack, body, client, respond }) => {
    await ack();
    const click = clickOf(body);
    // Private answers go next to the button (in its thread); response_url is the fallback.
    const tell = async (text: string) => {
      const safe = escapeMrkdwn(text);
      try {
        if (!click.channel) throw new Error('no channel in the click');
        await client.chat.postEphemeral({ channel: click.channel, user: click.userId, text: safe, ...NO_UNFURL, ...(click.threadTs ? { thread_ts: click.threadTs } : {}) });
      } catch (error) {
        await respond({ response_type: 'ephemeral', replace_original: false, text: safe, ...NO_UNFURL }).catch(() =>
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
): Promise<string | undefined> {
  const action = click.value ? decodeAction(click.value) : undefined;
  // Page buttons are Discord's; Slack posts every page, so one arriving here is not ours.
  if (!action) return GONE;
  const job = await app.engine.get(action.jobId);
  if (!job) return GONE;
  if (!click.team || job.requester.tenant !== click.team) return REFUSAL;
  const moderator = job.requester.userId !== click.userId && (await moderators.isModerator(client, click.userId));
  if (!mayAct(job, { userId: click.userId, moderator }, click.team)) return REFUSAL;
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
    if (action.kind !== 'review') return GONE;
    // The gallery page and the summary follow through the engine's `reviewed` (Delivery routes it to the courier).
    await app.engine.review(action.jobId, action.image, action.status, by);
    return undefined;
  } catch (error) {
    if (isUserError(error)) return error.message;
    throw error;
  }
}
