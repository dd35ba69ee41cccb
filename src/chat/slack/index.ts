/**
 * The Slack adapter: @slack/bolt over HTTP (signed requests on SLACK_PORT, /slack/events), or Socket
 * Mode when SLACK_APP_TOKEN is set. Web API calls go to SLACK_API_URL. Listeners are registered
 * explicitly: the registry's commands (commands.ts), buttons (actions.ts), the "Review by number"
 * dialog's submissions (numbers.ts), and member_joined_channel, which releases progress and galleries
 * that were waiting for the bot to be invited. Progress and galleries go out through delivery
 * (../delivery, platform.ts). Everything the bot posts is sent with link and media unfurling off
 * (render.ts NO_UNFURL).
 *
 * Start it before engine.resume(): resumed jobs then find their messages through job.chat.slack.
 *
 * `receive: false` (ROLE=worker) starts delivery alone: progress edits and galleries go out over the
 * Web API with the bot token, and nothing listens for Slack (no HTTP receiver, no Socket Mode).
 */
import type { AddressInfo } from 'node:net';
import { App as Bolt, HTTPReceiver, LogLevel, SocketModeReceiver, webApi, type Logger as BoltLogger } from '@slack/bolt';
import type { App } from '../../app.js';
import type { ChatAdapter, StartAdapter } from '../types.js';
import { registerActions } from './actions.js';
import { REQUEST_TIMESTAMP, registerCommands } from './commands.js';
import { describe } from './errors.js';
import { Delivery } from '../delivery/index.js';
import { Moderators } from './moderators.js';
import { registerReviewByNumber } from './numbers.js';
import { slackPlatform } from './platform.js';
import { SeenCommands } from './replays.js';

export interface SlackOptions {
  /** @default config.slack.port */
  port?: number;
  /** @default all interfaces ('::' / '0.0.0.0'), as Slack must reach it; tests use 127.0.0.1 */
  host?: string;
  /** time between two edits of one message @default 2000 */
  updateIntervalMs?: number;
  /** the process's delivery, shared with the other adapters @default one of its own */
  delivery?: Delivery;
  /** Socket Mode only: how the connection to Slack is kept (tests scale the delays down) */
  socket?: SocketModeTuning;
  /**
   * Take commands, buttons and events. false: deliver only (edit progress, post galleries over the
   * Web API), as a process that runs batches but takes no commands does (ROLE=worker) @default true
   */
  receive?: boolean;
}

export interface SocketModeTuning {
  /** backoff of apps.connections.open when it fails @default SOCKET_MODE_RETRY */
  retry?: webApi.RetryOptions;
  /**
   * socket-mode's clientPingTimeout: a pong must come back within it, and a reconnect waits this long
   * times the failures in a row before it asks for a new URL @default 5000 (socket-mode's own)
   */
  pingTimeoutMs?: number;
}

/**
 * apps.connections.open gets its own retry policy, never the Web API client's `retries: 0`: Slack
 * refreshes a Socket Mode connection every few hours, socket-mode treats an HTTP error of that call as
 * unrecoverable, and the rejection escapes its reconnect loop unhandled — one 500 during a refresh
 * would end the process. So the call is retried here, 1 s doubling to a minute, jittered, for as long
 * as it takes: the jobs keep running and their edits keep going out over the Web API meanwhile.
 * (A revoked app token is an `ok: false` answer and is not retried: the bot stops on it, since it
 * could never connect again.)
 */
export const SOCKET_MODE_RETRY: webApi.RetryOptions = {
  retries: 10,
  factor: 2,
  minTimeout: 1_000,
  maxTimeout: 60_000,
  randomize: true,
  forever: true,
};

