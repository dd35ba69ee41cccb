/**
 * The Discord adapter: a discord.js client (Guilds intent only — slash commands and buttons need no
 * message content), the command and button handlers, and Discord's side of delivery (platform.ts),
 * which turns engine events into progress edits and galleries. Call it before `engine.resume()`:
 * resumed jobs then find their messages again through `job.chat.discord`.
 *
 * `receive: false` (ROLE=worker) starts delivery alone: no gateway login, no interactions; progress
 * edits and galleries go out over REST with the bot token (the channel routes, as for any message
 * whose interaction token this process does not hold).
 */
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Events, GatewayIntentBits, REST, type ClientOptions } from 'discord.js';
import type { App } from '../../app.js';
import type { Config } from '../../config.js';
import { Delivery } from '../delivery/index.js';
import type { ChatAdapter } from '../types.js';
import { attachmentFetcher } from './attachments.js';
import { handleInteraction } from './interactions.js';
import { discordPlatform } from './platform.js';
import { NO_MENTIONS } from './render.js';
import { createTransport, describeError, type Transport } from './transport.js';

export { deployCommands, commandsJson } from './commands.js';

export interface DiscordOptions {
  /** shortest time between two edits of one message @default 1500 */
  editIntervalMs?: number;
  /** how long after a command its interaction token is used before the bot token takes over @default 14 min */
  tokenLifetimeMs?: number;
  /** how long stop() waits for uploads and edits in flight @default 5000 */
  stopTimeoutMs?: number;
  /** longest wait for the gateway's READY at start, restarted as each shard turns ready @default 30000 */
  loginTimeoutMs?: number;
  /** the clock that decides when an interaction token is too old, and when a review link expires @default Date.now */
  now?: () => number;
  /** the process's delivery, shared with the other adapters @default one of its own */
  delivery?: Delivery;
  /**
   * Log in to the gateway and answer interactions. false: deliver only (edit progress, post galleries
   * over REST), as a process that runs batches but takes no commands does (ROLE=worker) @default true
   */
  receive?: boolean;
}

/** Interaction tokens live 15 minutes; stop a minute early so no edit races the expiry. */
const TOKEN_LIFETIME_MS = 14 * 60_000;
/** Gallery uploads can be large; @discordjs/rest's default of 15 s is for small JSON calls. */
const REQUEST_TIMEOUT_MS = 60_000;

/**
 * REST through Node's own fetch. @discordjs/rest otherwise sends through its bundled undici 6, on
 * whatever undici holds the process-wide dispatcher: once @slack/bolt has loaded undici 7 first
 * (its Socket Mode client does, on import), every upload fails there with "action is not a function"
 * — undici 7 cannot read the FormData a gallery page is sent as. Node's fetch and FormData match.
 */
const restOptions = (api: string) => ({ api, timeout: REQUEST_TIMEOUT_MS, makeRequest: fetch });

export async function createDiscordAdapter(app: App, options: DiscordOptions = {}): Promise<ChatAdapter> {
  const config = app.config.discord;
  if (!config) throw new Error('Discord is not configured: set DISCORD_TOKEN and DISCORD_APP_ID');
  const log = app.logger;

  if (options.receive === false) return startDelivery(app, config, options);

  const client = new Client({
    intents: [GatewayIntentBits.Guilds],
    rest: restOptions(config.apiUrl),
    allowedMentions: NO_MENTIONS,
    ...shardOptions(app.config.discordShards),
  });
  const transport = createTransport({
    rest: client.rest,
    applicationId: config.appId,
    ...(options.now ? { now: options.now } : {}),
    onTokenDropped: (messageId, error) =>
      log.info({ message: messageId, err: describeError(error) }, 'discord interaction token expired; editing with the bot token'),
  });

  try {
    // A gateway that never says READY must not hang start-up for ever.
    const ready = readyWithin(client, options.loginTimeoutMs ?? 30_000);
    const login = client.login(config.token);
    void login.catch(() => undefined);
    void ready.catch(() => undefined);
    await Promise.all([login, ready]);
  } catch (error) {
    await client.destroy();
    // discord.js's messages name no token, but the error is rebuilt (without its cause) to be sure.
    // eslint-disable-next-line preserve-caught-error -- the cause could carry request details; its message is kept
    throw new Error(`Discord login failed: ${String(describeError(error)['message'])}`);
  }
  // After login discord.js has resolved `auto` and the ids: what this process runs, as numbers.
  log.info(
    { user: client.user?.tag, api: config.apiUrl, shards: client.ws.shards.map((shard) => shard.id), shardCount: client.options.shardCount },
    'discord adapter ready',
  );

  // Delivery starts once the client can send: it first posts what a restart cut off.
  const courier = registerDelivery(app, transport, options);
  const inFlight = new Set<Promise<unknown>>();
  const deps = {
    app,
    courier,
    transport,
    tokenLifetimeMs: options.tokenLifetimeMs ?? TOKEN_LIFETIME_MS,
    fetchAttachment: attachmentFetcher(config.apiUrl, app.fetchFile),
    now: options.now ?? Date.now,
  };
  client.on(Events.InteractionCreate, (interaction) => {
    const work = handleInteraction(interaction, deps);
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  });
  client.on(Events.Error, (error) => log.error({ err: describeError(error) }, 'discord client error'));

  let stopped = false;
  return {
    name: 'discord',
    healthy: () => !stopped && client.isReady(),
    async stop() {
      if (stopped) return;
      stopped = true;
      client.removeAllListeners(Events.InteractionCreate);
      // No new commands; answers under way, then delivery's work in flight, may finish (bounded).
      await Promise.race([Promise.allSettled([...inFlight]), sleep(options.stopTimeoutMs ?? 5000, undefined, { ref: false })]);
      await courier.stop();
      await client.destroy();
    },
  };
}

