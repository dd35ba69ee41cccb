/**
 * The Discord adapter: a discord.js client (Guilds intent only — slash commands and buttons need no
 * message content), the command and button handlers, and the relay that turns engine events into
 * progress edits and galleries. Call it before `engine.resume()`: resumed jobs then find their
 * messages again through `job.chat.discord`.
 */
import { Outbox } from '../outbox.js';
import { once } from 'node:events';
import { Client, Events, GatewayIntentBits, RESTEvents } from 'discord.js';
import type { App } from '../../app.js';
import type { ChatAdapter, StartAdapter } from '../types.js';
import { handleInteraction } from './interactions.js';
import { ProgressRelay } from './progress.js';
import { NO_MENTIONS } from './render.js';
import { createTransport, describeError } from './transport.js';

export { deployCommands, commandsJson } from './commands.js';

export interface DiscordOptions {
  /** shortest time between two edits of one message @default 1500 */
  editIntervalMs?: number;
  /** how long after a command its interaction token is used before the bot token takes over @default 14 min */
  tokenLifetimeMs?: number;
  /** how long stop() waits for uploads and edits in flight @default 5000 */
  stopTimeoutMs?: number;
  /** longest wait for the gateway's READY at start @default 30000 */
  loginTimeoutMs?: number;
  /** the clock that decides when an interaction token is too old @default Date.now */
  now?: () => number;
}

/** Interaction tokens live 15 minutes; stop a minute early so no edit races the expiry. */
const TOKEN_LIFETIME_MS = 14 * 60_000;
/** Gallery uploads can be large; @discordjs/rest's default of 15 s is for small JSON calls. */
const REQUEST_TIMEOUT_MS = 60_000;

export const startDiscord: StartAdapter = (app) => createDiscordAdapter(app);

export async function createDiscordAdapter(app: App, options: DiscordOptions = {}): Promise<ChatAdapter> {
  const config = app.config.discord;
  if (!config) throw new Error('Discord is not configured: set DISCORD_TOKEN and DISCORD_APP_ID');
  const log = app.logger;

  const client = new Client({
    intents: [GatewayIntentBits.Guilds],
    rest: { api: config.apiUrl, timeout: REQUEST_TIMEOUT_MS },
    allowedMentions: NO_MENTIONS,
  });
  const inFlight = new Set<Promise<unknown>>();
  const track = (work: Promise<unknown>) => {
    const settled = work.catch((error: unknown) => log.error({ err: describeError(error) }, 'discord background work failed'));
    inFlight.add(settled);
    void settled.finally(() => inFlight.delete(settled));
  };

  const transport = createTransport({
    rest: client.rest,
    applicationId: config.appId,
    ...(options.now ? { now: options.now } : {}),
    onTokenDropped: (target, error) =>
      log.info({ message: target.messageId, err: describeError(error) }, 'discord interaction token expired; editing with the bot token'),
  });
  const relay = new ProgressRelay({
    engine: app.engine,
    outbox: new Outbox(app.keyv, 'discord'),
    transport,
    jobDir: (jobId) => app.files.jobDir(jobId),
    log,
    intervalMs: options.editIntervalMs ?? 1500,
    track,
  });
  const deps = { app, relay, tokenLifetimeMs: options.tokenLifetimeMs ?? TOKEN_LIFETIME_MS };

  // Listening starts before login: resumed jobs' events may come as soon as this function returns.
  relay.attach();
  client.on(Events.InteractionCreate, (interaction) => track(handleInteraction(interaction, deps)));
  client.on(Events.Error, (error) => log.error({ err: describeError(error) }, 'discord client error'));
  client.rest.on(RESTEvents.RateLimited, (info) => {
    // @discordjs/rest waits and retries by itself; the relay also holds that message's next edit.
    const messageId = /\/messages\/(\d+)/.exec(info.url)?.[1];
    if (messageId) relay.holdForMessage(messageId, info.retryAfter);
  });

  try {
    // A gateway that never says READY must not hang start-up for ever.
    const ready = once(client, Events.ClientReady, { signal: AbortSignal.timeout(options.loginTimeoutMs ?? 30_000) });
    const login = client.login(config.token);
    void login.catch(() => undefined);
    void ready.catch(() => undefined);
    await Promise.all([login, ready]);
  } catch (error) {
    relay.close();
    await client.destroy();
    // discord.js's messages name no token, but the error is rebuilt (without its cause) to be sure.
    // eslint-disable-next-line preserve-caught-error -- the cause could carry request details; its message is kept
    throw new Error(`Discord login failed: ${String(describeError(error)['message'])}`);
  }
  log.info({ user: client.user?.tag, api: config.apiUrl }, 'discord adapter ready');
  track(relay.redeliver());

  let stopped = false;
  return {
    name: 'discord',
    healthy: () => !stopped && client.isReady(),
    async stop() {
      if (stopped) return;
      stopped = true;
      client.removeAllListeners(Events.InteractionCreate);
      // No new events; a gallery or final edit under way is let finish (bounded), then timers go.
      relay.detach();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise((resolve) => (timer = setTimeout(resolve, options.stopTimeoutMs ?? 5000)));
      await Promise.race([Promise.allSettled([...inFlight]), timeout]);
      clearTimeout(timer);
      relay.close();
      await client.destroy();
    },
  };
}