/** Bolt's Socket Mode receiver, with a Web API client of its own for apps.connections.open. */
function socketModeReceiver(
  app: App,
  slack: { appToken: string; apiUrl: string },
  logger: BoltLogger,
  tuning: SocketModeTuning = {},
): SocketModeReceiver {
  // web-api hands retryConfig to p-retry as it is, so p-retry's onFailedAttempt reaches it: each failed
  // attempt is logged, or a bot that cannot reconnect would look healthy and silent.
  const retryConfig: webApi.RetryOptions & { onFailedAttempt: (error: Error & { attemptNumber?: number }) => void } = {
    ...(tuning.retry ?? SOCKET_MODE_RETRY),
    onFailedAttempt: (error) =>
      app.logger.warn({ attempt: error.attemptNumber, err: describe(error) }, 'slack: apps.connections.open failed; retrying with backoff'),
  };
  return new SocketModeReceiver({
    appToken: slack.appToken,
    logger,
    ...(tuning.pingTimeoutMs !== undefined ? { clientPingTimeout: tuning.pingTimeoutMs } : {}),
    // Bolt would hand the socket client the bot's clientOptions (retries: 0, and 429s rejected at
    // once); here a 429 waits for its Retry-After like any other failure of this one call.
    // A hung apps.connections.open would hold a reconnect for ever: after 30 s it is a failure, retried.
    installerOptions: { clientOptions: { slackApiUrl: slack.apiUrl, retryConfig, timeout: 30_000 } },
  });
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
  const web = new webApi.WebClient(config.botToken, clientOptions);
  const identity = await web.auth.test().catch((error: unknown) => {
    throw new Error(`SLACK_BOT_TOKEN: Slack did not accept the token (${describe(error)})`);
  });
  if (!identity.user_id || !identity.bot_id) throw new Error('SLACK_BOT_TOKEN: auth.test answered without the bot’s ids');
  const botUserId = identity.user_id;

  const receive = options.receive ?? true;
  const socketMode = Boolean(config.appToken);
  const socket = receive && config.appToken
    ? socketModeReceiver(app, { appToken: config.appToken, apiUrl: config.apiUrl }, logger, options.socket)
    : undefined;
  // In Socket Mode the bot is healthy while its socket is open, not while it is reconnecting.
  let socketOpen = false;
  socket?.client.on('connected', () => void (socketOpen = true));
  for (const state of ['close', 'disconnected', 'reconnecting'] as const) socket?.client.on(state, () => void (socketOpen = false));
  const bolt = receive
    ? new Bolt({
        token: config.botToken,
        botId: identity.bot_id,
        botUserId,
        logger,
        clientOptions,
        ...(socket
          ? { receiver: socket }
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
      })
    : undefined;

  // The Web API client works before the receiver starts: delivery can post what a restart cut off.
  const stopping = new AbortController();
  const courier = (options.delivery ?? new Delivery(app)).register(
    slackPlatform({
      client: bolt?.client ?? web,
      images: app.files,
      sheets: app.sheets,
      inlineMax: app.config.galleryInlineMax,
      browser: app.config.review !== undefined,
      signal: stopping.signal,
      ...(options.updateIntervalMs ? { editIntervalMs: options.updateIntervalMs } : {}),
    }),
  );
  if (!bolt) return deliveryOnly(app, courier, stopping, botUserId);
  const moderators = new Moderators(new Set(config.reviewers), (userId, error) =>
    app.logger.warn({ user: userId, err: describe(error) }, 'slack: users.info failed; treated as not a moderator'),
  );
  registerCommands(bolt, app, courier, new SeenCommands(app.keyv, { shared: app.shared }), moderators);
  registerActions(bolt, app, courier, moderators);
  registerReviewByNumber(bolt, app, moderators);
  bolt.event('member_joined_channel', async ({ event }) => {
    if (event.user !== botUserId) return;
    // Invited: what waited for this channel (a progress message, a gallery) goes out now.
    await courier.retry((job) => job.requester.channelId === event.channel).catch((error: unknown) =>
      app.logger.warn({ channel: event.channel, err: describe(error) }, 'slack: could not post what waited for this channel'),
    );
  });
  bolt.error(async (error) => {
    app.logger.error({ err: describe(error) }, 'slack: unhandled error in a listener');
  });

  let port: number | undefined;
  let server: { listening: boolean } | undefined;
  try {
    if (socketMode) {
      await bolt.start();
    } else {
      const listening = await bolt.start({ port: options.port ?? config.port, ...(options.host ? { host: options.host } : {}) });
      port = (listening.address() as AddressInfo).port;
      server = listening;
    }
  } catch (error) {
    stopping.abort();
    await courier.stop();
    throw error;
  }
  app.logger.info({ mode: socketMode ? 'socket' : 'http', port, botUserId }, 'slack adapter started');

  let stopped = false;
  return {
    name: 'slack',
    port,
    botUserId,
    healthy: () => !stopped && (server ? server.listening : socketOpen),
    async stop() {
      if (stopped) return;
      stopped = true;
      stopping.abort();
      await courier.stop();
      await bolt.stop().catch((error: unknown) => app.logger.warn({ err: describe(error) }, 'slack: stop failed'));
    },
  };
}

startSlack satisfies StartAdapter;

/** The adapter of a process that only delivers: healthy until stopped, as it waits on nothing. */
function deliveryOnly(app: App, courier: { stop(): Promise<void> }, stopping: AbortController, botUserId: string): SlackAdapter {
  app.logger.info({ botUserId }, 'slack delivery started (no receiver: this process takes no commands)');
  let stopped = false;
  return {
    name: 'slack',
    port: undefined,
    botUserId,
    healthy: () => !stopped,
    async stop() {
      if (stopped) return;
      stopped = true;
      stopping.abort();
      await courier.stop();
    },
  };
}
