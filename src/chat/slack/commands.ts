/**
 * Every command of the registry, run through its `run`. Slack wants an answer within 3 s, so the text
 * is validated synchronously and a mistake (or `help`) is answered in the ack itself, ephemerally — no
 * response_url use at all. Only once the command accepts is it acked and the job submitted; what can
 * still go wrong after the ack (a full queue, a channel the bot is not in) is answered once through
 * response_url. A second delivery of a command already taken (a replay of the signed request, or the
 * same trigger_id) is refused where it would be accepted: answered in the ack, it starts nothing.
 */
import type { App as Bolt, RespondFn, SlashCommand } from '@slack/bolt';
import { answer, commands } from '../../../commands/index.js';
import type { App } from '../../app.js';
import { UserError } from '../../core/errors.js';
import type { Requester } from '../../core/types.js';
import { NoAccess, type Courier } from '../delivery/index.js';
import { describe } from './errors.js';
import type { PageFacts, SlackTarget } from './platform.js';
import { escapeMrkdwn, helpText, inviteHint, NO_UNFURL } from './render.js';
import type { Moderators } from './moderators.js';
import type { CommandDelivery, SeenCommands } from './replays.js';

/** The context key under which index.ts's receiver passes X-Slack-Request-Timestamp (seconds). */
export const REQUEST_TIMESTAMP = 'slackRequestTimestamp';

const ephemeral = (text: string) => ({ response_type: 'ephemeral' as const, text, ...NO_UNFURL });

function deliveryOf(command: SlashCommand, context: Record<string, unknown>): CommandDelivery {
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

function requesterOf(command: SlashCommand): Requester {
  return {
    tenant: command.team_id,
    userId: command.user_id,
    ...(command.user_name ? { userName: command.user_name } : {}),
    platform: 'slack',
    channelId: command.channel_id,
  };
}

/** Answers privately through response_url, once: Slack allows 5 uses, we never need more than one. */
function oneReply(respond: RespondFn, app: App): (text: string) => Promise<void> {
  let used = false;
  return async (text) => {
    if (used) {
      app.logger.warn({ text }, 'slack: a second reply to one command was dropped');
      return;
    }
    used = true;
    await respond({ ...ephemeral(escapeMrkdwn(text)), replace_original: false }).catch((error: unknown) =>
      app.logger.warn({ err: describe(error) }, 'slack: could not answer the user'),
    );
  };
}

export function registerCommands(
  bolt: Bolt,
  app: App,
  courier: Courier<SlackTarget, PageFacts>,
  seen: SeenCommands,
  moderators: Moderators,
): void {
  for (const command of commands) {
    bolt.command(`/${command.name}`, async ({ command: body, ack, respond, context, client }) => {
      const delivery = deliveryOf(body, context);
      let acked = false;
      const result = await answer(
        command,
        {
          engine: app.engine,
          limits: app.limits,
          requester: requesterOf(body),
          input: body.text,
          // Workspace admins and owners (users.info, cached for a minute).
          mayManage: () => moderators.isAdmin(client, body.user_id),
          // Only a command that would start a job is remembered: help and refusals are harmless to repeat.
          accept: async () => {
            const earlier = await seen.claim(delivery);
            if (earlier) {
              app.logger.warn({ team: body.team_id, user: body.user_id, job: earlier.jobId }, 'slack: a second delivery of one command was refused');
              throw new UserError('duplicate', alreadyReceived(earlier.jobId));
            }
            await ack();
            acked = true;
          },
        },
        (error) => app.logger.error({ err: describe(error), command: command.name }, 'slack: command failed'),
      );
      if (!acked) {
        const text = result.kind === 'text' && result.monospace ? helpText(result.text) : escapeMrkdwn(result.text);
        return ack(ephemeral(text));
      }
      // After the ack Bolt has answered Slack: everything from here answers through response_url, once.
      const reply = oneReply(respond, app);
      if (result.kind !== 'job') return reply(result.text);
      await seen.started(delivery, result.job.id);
      await courier.follow(result.job).catch((error: unknown) => {
        if (error instanceof NoAccess) return reply(inviteHint(result.job.id));
        app.logger.error({ job: result.job.id, err: describe(error) }, 'slack: could not post the progress message');
        return reply(`Job \`${result.job.id}\` is running, but I could not post its progress here; its gallery will follow when I can.`);
      });
    });
  }
}