export const startDiscord = createDiscordAdapter;

function registerDelivery(app: App, transport: Transport, options: DiscordOptions) {
  const delivery = options.delivery ?? new Delivery(app);
  return delivery.register(
    discordPlatform({
      transport,
      images: app.files,
      sheets: { renderer: app.sheets, inlineMax: app.config.galleryInlineMax, reviewPage: app.config.review !== undefined },
      ...(options.editIntervalMs ? { editIntervalMs: options.editIntervalMs } : {}),
    }),
    { stopTimeoutMs: options.stopTimeoutMs ?? 5000 },
  );
}

/**
 * Delivery without the gateway: REST with the bot token, which is all an edit or a gallery needs.
 * Healthy until stopped — it holds no connection that could drop (a failing call is delivery's to retry).
 */
function startDelivery(app: App, config: NonNullable<Config['discord']>, options: DiscordOptions): ChatAdapter {
  const rest = new REST(restOptions(config.apiUrl)).setToken(config.token);
  const transport = createTransport({ rest, applicationId: config.appId, ...(options.now ? { now: options.now } : {}) });
  const courier = registerDelivery(app, transport, options);
  app.logger.info({ api: config.apiUrl }, 'discord delivery started (no gateway: this process takes no commands)');
  let stopped = false;
  return {
    name: 'discord',
    healthy: () => !stopped,
    async stop() {
      if (stopped) return;
      stopped = true;
      await courier.stop();
      rest.clearHashSweeper();
      rest.clearHandlerSweeper();
    },
  };
}

/**
 * discord.js's internal sharding: one gateway connection per shard id in this client. Without
 * DISCORD_SHARDS nothing is passed, so discord.js keeps its own default (one shard, or what a
 * ShardingManager hands it). With ids the count must go too: discord.js would otherwise take the
 * number of ids for the total and route guilds to the wrong process.
 */
export function shardOptions(shards: Config['discordShards']): Pick<ClientOptions, 'shards' | 'shardCount'> {
  if (!shards) return {};
  if (shards.count === 'auto') return { shards: 'auto' };
  return { shards: shards.ids ?? Array.from({ length: shards.count }, (_, id) => id), shardCount: shards.count };
}

/**
 * Resolves at ClientReady (every shard of this client ready). The wait restarts whenever a shard
 * turns ready: discord.js spaces IDENTIFYs 5 s apart per max_concurrency bucket, so a process running
 * many shards may take longer in total than a fixed timeout allows, while a silent gateway still fails.
 */
function readyWithin(client: Client, timeoutMs: number): Promise<void> {
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => abort.abort(new Error(`no gateway READY within ${timeoutMs} ms`)), timeoutMs);
    // Like AbortSignal.timeout: after a failed login nothing else waits on it, so it must not hold the process.
    timer.unref();
  };
  arm();
  client.on(Events.ShardReady, arm);
  return once(client, Events.ClientReady, { signal: abort.signal })
    .then(() => undefined)
    .finally(() => {
      clearTimeout(timer);
      client.off(Events.ShardReady, arm);
    });
}
