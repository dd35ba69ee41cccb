/**
 * /imagine and /jobs. Slack wants an answer within 3 s, so the text is validated synchronously and a
 * mistake (or `help`) is answered in the ack itself, ephemerally — no response_url use at all. Only
 * then is the job submitted; what can still go wrong after the ack (a full queue, a channel the bot
 * is not in) is answered once through response_url.
 */
import type { App as Bolt, RespondFn } from '@slack/bolt';
import { help, parseImagineText } from '../../../commands/imagine.js';
import { run as runJobs } from '../../../commands/jobs.js';
import type { App } from '../../app.js';
import { isUserError } from '../../core/errors.js';
import type { ImagineRequest, Requester } from '../../core/types.js';
import { describe } from './errors.js';
import { GENERIC_FAILURE, type Reply, type SlackMessages } from './messages.js';
import { escapeMrkdwn, helpText } from './render.js';

const ephemeral = (text: string) => ({ response_type: 'ephemeral' as const, text });

interface CommandBody {
  team_id: string;
  user_id: string;
  user_name?: string;
  channel_id: string;
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

export function registerCommands(bolt: Bolt, app: App, messages: SlackMessages): void {
  bolt.command('/imagine', async ({ command, ack, respond }) => {
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
    await ack();
    // After the ack Bolt has answered Slack: startJob answers everything itself and never throws.
    await messages.startJob(request, requesterOf(command), oneReply(respond, app));
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
