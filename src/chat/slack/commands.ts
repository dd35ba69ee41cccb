/**
 * /imagine and /jobs. Slack wants an answer within 3 s, so the text is validated synchronously and a
 * mistake (or `help`) is answered in the ack itself, ephemerally — no response_url use at all. Only
 * then is the job submitted; what can still go wrong after the ack (a full queue, a channel the bot
 * is not in) is answered once through response_url. A delivery of an /imagine already taken (a replay
 * of the same signed request, or the same trigger_id again) is answered in the ack and starts nothing.
 */
import type { App as Bolt, RespondFn } from '@slack/bolt';
import { help, parseImagineText } from '../../../commands/imagine.js';
import { run as runJobs } from '../../../commands/jobs.js';
import type { App } from '../../app.js';
import { isUserError } from '../../core/errors.js';
import type { ImagineRequest, Requester } from '../../core/types.js';
import { describe } from './errors.js';
import { GENERIC_FAILURE, type Reply, type SlackMessages } from './messages.js';
import { escapeMrkdwn, helpText, NO_UNFURL } from './render.js';
import type { CommandDelivery, SeenCommands } from './replays.js';

/** The context key under which index.ts's receiver passes X-Slack-Request-Timestamp (seconds). */
export const REQUEST_TIMESTAMP = 'slackRequestTimestamp';

const ephemeral = (text: string) => ({ response_type: 'ephemeral' as const, text, ...NO_UNFURL });

interface CommandBody {
  team_id: string;
  user_id: string;
  user_name?: string;
  channel_id: string;
  command: string;
  text: string;
  trigger_id?: string;
}

function deliveryOf(command: CommandBody, context: Record<string, unknown>): CommandDelivery {
  const timestamp = context[REQUEST_TIMESTAMP];
  return {
    team_id: command.team_id,
    user_id: command.user_id,
    channel_id: command.channel_id,
    command: command.command,
    text: command.text,
    ...(command.trigger_id ? { trigger_id: command.trigger_id } : {}),
    ...(typeof timestamp === 'number' ? { timestamp } : {}),
  };
}

/**
 * The answer to a second delivery of one command: it names the job once the first delivery has one
 * (before that, or when the first was refused after the ack, there is no job to name).
 */
export function alreadyReceived(jobId: string | undefined): string {
  return jobId ? `This command was already received; its job is \`${jobId}\`.` : 'This command was already received; it is not run twice.';
}

function requesterOf(command: CommandBody): Requester {
  return {
    tenant: command.team_id,
    userId: command.user_id,
    ...(command.user_name ? { userName: command.user_name } : {}),
    platform: 'slack',
    channelId: command.channel_id,
  };
}

/** A reply through response_url that refuses a second use: Slack allows 5, we never need more than one. */
function oneReply(respond: RespondFn, app: App): Reply {
  let used = false;
  return async (text) => {
    if (used) {
      app.logger.warn({ text }, 'slack: a second reply to one command was dropped');
      return;
    }
    used = true;
    await respond({ ...ephemeral(escapeMrkdwn(text)), replace_original: false });
  };
}

export function registerCommands(bolt: Bolt, app: App, messages: SlackMessages, seen: SeenCommands): void {
  bolt.command('/imagine', async ({ command, ack, respond, context }) => {
    const text = command.text.trim();
    if (text === '' || /^(help|--help|-h)$/i.test(text)) {
      await ack(ephemeral(helpText(help(app.limits))));
      return;
    }
    let request: ImagineRequest;
    try {
      request = parseImagineText(text, app.limits);
    } catch (error) {
      if (!isUserError(error)) app.logger.error({ error: describe(error) }, 'slack: /imagine could not be read');
      await ack(ephemeral(isUserError(error) ? escapeMrkdwn(error.message) : GENERIC_FAILURE));
      return;
    }
    // Only a command that would start a job is remembered: help and refusals are harmless to repeat.
    const delivery = deliveryOf(command, context);
    const earlier = await seen.claim(delivery);
    if (earlier) {
      app.logger.warn({ team: command.team_id, user: command.user_id, job: earlier.jobId }, 'slack: a second delivery of one /imagine was refused');
      await ack(ephemeral(alreadyReceived(earlier.jobId)));
      return;
    }
    await ack();
    // After the ack Bolt has answered Slack: startJob answers everything itself and never throws.
    const jobId = await messages.startJob(request, requesterOf(command), oneReply(respond, app));
    if (jobId) await seen.started(delivery, jobId);
  });

  bolt.command('/jobs', async ({ command, ack }) => {
    try {
      await ack(ephemeral(escapeMrkdwn(runJobs({ engine: app.engine, requester: requesterOf(command) }))));
    } catch (error) {
      app.logger.error({ error: describe(error) }, 'slack: /jobs failed');
      await ack(ephemeral(GENERIC_FAILURE));
    }
  });
}
