/**
 * The Slack adapter: @slack/bolt over HTTP (signed requests on SLACK_PORT, /slack/events), or Socket
 * Mode when SLACK_APP_TOKEN is set. Web API calls go to SLACK_API_URL. Listeners are registered
 * explicitly: /imagine and /jobs (commands.ts), buttons (actions.ts), and member_joined_channel, which
 * releases progress and galleries that were waiting for the bot to be invited. Everything the bot
 * posts is sent with link and media unfurling off (render.ts NO_UNFURL).
 *
 * Start it before engine.resume(): resumed jobs then find their messages through job.chat.slack.
 */
import type { AddressInfo } from 'node:net';
import { App as Bolt, HTTPReceiver, LogLevel, webApi, type Logger as BoltLogger } from '@slack/bolt';
import type { App } from '../../app.js';
import type { ChatAdapter, StartAdapter } from '../types.js';
import { registerActions } from './actions.js';
import { REQUEST_TIMESTAMP, registerCommands } from './commands.js';
import { describe } from './errors.js';
import { SlackMessages } from './messages.js';
import { Moderators } from './moderators.js';
import { SeenCommands } from './replays.js';

export interface SlackOptions {
  /** @default config.slack.port */
  port?: number;
  /** @default all interfaces ('::' / '0.0.0.0'), as Slack must reach it; tests use 127.0.0.1 */
  host?: string;
  /** time between two edits of one message @default 2000 */
  updateIntervalMs?: number;
}

export interface SlackAdapter extends ChatAdapter {
  /** the bound HTTP port; undefined in Socket Mode */
  readonly port: number | undefined;
  readonly botUserId: string;
}

/**
 * Bolt's logger interface over ours. Bolt's debug lines are dropped: some print whole request bodies
 * (which carry Slack's verification token) as plain strings, where pino's redaction cannot reach.
 */
function boltLogger(log: App['logger']): BoltLogger {
  const child = log.child({ component: 'slack' });
  const line = (args: unknown[]) => args.map((a) => (a instanceof Error ? describe(a) : String(a))).join(' ');
  let level = LogLevel.INFO;
  return {
    debug: () => {},
    info: (...args) => child.info(line(args)),
    warn: (...args) => child.warn(line(args)),
    error: (...args) => child.error(line(args)),
    setLevel: (next) => void (level = next),
    getLevel: () => level,
    setName: () => {},
  };
}

export async function startSlack(app: App, options: SlackOptions = {}): Promise<SlackAdapter> {
  const config = app.config.slack;
  if (!config) throw new Error('SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET are needed to start the Slack adapter');
  const logger = boltLogger(app.logger);
  const clientOptions = {
    logger,
    slackApiUrl: config.apiUrl,
    // Retries are ours: a 429 throws at once with its Retry-After instead of pausing the whole client.
    rejectRateLimitedCalls: true,
    retryConfig: { retries: 0 },
  };

  // auth.test once, awaited: a bad token stops start-up with a clear line, and Bolt gets the bot's ids
  // (without them it would call auth.test itself, un-awaited, at construction).
  const identity = await new webApi.WebClient(config.botToken, clientOptions).auth.test().catch((error: unknown) => {
    throw new Error(`SLACK_BOT_TOKEN: Slack did not accept the token (${describe(error)})`);
  });
  if (!identity.user_id || !identity.bot_id) throw new Error('SLACK_BOT_TOKEN: auth.test answered without the bot’s ids');
  const botUserId = identity.user_id;

  const socketMode = Boolean(config.appToken);
  const bolt = new Bolt({
    token: config.botToken,
    botId: identity.bot_id,
    botUserId,
    logger,
    clientOptions,
    ...(socketMode
      ? { socketMode: true, appToken: config.appToken }
      : {
          // Bolt's own HTTP receiver, built here only to pass the signed request timestamp on to the
          // listeners (context[REQUEST_TIMESTAMP]): Bolt keeps no memory of requests, so replays of
          // one signed body are recognised by us (replays.ts).
          receiver: new HTTPReceiver({
            signingSecret: config.signingSecret,
            logger,
            customPropertiesExtractor: (request) => {
              const seconds = Number(request.headers['x-slack-request-timestamp']);
              return Number.isSafeInteger(seconds) ? { [REQUEST_TIMESTAMP]: seconds } : {};
            },
          }),
        }),
  });

  const messages = new SlackMessages(app, bolt.client, { intervalMs: options.updateIntervalMs });
  const moderators = new Moderators(new Set(config.reviewers), (userId, error) =>
    app.logger.warn({ user: userId, error: describe(error) }, 'slack: users.info failed; treated as not a moderator'),
  );
  registerCommands(bolt, app, messages, new SeenCommands(app.keyv));
  registerActions(bolt, app, messages, moderators);
  bolt.event('member_joined_channel', async ({ event }) => {
    if (event.user !== botUserId) return;
    await messages.channelOpened(event.channel).catch((error: unknown) =>
      app.logger.warn({ channel: event.channel, error: describe(error) }, 'slack: could not post what waited for this channel'),
    );
  });
  bolt.error(async (error) => {
    app.logger.error({ error: describe(error) }, 'slack: unhandled error in a listener');
  });

  let port: number | undefined;
  let server: { listening: boolean } | undefined;
  if (socketMode) {
    await bolt.start();
  } else {
    const listening = await bolt.start({ port: options.port ?? config.port, ...(options.host ? { host: options.host } : {}) });
    port = (listening.address() as AddressInfo).port;
    server = listening;
  }
  messages.attach();
  app.logger.info({ mode: socketMode ? 'socket' : 'http', port, botUserId }, 'slack adapter started');

  let stopped = false;
  return {
    name: 'slack',
    port,
    botUserId,
    healthy: () => !stopped && (server ? server.listening : true),
    async stop() {
      if (stopped) return;
      stopped = true;
      await messages.stop();
      await bolt.stop().catch((error: unknown) => app.logger.warn({ error: describe(error) }, 'slack: stop failed'));
    },
  };
}

startSlack satisfies StartAdapter;
