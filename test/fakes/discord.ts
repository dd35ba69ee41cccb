/**
 * A fake of Discord's REST API (v10) and gateway, good enough to drive the real discord.js client.
 *
 *   const fake = await startFakeDiscord({ token: 'fake-bot-token' });
 *   const client = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: fake.apiUrl } });
 *   await client.login('fake-bot-token');            // GET /gateway/bot → ws → HELLO/IDENTIFY/READY
 *   const { id } = fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox', count: 4 } });
 *   await fake.waitForCall('PATCH /webhooks/:app/:token/messages/:m');
 *
 * One node:http server carries REST (`/api/v10/...`), attachment downloads (`/attachments/...`) and
 * the gateway (a `ws` server on the same port). Every REST call is recorded in `fake.calls`.
 * The gateway takes any number of sessions, each IDENTIFYing as a shard `[id, count]`, and sends each
 * only its shard's guilds and interactions (`fake.interaction(id).deliveries` says on which session).
 * Modals: an interaction answered with a modal (callback type 9, checked as Discord checks it) can be
 * submitted with `submitModal`, which sends the MODAL_SUBMIT interaction (type 5) the client would.
 * Faults: `expireTokensAfter`, `rateLimitNext`, `failNext`, `delayNext`, `disconnectGateway`.
 *
 * As strict as Discord where a bug of ours would otherwise pass unseen: a bot-token route without the
 * right `Authorization: Bot <token>` gets 401 `{ message: '401: Unauthorized', code: 0 }` (discord.js
 * then drops its token, as it would against Discord, so only a client with a wrong token ever sees
 * it); a malformed `allowed_mentions` gets 400 Invalid Form Body (50035); and an edit's
 * `allowed_mentions` applies to that edit only — one that omits it is recorded without it, because
 * Discord then parses the new content's mentions with its defaults (everyone, roles, users).
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { deflateSync } from 'node:zlib';
import { WebSocketServer, type WebSocket } from 'ws';
import { buffer as readBody } from 'node:stream/consumers';

// ---------------------------------------------------------------------------------------------
// Public types

/** A JSON object as Discord sends and receives it. */
export type JsonObject = Record<string, any>;

export interface FakeGuildChannelInit {
  id?: string;
  name?: string;
  /** Channel type: 0 text (default), 2 voice, 4 category, 5 announcement, 15 forum. */
  type?: number;
}

export interface FakeGuildInit {
  id?: string;
  name?: string;
  channels?: FakeGuildChannelInit[];
  /** Permissions of @everyone (the bot has no other role), as a bitfield. Default: see DEFAULT_BOT_PERMISSIONS. */
  everyonePermissions?: bigint | string | number;
}

export interface FakeDiscordOptions {
  /** Expected bot token (IDENTIFY and `Authorization: Bot <token>`). Unset: the first one presented (REST or IDENTIFY) is adopted. */
  token?: string;
  /**
   * Answer 401 to bot-token REST calls whose `Authorization: Bot <token>` is missing or wrong, as Discord
   * does (discord.js then drops its token). `false` only records the mismatch in `call.authOk`.
   * @default true
   */
  strictToken?: boolean;
  /** Application id (= the bot user's id, as on Discord). Default: a fresh snowflake. */
  applicationId?: string;
  botUsername?: string;
  /** Guilds delivered as GUILD_CREATE after READY. Default: one guild with one text channel. `[]` = none. */
  guilds?: FakeGuildInit[];
  /** HELLO heartbeat_interval in ms (default 41250; discord.js sends its first beat after interval × random). */
  heartbeatIntervalMs?: number;
  /**
   * The shard count `GET /gateway/bot` recommends (what discord.js runs with `shards: 'auto'`).
   * Whatever count a session identifies with, it receives the events of the guilds its `[id, count]`
   * owns: `(guild_id >> 22) % count === id`; DMs go to shard 0.
   * @default 1
   */
  shards?: number;
  /**
   * `session_start_limit.max_concurrency`: how many shards may IDENTIFY in the same 5 s. discord.js
   * waits 5 s between the IDENTIFYs of one bucket (`shard id % max_concurrency`), so tests that start
   * several shards in one client raise it to their count.
   * @default 1
   */
  maxConcurrency?: number;
  /** Time an interaction may take to be acknowledged (callback) before 404 Unknown interaction (default 3000). */
  ackWindowMs?: number;
  /** Lifetime of interaction tokens for webhook calls (default 15 min); see also expireTokensAfter(). */
  tokenTtlMs?: number;
  /** `attachment_size_limit` sent with interactions and enforced per file (default 10 MiB). */
  attachmentSizeLimit?: number;
  /** Validate message payloads like Discord does (content length, embeds, attachments, components, allowed_mentions). Default true. */
  validate?: boolean;
  /** Round the Retry-After header up to whole seconds, as discord.com does. Default false (exact, e.g. 0.05). */
  integerRetryAfterHeader?: boolean;
  /** Receives one line per REST call / gateway event, for debugging. */
  log?: (line: string) => void;
}

export interface RecordedFile {
  /** Form field name, e.g. `files[0]`. */
  field: string;
  name: string;
  contentType: string;
  size: number;
  bytes: Buffer;
}

export interface RecordedCall {
  /** Sequence number in `fake.calls`. */
  index: number;
  method: string;
  /** Decoded path relative to `/api/v10`, e.g. `/webhooks/123/tok/messages/@original`. */
  path: string;
  /** Matched route template, e.g. `PATCH /webhooks/:app/:token/messages/:m` (or `METHOD path` when unknown). */
  route: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  /** Parsed JSON body; for multipart, the parsed `payload_json`. */
  body: JsonObject | unknown[] | null;
  /** Files of a multipart body. */
  files: RecordedFile[];
  /** Epoch ms when the request arrived. */
  at: number;
  /** Whether `Authorization: Bot <token>` matched (undefined on token-less routes). */
  authOk?: boolean;
  /** The interaction this call answers (callbacks and interaction webhooks). */
  interactionId?: string;
  /** ms between the interaction's dispatch and this call. */
  sinceDispatchMs?: number;
  /** Set when the response was sent. */
  status?: number;
  response?: unknown;
  /** Which injected fault answered, if any. */
  fault?: 'rate-limit' | 'fail' | 'expired-token';
}

export interface FakeAttachment {
  id: string;
  filename: string;
  size: number;
  url: string;
  proxy_url: string;
  content_type: string;
  width?: number;
  height?: number;
  description?: string;
  title?: string;
  ephemeral?: boolean;
}

export interface FakeMessage {
  id: string;
  channel_id: string;
  guild_id?: string;
  author: JsonObject;
  content: string;
  embeds: JsonObject[];
  components: JsonObject[];
  attachments: FakeAttachment[];
  flags: number;
  /**
   * What the latest create or edit of this message sent (null: it sent none, so Discord parsed that
   * content's mentions with its defaults). Never carried over from an earlier edit. Discord itself
   * does not return this field; it is the fake's record.
   */
  allowed_mentions?: JsonObject | null;
  timestamp: string;
  edited_timestamp: string | null;
  type: number;
  mention_everyone: boolean;
  mentions: JsonObject[];
  mention_roles: string[];
  pinned: boolean;
  tts: boolean;
  webhook_id?: string;
  application_id?: string;
  interaction_metadata?: JsonObject;
  message_reference?: JsonObject;
  [key: string]: unknown;
}

/** One state of a message, kept for every create / edit. */
export interface FakeMessageVersion {
  at: number;
  content: string;
  embeds: JsonObject[];
  components: JsonObject[];
  attachments: FakeAttachment[];
  flags: number;
  /** The `allowed_mentions` the request that made this version sent (null: none). */
  allowed_mentions: JsonObject | null;
  via: string;
}

export interface FakeUser {
  id: string;
  username: string;
  global_name: string | null;
  discriminator: string;
  avatar: string | null;
  bot?: boolean;
}

export interface InteractionCallbackRecord {
  /** 4 reply, 5 defer, 6 deferred update, 7 update, 8 autocomplete, 9 modal. */
  type: number;
  data: JsonObject | null;
  files: RecordedFile[];
  at: number;
  sinceDispatchMs: number;
  status: number;
  withResponse: boolean;
}

export interface FakeInteraction {
  id: string;
  token: string;
  applicationId: string;
  /** 2 application command, 3 message component, 5 modal submit. */
  type: number;
  commandName?: string;
  customId?: string;
  channelId: string;
  guildId: string | null;
  user: FakeUser;
  dispatchedAt: number;
  payload: JsonObject;
  callbacks: InteractionCallbackRecord[];
  acknowledged: boolean;
  /** The modal this interaction was answered with (callback type 9), as sent. */
  modal?: JsonObject;
  /** Message that `@original` refers to (the reply, the deferred message, or the component's message). */
  originalMessageId?: string;
  followUpIds: string[];
  forceExpired: boolean;
  /** The gateway sessions INTERACTION_CREATE was sent on: those whose shard owns the guild (shard 0 for a DM). */
  deliveries: GatewayDelivery[];
}

/** One gateway session as the fake sees it. */
export interface GatewayDelivery {
  sessionId: string;
  /** `[shard id, shard count]` from the session's IDENTIFY. */
  shard: [number, number];
}

export interface DispatchedInteraction {
  id: string;
  token: string;
  applicationId: string;
  channelId: string;
  guildId: string | null;
  payload: JsonObject;
  /** The gateway sessions it was sent on. */
  deliveries: GatewayDelivery[];
}

export type CommandOptionValue = string | number | boolean;

export interface SendCommandOptions {
  name: string;
  /** `{ prompt: 'x', count: 12 }` (types from the registered command, else inferred) or raw API options. */
  options?: Record<string, CommandOptionValue> | JsonObject[];
  user?: Partial<FakeUser>;
  /** Guild id; `null` sends a DM interaction (no member). Default: the first fake guild. */
  guildId?: string | null;
  channelId?: string;
  /** Bitfield of the member's permissions (default: DEFAULT_MEMBER_PERMISSIONS). */
  memberPermissions?: bigint | string | number;
  appPermissions?: bigint | string | number;
  locale?: string;
  /** Command type (1 chat input, 2 user, 3 message). */
  commandType?: number;
  resolved?: JsonObject;
  /**
   * Files the user attached, by option name: each becomes an ATTACHMENT option (type 11) whose value
   * is the attachment id, described in `resolved.attachments`, and served from `/attachments/...`
   * (or announced at `url` instead, which the fake does not serve).
   */
  attachments?: Record<string, { filename: string; bytes: Buffer; contentType?: string; url?: string; size?: number }>;
}

export interface PressButtonOptions {
  customId: string;
  messageId: string;
  user?: Partial<FakeUser>;
  memberPermissions?: bigint | string | number;
  appPermissions?: bigint | string | number;
  /** Default: the message's guild; `null` for a DM. */
  guildId?: string | null;
  /** Default: the message's channel. */
  channelId?: string;
  /** 2 button (default), 3 string select, ... */
  componentType?: number;
  values?: string[];
  locale?: string;
}

export interface SubmitModalOptions {
  /** The interaction that was answered with the modal (a command or a button press). */
  interactionId: string;
  /** What the user typed, by text input custom id; a field left out is submitted empty. */
  values: Record<string, string>;
  /** The member's permissions as they are now (default: as when the modal was opened). */
  memberPermissions?: bigint | string | number;
}

/**
 * A route pattern: `'PATCH /channels/:c/messages/:m'`, `'PATCH /webhooks/*'` (`*` or `…` at the end
 * matches the rest), a RegExp tested against `'METHOD /path'`, or a predicate.
 */
export type RouteMatcher = string | RegExp | ((call: RecordedCall) => boolean);

export interface RateLimitSpec {
  route: RouteMatcher;
  /** Seconds (fractional allowed), default 0.05. */
  retryAfterSeconds?: number;
  /** How many matching calls get a 429 (default 1). */
  times?: number;
  global?: boolean;
  scope?: 'user' | 'shared' | 'global';
}

export interface FailSpec {
  route: RouteMatcher;
  status: number;
  body?: unknown;
  times?: number;
  headers?: Record<string, string>;
}

export interface DelaySpec {
  route: RouteMatcher;
  ms: number;
  times?: number;
}

export interface WaitOptions {
  timeoutMs?: number;
  /** Shown in the timeout error. */
  description?: string;
}

export interface FakeDiscord {
  readonly port: number;
  /** `http://127.0.0.1:PORT` */
  readonly baseUrl: string;
  /** `http://127.0.0.1:PORT/api`: pass as discord.js `rest.api`. */
  readonly apiUrl: string;
  /** `ws://127.0.0.1:PORT` */
  readonly gatewayUrl: string;
  readonly applicationId: string;
  readonly botUser: FakeUser;
  /** The user that sends commands and presses buttons unless told otherwise. */
  readonly defaultUser: FakeUser;
  readonly defaultGuildId: string | null;
  readonly defaultChannelId: string;
  /** Every REST call, in arrival order. */
  readonly calls: RecordedCall[];
  /** IDENTIFY payloads (`d`) received. */
  readonly identifies: JsonObject[];
  /** 401/403/429 answers given (Discord bans an IP at 10,000 per 10 minutes). */
  readonly invalidRequestCount: number;
  /** Heartbeats (op 1) received and acknowledged. */
  readonly heartbeatCount: number;
  /** Listen to 'call' (RecordedCall, after the answer), 'message' (FakeMessage), 'dispatch' ({t, d}), 'change'. */
  readonly events: EventEmitter;

  callsTo(matcher: RouteMatcher): RecordedCall[];
  messages(channelId?: string): FakeMessage[];
  message(id: string): FakeMessage | undefined;
  messageHistory(id: string): FakeMessageVersion[];
  attachmentBytes(attachmentId: string): Buffer | undefined;
  interaction(idOrToken: string): FakeInteraction | undefined;
  commands(guildId?: string): JsonObject[];

  sendCommand(options: SendCommandOptions): DispatchedInteraction;
  pressButton(options: PressButtonOptions): DispatchedInteraction;
  /**
   * Submits the modal an interaction was answered with, as the user who opened it: a MODAL_SUBMIT
   * interaction (type 5) carrying each text input's value, and the message when the modal was opened
   * from a component. Throws, as the client would refuse to submit, for a field the modal does not
   * have, a required field left empty, or a value outside its length limits.
   */
  submitModal(options: SubmitModalOptions): DispatchedInteraction;
  /**
   * Sends any dispatch (op 0): to the sessions whose shard owns `d.guild_id`, or to every identified
   * session when it names no guild.
   */
  dispatch(t: string, d: unknown): void;
  /** Closes every gateway socket with `code` (default 4000, resumable); discord.js reconnects and RESUMEs. */
  disconnectGateway(code?: number): void;
  /** Whether a gateway session has identified (or resumed) and is open; with `shardId`, one running that shard. */
  hasSession(shardId?: number): boolean;
  /** The open, identified gateway sessions, in the order they identified. */
  sessions(): GatewayDelivery[];

  expireTokensAfter(ms: number): void;
  expireToken(idOrToken: string): void;
  rateLimitNext(spec: RateLimitSpec): void;
  failNext(spec: FailSpec): void;
  delayNext(spec: DelaySpec): void;
  /** Sets a message's timestamp back, e.g. to check what the bot does with old messages. */
  ageMessage(id: string, ms: number): void;

  /** Resolves with the predicate's first truthy result, re-checked on every recorded change. */
  waitFor<T>(predicate: (fake: FakeDiscord) => T | undefined | null | false, options?: WaitOptions): Promise<T>;
  /** Resolves with the first call (at index ≥ `from`) that matches. */
  waitForCall(matcher: RouteMatcher, options?: WaitOptions & { from?: number }): Promise<RecordedCall>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Constants

const API_PREFIX = '/api/v10';
const DISCORD_EPOCH = 1420070400000n;

/** Message flags used here. */
export const MessageFlag = {
  SuppressEmbeds: 1 << 2,
  Ephemeral: 1 << 6,
  Loading: 1 << 7,
  SuppressNotifications: 1 << 12,
  IsComponentsV2: 1 << 15,
} as const;

const P = (bit: number): bigint => 1n << BigInt(bit);
/** ViewChannel, SendMessages, EmbedLinks, AttachFiles, ReadMessageHistory, UseApplicationCommands, SendMessagesInThreads. */
export const DEFAULT_MEMBER_PERMISSIONS = (P(10) | P(11) | P(14) | P(15) | P(16) | P(31) | P(38)).toString();
/** The member defaults plus ManageMessages, AddReactions, UseExternalEmojis. */
export const DEFAULT_BOT_PERMISSIONS = (BigInt(DEFAULT_MEMBER_PERMISSIONS) | P(13) | P(6) | P(18)).toString();
/** ManageGuild: a reviewer-style permission, handy in tests. */
export const PERMISSION_MANAGE_GUILD = P(5).toString();
export const PERMISSION_ADMINISTRATOR = P(3).toString();

// ---------------------------------------------------------------------------------------------
// Helpers

let snowflakeIncrement = 0n;
/** A real-looking snowflake (19 digits today): @discordjs/rest only buckets ids of 17–19 digits. */
export function snowflake(at: number = Date.now()): string {
  snowflakeIncrement = (snowflakeIncrement + 1n) & 0xfffn;
  return (((BigInt(at) - DISCORD_EPOCH) << 22n) | (1n << 17n) | snowflakeIncrement).toString();
}

/** The shard that receives a guild's events, as Discord computes it. */
export function shardOf(guildId: string, shardCount: number): number {
  return Number((BigInt(guildId) >> 22n) % BigInt(shardCount));
}

/** A fresh snowflake that `shardOf` puts on `shardId` of `shardCount` (its timestamp moved back a little). */
export function snowflakeOnShard(shardId: number, shardCount: number, at: number = Date.now()): string {
  const off = (shardOf(snowflake(at), shardCount) - shardId + shardCount) % shardCount;
  return snowflake(at - off);
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(`Discord fake ${status}`);
  }
}

const errors = {
  unknownMessage: () => new ApiError(404, { message: 'Unknown Message', code: 10008 }),
  unknownChannel: () => new ApiError(404, { message: 'Unknown Channel', code: 10003 }),
  unknownWebhook: () => new ApiError(404, { message: 'Unknown Webhook', code: 10015 }),
  unknownInteraction: () => new ApiError(404, { message: 'Unknown interaction', code: 10062 }),
  unknownCommand: () => new ApiError(404, { message: 'Unknown application command', code: 10063 }),
  unknownGuild: () => new ApiError(404, { message: 'Unknown Guild', code: 10004 }),
  alreadyAcked: () => new ApiError(400, { message: 'Interaction has already been acknowledged.', code: 40060 }),
  invalidWebhookToken: () => new ApiError(401, { message: 'Invalid Webhook Token', code: 50027 }),
  unauthorized: () => new ApiError(401, { message: '401: Unauthorized', code: 0 }),
  notFound: () => new ApiError(404, { message: '404: Not Found', code: 0 }),
  emptyMessage: () => new ApiError(400, { message: 'Cannot send an empty message', code: 50006 }),
  tooLarge: () => new ApiError(413, { message: 'Request entity too large', code: 40005 }),
  otherAuthor: () => new ApiError(403, { message: 'Cannot edit a message authored by another user', code: 50005 }),
  invalidForm: (errs: JsonObject) => new ApiError(400, { message: 'Invalid Form Body', code: 50035, errors: errs }),
};

function formError(path: string[], code: string, message: string): JsonObject {
  const root: JsonObject = {};
  let node = root;
  for (const key of path) {
    const next: JsonObject = {};
    node[key] = next;
    node = next;
  }
  node['_errors'] = [{ code, message }];
  return root;
}

const MENTION_TYPES = ['roles', 'users', 'everyone'];
const SNOWFLAKE = /^\d{17,20}$/;

/**
 * Discord's checks of `allowed_mentions`, as the Invalid Form Body errors it answers (the first one
 * found); undefined when it is absent or well formed.
 */
export function allowedMentionsErrors(value: unknown): JsonObject | undefined {
  if (value === undefined || value === null) return undefined;
  const at = ['allowed_mentions'];
  if (!isObject(value)) return formError(at, 'DICT_TYPE_CONVERT', 'Only dictionaries may be used in a DictType');
  const parse = value['parse'];
  if (parse !== undefined && parse !== null) {
    if (!Array.isArray(parse)) return formError([...at, 'parse'], 'LIST_TYPE_CONVERT', 'Only iterables may be used in a ListType');
    const bad = parse.findIndex((p) => typeof p !== 'string' || !MENTION_TYPES.includes(p));
    if (bad >= 0) return formError([...at, 'parse', String(bad)], 'BASE_TYPE_CHOICES', "Value must be one of ('roles', 'users', 'everyone').");
  }
  for (const key of ['users', 'roles']) {
    const list = value[key];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) return formError([...at, key], 'LIST_TYPE_CONVERT', 'Only iterables may be used in a ListType');
    if (list.length > 100) return formError([...at, key], 'BASE_TYPE_MAX_LENGTH', 'Must be 100 or fewer in length.');
    const bad = list.findIndex((id) => !SNOWFLAKE.test(String(id)) || (typeof id !== 'string' && typeof id !== 'number'));
    if (bad >= 0) return formError([...at, key, String(bad)], 'NUMBER_TYPE_COERCE', `Value "${String(list[bad])}" is not snowflake.`);
    if (Array.isArray(parse) && parse.includes(key) && list.length > 0) {
      return formError(at, 'MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE', `parse:["${key}"] and ${key}: [ids...] are mutually exclusive.`);
    }
  }
  const replied = value['replied_user'];
  if (replied !== undefined && replied !== null && typeof replied !== 'boolean') {
    return formError([...at, 'replied_user'], 'BASE_TYPE_BOOLEAN', 'Must be either true or false.');
  }
  return undefined;
}

function toBitfield(value: bigint | string | number | undefined, fallback: string): string {
  if (value === undefined) return fallback;
  return BigInt(value).toString();
}

/** IDENTIFY's `shard` (absent: `[0, 1]`), or undefined when Discord would close with 4010 Invalid shard. */
function parseShard(value: unknown): [number, number] | undefined {
  if (value === undefined || value === null) return [0, 1];
  if (!Array.isArray(value) || value.length !== 2) return undefined;
  const [id, count] = value as unknown[];
  if (!Number.isInteger(id) || !Number.isInteger(count)) return undefined;
  const [i, n] = [id as number, count as number];
  return n >= 1 && i >= 0 && i < n ? [i, n] : undefined;
}

/**
 * Whether an interaction sits on a message its answer may update (callbacks 6 and 7): a component's,
 * or a modal's opened from a component (its submission carries that message).
 */
function onMessage(i: FakeInteraction): boolean {
  return i.type === 3 || (i.type === 5 && i.payload['message'] !== undefined);
}

/** The text inputs of a modal, in a label (type 18) or, the older way, alone in an action row. */
function modalTextInputs(components: JsonObject[]): JsonObject[] {
  return components.flatMap((c) => {
    if (c['type'] === 18) return c['component']?.['type'] === 4 ? [c['component'] as JsonObject] : [];
    if (c['type'] === 1) return (c['components'] as JsonObject[]).filter((inner) => inner['type'] === 4);
    return [];
  });
}

/** A modal (callback type 9's data) as Discord checks it; 400 Invalid Form Body (50035) otherwise. A clone is kept. */
function checkModal(data: JsonObject | null): JsonObject {
  const fail = (path: string[], code: string, message: string): never => {
    throw errors.invalidForm(formError(['data', ...path], code, message));
  };
  const text = (value: unknown, path: string[], min: number, max: number, required: boolean) => {
    if (value === undefined && !required) return;
    if (typeof value !== 'string' || value.length < min || value.length > max) fail(path, 'BASE_TYPE_BAD_LENGTH', `Must be between ${min} and ${max} in length.`);
  };
  if (!data) return fail([], 'BASE_TYPE_REQUIRED', 'This field is required');
  text(data['custom_id'], ['custom_id'], 1, 100, true);
  text(data['title'], ['title'], 1, 45, true);
  const components = data['components'];
  if (!Array.isArray(components) || components.length < 1 || components.length > 5) fail(['components'], 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 5 in length.');
  const ids = new Set<string>();
  const textInput = (input: JsonObject, path: string[], inLabel: boolean) => {
    text(input['custom_id'], [...path, 'custom_id'], 1, 100, true);
    if (ids.has(input['custom_id'])) fail([...path, 'custom_id'], 'COMPONENT_CUSTOM_ID_DUPLICATED', 'Component custom id cannot be duplicated');
    ids.add(input['custom_id']);
    if (input['style'] !== 1 && input['style'] !== 2) fail([...path, 'style'], 'BASE_TYPE_CHOICES', 'Value must be one of (1, 2).');
    // Alone in an action row a text input carries its own label; in a Label the label is the Label's.
    text(input['label'], [...path, 'label'], 1, 45, !inLabel);
    text(input['placeholder'], [...path, 'placeholder'], 0, 100, false);
    text(input['value'], [...path, 'value'], 0, 4000, false);
    const min = input['min_length'] ?? 0;
    const max = input['max_length'] ?? 4000;
    if (!Number.isInteger(min) || min < 0 || min > 4000) fail([...path, 'min_length'], 'NUMBER_TYPE_MAX', 'int value should be between 0 and 4000.');
    if (!Number.isInteger(max) || max < 1 || max > 4000) fail([...path, 'max_length'], 'NUMBER_TYPE_MAX', 'int value should be between 1 and 4000.');
  };
  (components as JsonObject[]).forEach((c, n) => {
    const path = ['components', String(n)];
    if (c?.['type'] === 18) {
      text(c['label'], [...path, 'label'], 1, 45, true);
      text(c['description'], [...path, 'description'], 0, 100, false);
      const inner = c['component'] as JsonObject | undefined;
      if (!isObject(inner)) return fail([...path, 'component'], 'BASE_TYPE_REQUIRED', 'This field is required');
      // Selects and file uploads may sit in a Label too; only text inputs are checked in full here.
      if (inner['type'] === 4) textInput(inner, [...path, 'component'], true);
      else text(inner['custom_id'], [...path, 'component', 'custom_id'], 1, 100, true);
    } else if (c?.['type'] === 1) {
      const inner = c['components'];
      if (!Array.isArray(inner) || inner.length !== 1 || inner[0]?.['type'] !== 4) fail([...path, 'components'], 'BASE_TYPE_BAD_LENGTH', 'Must be 1 in length.');
      textInput((inner as JsonObject[])[0]!, [...path, 'components', '0'], false);
    } else if (c?.['type'] !== 10) {
      fail([...path, 'type'], 'UNION_TYPE_CHOICES', 'Value of field "type" must be one of (1, 10, 18).');
    }
  });
  return clone(data);
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function matchTemplate(template: string, path: string): Record<string, string> | null {
  const t = template.split('/');
  const p = path.split('/');
  if (t.length !== p.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < t.length; i++) {
    const ts = t[i] ?? '';
    const ps = p[i] ?? '';
    if (ts.startsWith(':')) {
      if (ps === '') return null;
      params[ts.slice(1)] = ps;
    } else if (ts !== ps) {
      return null;
    }
  }
  return params;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Compiles a route pattern such as `PATCH /channels/:c/messages/:m` or `POST /webhooks/*`. */
function compileRoutePattern(pattern: string): RegExp {
  const trimmed = pattern.trim();
  const space = trimmed.indexOf(' ');
  const method = space > 0 ? trimmed.slice(0, space).toUpperCase() : '[A-Z]+';
  let path = space > 0 ? trimmed.slice(space + 1).trim() : trimmed;
  if (path.startsWith(API_PREFIX)) path = path.slice(API_PREFIX.length);
  let tail = '';
  if (path.endsWith('*') || path.endsWith('…')) {
    path = path.slice(0, -1);
    tail = '.*';
  }
  const body = path
    .split('/')
    .map((seg) => (seg.startsWith(':') ? '[^/]+' : escapeRegExp(seg)))
    .join('/');
  return new RegExp(`^${method} ${body}${tail}$`);
}

function callMatches(matcher: RouteMatcher, call: RecordedCall): boolean {
  if (typeof matcher === 'function') return matcher(call);
  const line = `${call.method} ${call.path}`;
  if (matcher instanceof RegExp) {
    matcher.lastIndex = 0;
    if (matcher.test(line)) return true;
    matcher.lastIndex = 0;
    return matcher.test(`${call.method} ${API_PREFIX}${call.path}`) || matcher.test(call.route);
  }
  return compileRoutePattern(matcher).test(line) || matcher.trim() === call.route;
}

/** Width and height of PNG, JPEG, GIF and WebP images. */
export function imageSize(bytes: Buffer): { width: number; height: number } | undefined {
  try {
    if (bytes.length >= 24 && bytes.readUInt32BE(0) === 0x89504e47) {
      return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
    }
    if (bytes.length >= 10 && bytes.toString('latin1', 0, 3) === 'GIF') {
      return { width: bytes.readUInt16LE(6), height: bytes.readUInt16LE(8) };
    }
    if (bytes.length >= 30 && bytes.toString('latin1', 0, 4) === 'RIFF' && bytes.toString('latin1', 8, 12) === 'WEBP') {
      const chunk = bytes.toString('latin1', 12, 16);
      if (chunk === 'VP8X') {
        return { width: 1 + bytes.readUIntLE(24, 3), height: 1 + bytes.readUIntLE(27, 3) };
      }
      if (chunk === 'VP8 ') {
        return { width: bytes.readUInt16LE(26) & 0x3fff, height: bytes.readUInt16LE(28) & 0x3fff };
      }
      if (chunk === 'VP8L') {
        const b = bytes.readUInt32LE(21);
        return { width: 1 + (b & 0x3fff), height: 1 + ((b >> 14) & 0x3fff) };
      }
    }
    if (bytes.length >= 4 && bytes[0] === 0xff && bytes[1] === 0xd8) {
      let i = 2;
      while (i + 9 < bytes.length) {
        if (bytes[i] !== 0xff) return undefined;
        const marker = bytes[i + 1] ?? 0;
        const len = bytes.readUInt16BE(i + 2);
        if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
          return { height: bytes.readUInt16BE(i + 5), width: bytes.readUInt16BE(i + 7) };
        }
        i += 2 + len;
      }
    }
  } catch {
    return undefined;
  }
  return undefined;
}


async function parseBody(
  headers: IncomingHttpHeaders,
  raw: Buffer,
): Promise<{ body: JsonObject | unknown[] | null; files: RecordedFile[] }> {
  const ct = headers['content-type'] ?? '';
  if (raw.length === 0) return { body: null, files: [] };
  if (ct.startsWith('multipart/form-data')) {
    const form = await new Response(raw, { headers: { 'content-type': ct } }).formData();
    let body: JsonObject | null = null;
    const files: RecordedFile[] = [];
    for (const [field, value] of form.entries()) {
      if (typeof value === 'string') {
        if (field === 'payload_json') body = JSON.parse(value) as JsonObject;
        continue;
      }
      const bytes = Buffer.from(await value.arrayBuffer());
      files.push({
        field,
        name: value.name,
        contentType: value.type || 'application/octet-stream',
        size: bytes.length,
        bytes,
      });
    }
    return { body, files };
  }
  const text = raw.toString('utf8');
  try {
    return { body: JSON.parse(text) as JsonObject, files: [] };
  } catch {
    throw new ApiError(400, { message: '400: Bad Request', code: 50109 });
  }
}

// ---------------------------------------------------------------------------------------------
// The fake

interface StoredMessage {
  message: FakeMessage;
  interactionId?: string;
  ephemeral: boolean;
  history: FakeMessageVersion[];
}

interface FakeChannel {
  id: string;
  type: number;
  name: string;
  guildId: string | null;
  recipients?: FakeUser[];
}

interface GuildState {
  id: string;
  name: string;
  channels: FakeChannel[];
  everyonePermissions: string;
  joinedAt: string;
}

interface GatewayConn {
  ws: WebSocket;
  seq: number;
  sessionId?: string;
  identified: boolean;
  compress: boolean;
  /** `[id, count]` from IDENTIFY (or the resumed session's). */
  shard: [number, number];
}

interface HandlerCtx {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: JsonObject | unknown[] | null;
  files: RecordedFile[];
  headers: IncomingHttpHeaders;
  call: RecordedCall;
}

interface HandlerResult {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

type Handler = (ctx: HandlerCtx) => HandlerResult | Promise<HandlerResult>;

interface RouteDef {
  method: string;
  template: string;
  /** `bot`: needs `Authorization: Bot`; `none`: token in the URL (interactions, webhooks). */
  auth: 'bot' | 'none';
  handler: Handler;
}

interface PendingRateLimit extends Required<Omit<RateLimitSpec, 'scope' | 'global'>> {
  global: boolean;
  scope: string;
}

class FakeDiscordImpl implements FakeDiscord {
  port = 0;
  baseUrl = '';
  apiUrl = '';
  gatewayUrl = '';
  readonly applicationId: string;
  readonly botUser: FakeUser;
  readonly defaultUser: FakeUser;
  readonly defaultGuildId: string | null;
  readonly defaultChannelId: string;
  readonly calls: RecordedCall[] = [];
  readonly identifies: JsonObject[] = [];
  readonly events = new EventEmitter();
  invalidRequestCount = 0;
  heartbeatCount = 0;

  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private readonly conns = new Set<GatewayConn>();
  private readonly sessionState = new Map<string, { seq: number; shard: [number, number] }>();
  private readonly guilds: GuildState[];
  private readonly channels = new Map<string, FakeChannel>();
  private readonly dmChannels = new Map<string, string>();
  private readonly store = new Map<string, StoredMessage>();
  private readonly channelOrder = new Map<string, string[]>();
  private readonly attachments = new Map<string, { bytes: Buffer; contentType: string; filename: string }>();
  private readonly interactions = new Map<string, FakeInteraction>();
  private readonly tokens = new Map<string, string>();
  private readonly globalCommands: JsonObject[] = [];
  private readonly guildCommands = new Map<string, JsonObject[]>();
  private readonly routes: RouteDef[];
  private rateLimits: PendingRateLimit[] = [];
  private failures: Array<Required<Omit<FailSpec, 'headers' | 'body'>> & { body: unknown; headers: Record<string, string> }> = [];
  private delays: Array<Required<DelaySpec>> = [];
  private tokenTtlMs: number;
  private expectedToken: string | undefined;
  private closed = false;
  private readonly pendingDelays = new Set<() => void>();

  constructor(private readonly options: FakeDiscordOptions) {
    this.expectedToken = options.token;
    this.tokenTtlMs = options.tokenTtlMs ?? 15 * 60_000;
    this.applicationId = options.applicationId ?? snowflake();
    this.botUser = {
      id: this.applicationId,
      username: options.botUsername ?? 'Art Factory',
      global_name: options.botUsername ?? 'Art Factory',
      discriminator: '0',
      avatar: null,
      bot: true,
    };
    this.defaultUser = { id: snowflake(), username: 'tester', global_name: 'Tester', discriminator: '0', avatar: null };
    const guildInits = options.guilds ?? [{}];
    const joinedAt = new Date().toISOString();
    this.guilds = guildInits.map((g, gi) => {
      const id = g.id ?? snowflake();
      const channelInits = g.channels ?? [{ name: 'general' }];
      const channels = channelInits.map((c, ci) => ({
        id: c.id ?? snowflake(),
        type: c.type ?? 0,
        name: c.name ?? `channel-${ci}`,
        guildId: id,
      }));
      return {
        id,
        name: g.name ?? `Fake Guild ${gi + 1}`,
        channels,
        everyonePermissions: toBitfield(g.everyonePermissions, DEFAULT_BOT_PERMISSIONS),
        joinedAt,
      };
    });
    for (const g of this.guilds) for (const c of g.channels) this.channels.set(c.id, c);
    const firstGuild = this.guilds[0];
    this.defaultGuildId = firstGuild?.id ?? null;
    const firstText = firstGuild?.channels.find((c) => c.type === 0) ?? firstGuild?.channels[0];
    this.defaultChannelId = firstText?.id ?? this.dmChannelFor(this.defaultUser);

    this.events.setMaxListeners(0);
    this.routes = this.buildRoutes();
    this.server = createServer((req, res) => {
      this.handleHttp(req, res).catch((err: unknown) => {
        this.log(`internal error: ${String(err)}`);
        if (!res.headersSent) this.send(res, 500, { message: 'fake internal error', code: 0, error: String(err) });
      });
    });
    this.wss = new WebSocketServer({ server: this.server });
    this.wss.on('connection', (ws) => this.onGatewayConnection(ws));
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    this.baseUrl = `http://127.0.0.1:${this.port}`;
    this.apiUrl = `${this.baseUrl}/api`;
    this.gatewayUrl = `ws://127.0.0.1:${this.port}`;
  }

  // ----- small utilities

  private log(line: string): void {
    this.options.log?.(`[fake-discord] ${line}`);
  }

  private changed(): void {
    this.events.emit('change');
  }

  private send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
    if (status === 401 || status === 403 || status === 429) this.invalidRequestCount++;
    if (status === 204 || body === undefined) {
      // No body: a content-type of application/json here would make @discordjs/rest call res.json() on nothing.
      res.writeHead(status === 200 ? 204 : status, headers);
      res.end();
      return;
    }
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text).toString(),
      ...headers,
    });
    res.end(text);
  }

  private dmChannelFor(user: FakeUser): string {
    let id = this.dmChannels.get(user.id);
    if (!id) {
      id = snowflake();
      this.dmChannels.set(user.id, id);
      this.channels.set(id, { id, type: 1, name: '', guildId: null, recipients: [user] });
    }
    return id;
  }

  private guild(id: string | null | undefined): GuildState | undefined {
    return id ? this.guilds.find((g) => g.id === id) : undefined;
  }

  private channelJson(c: FakeChannel): JsonObject {
    if (c.type === 1) {
      return { id: c.id, type: 1, last_message_id: null, flags: 0, recipients: c.recipients ?? [] };
    }
    return {
      id: c.id,
      type: c.type,
      guild_id: c.guildId ?? undefined,
      name: c.name,
      position: 0,
      permission_overwrites: [],
      parent_id: null,
      topic: null,
      nsfw: false,
      rate_limit_per_user: 0,
      last_message_id: null,
      flags: 0,
    };
  }

  private guildCreatePayload(g: GuildState): JsonObject {
    return {
      id: g.id,
      name: g.name,
      icon: null,
      splash: null,
      discovery_splash: null,
      banner: null,
      description: null,
      owner_id: this.defaultUser.id,
      afk_channel_id: null,
      afk_timeout: 300,
      verification_level: 0,
      default_message_notifications: 0,
      explicit_content_filter: 0,
      mfa_level: 0,
      nsfw_level: 0,
      premium_tier: 0,
      premium_subscription_count: 0,
      premium_progress_bar_enabled: false,
      preferred_locale: 'en-US',
      system_channel_id: null,
      system_channel_flags: 0,
      rules_channel_id: null,
      public_updates_channel_id: null,
      safety_alerts_channel_id: null,
      vanity_url_code: null,
      application_id: null,
      max_members: 500000,
      max_video_channel_users: 25,
      features: [],
      emojis: [],
      stickers: [],
      roles: [
        {
          id: g.id,
          name: '@everyone',
          color: 0,
          colors: { primary_color: 0, secondary_color: null, tertiary_color: null },
          hoist: false,
          icon: null,
          unicode_emoji: null,
          position: 0,
          permissions: g.everyonePermissions,
          managed: false,
          mentionable: false,
          flags: 0,
        },
      ],
      joined_at: g.joinedAt,
      large: false,
      unavailable: false,
      member_count: 2,
      voice_states: [],
      members: [
        {
          user: this.botUser,
          nick: null,
          avatar: null,
          roles: [],
          joined_at: g.joinedAt,
          premium_since: null,
          deaf: false,
          mute: false,
          flags: 0,
          pending: false,
          communication_disabled_until: null,
        },
      ],
      channels: g.channels.map((c) => {
        const json = this.channelJson(c);
        delete json['guild_id'];
        return json;
      }),
      threads: [],
      presences: [],
      stage_instances: [],
      guild_scheduled_events: [],
      soundboard_sounds: [],
    };
  }

  // ----- gateway

  private gatewaySend(conn: GatewayConn, payload: JsonObject): void {
    if (conn.ws.readyState !== conn.ws.OPEN) return;
    const text = JSON.stringify(payload);
    if (conn.compress) conn.ws.send(deflateSync(Buffer.from(text)), { binary: true });
    else conn.ws.send(text);
  }

  private dispatchTo(conn: GatewayConn, t: string, d: unknown): void {
    conn.seq++;
    if (conn.sessionId) {
      const session = this.sessionState.get(conn.sessionId);
      if (session) session.seq = conn.seq;
    }
    this.gatewaySend(conn, { op: 0, t, s: conn.seq, d });
    this.log(`gateway → ${t} (s=${conn.seq})`);
    this.events.emit('dispatch', { t, d });
  }

  private onGatewayConnection(ws: WebSocket): void {
    const conn: GatewayConn = { ws, seq: 0, identified: false, compress: false, shard: [0, 1] };
    this.conns.add(conn);
    ws.on('close', () => {
      this.conns.delete(conn);
      this.changed();
    });
    ws.on('error', () => undefined);
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let payload: JsonObject;
      try {
        payload = JSON.parse(String(data)) as JsonObject;
      } catch {
        ws.close(4002, 'Error while decoding payload.');
        return;
      }
      this.onGatewayPayload(conn, payload);
    });
    this.gatewaySend(conn, {
      op: 10,
      d: { heartbeat_interval: this.options.heartbeatIntervalMs ?? 41250, _trace: ['["fake-gateway",{}]'] },
      s: null,
      t: null,
    });
  }

  private onGatewayPayload(conn: GatewayConn, payload: JsonObject): void {
    const op = payload['op'] as number;
    const d = payload['d'] as JsonObject | null;
    switch (op) {
      case 1: // heartbeat
        this.gatewaySend(conn, { op: 11, d: null, s: null, t: null });
        this.heartbeatCount++;
        this.changed();
        return;
      case 2: {
        // identify
        if (conn.identified) {
          conn.ws.close(4005, 'Already authenticated.');
          return;
        }
        const token = String(d?.['token'] ?? '');
        this.identifies.push(d ?? {});
        this.expectedToken ??= token.replace(/^Bot /, '');
        if (token.replace(/^Bot /, '') !== this.expectedToken) {
          this.log('gateway: IDENTIFY with a wrong token, closing 4004');
          conn.ws.close(4004, 'Authentication failed.');
          return;
        }
        const shard = parseShard(d?.['shard']);
        if (!shard) {
          this.log(`gateway: IDENTIFY with shard ${JSON.stringify(d?.['shard'])}, closing 4010`);
          conn.ws.close(4010, 'Invalid shard.');
          return;
        }
        conn.identified = true;
        conn.compress = d?.['compress'] === true;
        conn.shard = shard;
        conn.sessionId = randomBytes(16).toString('hex');
        this.sessionState.set(conn.sessionId, { seq: 0, shard });
        const guilds = this.guilds.filter((g) => shardOf(g.id, shard[1]) === shard[0]);
        this.dispatchTo(conn, 'READY', {
          v: 10,
          user: { ...this.botUser, verified: true, mfa_enabled: false, flags: 0, email: null },
          application: { id: this.applicationId, flags: 0 },
          session_id: conn.sessionId,
          session_type: 'normal',
          resume_gateway_url: this.gatewayUrl,
          guilds: guilds.map((g) => ({ id: g.id, unavailable: true })),
          private_channels: [],
          relationships: [],
          presences: [],
          guild_join_requests: [],
          geo_ordered_rtc_regions: [],
          user_settings: {},
          shard,
          _trace: ['["fake-gateway",{}]'],
        });
        // Separate frames, a little later, as on Discord: discord.js must have handled READY first.
        const timer = setTimeout(() => {
          for (const g of guilds) this.dispatchTo(conn, 'GUILD_CREATE', this.guildCreatePayload(g));
          this.changed();
        }, 15);
        timer.unref();
        this.changed();
        return;
      }
      case 6: {
        // resume
        const sessionId = String(d?.['session_id'] ?? '');
        const session = this.sessionState.get(sessionId);
        const token = String(d?.['token'] ?? '').replace(/^Bot /, '');
        if (!session || token !== this.expectedToken) {
          this.gatewaySend(conn, { op: 9, d: false, s: null, t: null });
          return;
        }
        conn.identified = true;
        conn.sessionId = sessionId;
        conn.seq = session.seq;
        conn.shard = session.shard;
        this.dispatchTo(conn, 'RESUMED', { _trace: ['["fake-gateway",{}]'] });
        this.changed();
        return;
      }
      default:
        // presence (3), voice (4), request guild members (8), ...: accepted and ignored.
        return;
    }
  }

  /** Open, identified connections, in the order they identified (a Set keeps insertion order; a resume is a new connection). */
  private openSessions(): GatewayConn[] {
    return [...this.conns].filter((c) => c.identified && c.ws.readyState === c.ws.OPEN);
  }

  /** The connections that receive a guild's events; a DM's (no guild) go to shard 0, as on Discord. */
  private owners(guildId: string | null): GatewayConn[] {
    return this.openSessions().filter((c) => (guildId === null ? 0 : shardOf(guildId, c.shard[1])) === c.shard[0]);
  }

  hasSession(shardId?: number): boolean {
    return this.openSessions().some((c) => shardId === undefined || c.shard[0] === shardId);
  }

  sessions(): GatewayDelivery[] {
    return this.openSessions().map((c) => ({ sessionId: c.sessionId ?? '', shard: [...c.shard] }));
  }

  dispatch(t: string, d: unknown): void {
    const guildId = isObject(d) && typeof d['guild_id'] === 'string' ? d['guild_id'] : undefined;
    this.dispatchOn(guildId === undefined ? this.openSessions() : this.owners(guildId), t, d, guildId);
  }

  /** Sends to `targets`, or throws when there are none: a test that dispatches into the void has a bug. */
  private dispatchOn(targets: GatewayConn[], t: string, d: unknown, guildId: string | null | undefined): GatewayDelivery[] {
    if (targets.length === 0) {
      const running = this.sessions().map((s) => `${s.shard[0]}/${s.shard[1]}`);
      const whose = guildId === undefined ? '' : guildId === null ? ' for a DM (shard 0)' : ` for guild ${guildId}`;
      throw new Error(
        `fake discord: no identified gateway session to send ${t} to${whose}; running shards: ${running.join(', ') || 'none'} (wait for the client's clientReady)`,
      );
    }
    for (const conn of targets) this.dispatchTo(conn, t, d);
    this.changed();
    return targets.map((c) => ({ sessionId: c.sessionId ?? '', shard: [...c.shard] }));
  }

  disconnectGateway(code = 4000): void {
    for (const conn of this.conns) conn.ws.close(code, 'fake: disconnect');
  }

  // ----- interactions (dispatch)

  private makeUser(partial: Partial<FakeUser> | undefined): FakeUser {
    if (!partial) return this.defaultUser;
    const id = partial.id ?? this.defaultUser.id;
    const base = id === this.defaultUser.id ? this.defaultUser : { username: `user${id.slice(-4)}`, global_name: null };
    return {
      id,
      username: partial.username ?? base.username,
      global_name: partial.global_name !== undefined ? partial.global_name : base.global_name,
      discriminator: partial.discriminator ?? '0',
      avatar: partial.avatar ?? null,
      ...(partial.bot !== undefined ? { bot: partial.bot } : {}),
    };
  }

  private interactionBase(args: {
    type: number;
    user: FakeUser;
    guildId: string | null;
    channelId: string;
    memberPermissions: bigint | string | number | undefined;
    appPermissions: bigint | string | number | undefined;
    locale: string | undefined;
  }): { id: string; token: string; payload: JsonObject } {
    const id = snowflake();
    const token = Buffer.from(`interaction:${id}:${randomBytes(48).toString('base64url')}`).toString('base64url');
    const perms = toBitfield(args.memberPermissions, DEFAULT_MEMBER_PERMISSIONS);
    let channel = this.channels.get(args.channelId);
    if (!channel) {
      channel = { id: args.channelId, type: args.guildId ? 0 : 1, name: 'channel', guildId: args.guildId };
      if (!args.guildId) channel.recipients = [args.user];
      this.channels.set(channel.id, channel);
    }
    const payload: JsonObject = {
      id,
      application_id: this.applicationId,
      type: args.type,
      token,
      version: 1,
      channel_id: args.channelId,
      channel: { ...this.channelJson(channel), ...(args.guildId ? { permissions: perms } : {}) },
      app_permissions: toBitfield(args.appPermissions, DEFAULT_BOT_PERMISSIONS),
      locale: args.locale ?? 'en-US',
      entitlements: [],
      authorizing_integration_owners: args.guildId ? { '0': args.guildId } : { '1': args.user.id },
      context: args.guildId ? 0 : 1,
      attachment_size_limit: this.options.attachmentSizeLimit ?? 10 * 1024 * 1024,
    };
    if (args.guildId) {
      payload['guild_id'] = args.guildId;
      payload['guild_locale'] = 'en-US';
      payload['guild'] = { id: args.guildId, locale: 'en-US', features: [] };
      payload['member'] = {
        user: args.user,
        roles: [],
        permissions: perms,
        joined_at: new Date(Date.now() - 86_400_000).toISOString(),
        premium_since: null,
        nick: null,
        avatar: null,
        deaf: false,
        mute: false,
        flags: 0,
        pending: false,
        communication_disabled_until: null,
        unusual_dm_activity_until: null,
      };
    } else {
      payload['user'] = args.user;
    }
    return { id, token, payload };
  }

  private register(
    base: { id: string; token: string; payload: JsonObject },
    extra: { type: number; user: FakeUser; guildId: string | null; channelId: string; commandName?: string; customId?: string; originalMessageId?: string },
  ): DispatchedInteraction {
    const record: FakeInteraction = {
      id: base.id,
      token: base.token,
      applicationId: this.applicationId,
      type: extra.type,
      channelId: extra.channelId,
      guildId: extra.guildId,
      user: extra.user,
      dispatchedAt: Date.now(),
      payload: base.payload,
      callbacks: [],
      acknowledged: false,
      followUpIds: [],
      forceExpired: false,
      deliveries: [],
      ...(extra.commandName !== undefined ? { commandName: extra.commandName } : {}),
      ...(extra.customId !== undefined ? { customId: extra.customId } : {}),
      ...(extra.originalMessageId !== undefined ? { originalMessageId: extra.originalMessageId } : {}),
    };
    const targets = this.owners(record.guildId);
    this.interactions.set(record.id, record);
    this.tokens.set(record.token, record.id);
    try {
      record.deliveries = this.dispatchOn(targets, 'INTERACTION_CREATE', base.payload, record.guildId);
    } catch (error) {
      this.interactions.delete(record.id);
      this.tokens.delete(record.token);
      throw error;
    }
    return {
      id: record.id,
      token: record.token,
      applicationId: this.applicationId,
      channelId: record.channelId,
      guildId: record.guildId,
      payload: base.payload,
      deliveries: clone(record.deliveries),
    };
  }

  private commandOptions(name: string, guildId: string | null, options: SendCommandOptions['options']): JsonObject[] | undefined {
    if (options === undefined) return undefined;
    if (Array.isArray(options)) return options;
    const registered = this.findCommand(name, guildId);
    const defs = (registered?.['options'] as JsonObject[] | undefined) ?? [];
    return Object.entries(options).map(([optName, value]) => {
      const def = defs.find((o) => o['name'] === optName);
      let type = def?.['type'] as number | undefined;
      if (type === undefined) {
        if (typeof value === 'boolean') type = 5;
        else if (typeof value === 'number') type = Number.isInteger(value) ? 4 : 10;
        else type = 3;
      }
      return { name: optName, type, value };
    });
  }

  private findCommand(name: string, guildId: string | null): JsonObject | undefined {
    const inGuild = guildId ? this.guildCommands.get(guildId)?.find((c) => c['name'] === name) : undefined;
    return inGuild ?? this.globalCommands.find((c) => c['name'] === name);
  }

  sendCommand(options: SendCommandOptions): DispatchedInteraction {
    const user = this.makeUser(options.user);
    const guildId = options.guildId === undefined ? this.defaultGuildId : options.guildId;
    const channelId =
      options.channelId ??
      (guildId
        ? (this.guild(guildId)?.channels.find((c) => c.type === 0)?.id ?? this.defaultChannelId)
        : this.dmChannelFor(user));
    const base = this.interactionBase({
      type: 2,
      user,
      guildId,
      channelId,
      memberPermissions: options.memberPermissions,
      appPermissions: options.appPermissions,
      locale: options.locale,
    });
    const registered = this.findCommand(options.name, guildId);
    const data: JsonObject = {
      id: (registered?.['id'] as string | undefined) ?? snowflake(),
      name: options.name,
      type: options.commandType ?? 1,
    };
    let opts = this.commandOptions(options.name, guildId, options.options);
    let resolved = options.resolved;
    for (const [name, upload] of Object.entries(options.attachments ?? {})) {
      const id = snowflake();
      const contentType = upload.contentType ?? 'text/plain; charset=utf-8';
      const url = upload.url ?? `${this.baseUrl}/attachments/${channelId}/${id}/${encodeURIComponent(upload.filename)}`;
      this.attachments.set(id, { bytes: upload.bytes, contentType, filename: upload.filename });
      const attachment: FakeAttachment = { id, filename: upload.filename, size: upload.size ?? upload.bytes.length, url, proxy_url: url, content_type: contentType };
      opts = [...(opts ?? []), { name, type: 11, value: id }];
      resolved = { ...resolved, attachments: { ...(resolved?.['attachments'] as JsonObject | undefined), [id]: attachment } };
    }
    if (opts) data['options'] = opts;
    if (resolved) data['resolved'] = resolved;
    if (registered?.['guild_id']) data['guild_id'] = registered['guild_id'];
    base.payload['data'] = data;
    return this.register(base, { type: 2, user, guildId, channelId, commandName: options.name });
  }

  pressButton(options: PressButtonOptions): DispatchedInteraction {
    const stored = this.store.get(options.messageId);
    if (!stored) throw new Error(`fake discord: pressButton on unknown message ${options.messageId}`);
    const user = this.makeUser(options.user);
    const channelId = options.channelId ?? stored.message.channel_id;
    const guildId =
      options.guildId === undefined ? (this.channels.get(channelId)?.guildId ?? stored.message.guild_id ?? null) : options.guildId;
    const base = this.interactionBase({
      type: 3,
      user,
      guildId,
      channelId,
      memberPermissions: options.memberPermissions,
      appPermissions: options.appPermissions,
      locale: options.locale,
    });
    const componentType = options.componentType ?? 2;
    base.payload['data'] = {
      custom_id: options.customId,
      component_type: componentType,
      ...(options.values ? { values: options.values } : {}),
    };
    base.payload['message'] = clone(stored.message);
    return this.register(base, {
      type: 3,
      user,
      guildId,
      channelId,
      customId: options.customId,
      originalMessageId: stored.message.id,
    });
  }

  submitModal(options: SubmitModalOptions): DispatchedInteraction {
    const opener = this.interactions.get(options.interactionId);
    if (!opener?.modal) throw new Error(`fake discord: interaction ${options.interactionId} was not answered with a modal`);
    const modal = opener.modal;
    const inputs = modalTextInputs(modal['components'] as JsonObject[]);
    for (const id of Object.keys(options.values)) {
      if (!inputs.some((input) => input['custom_id'] === id)) throw new Error(`fake discord: the modal has no text input "${id}"`);
    }
    for (const input of inputs) {
      const value = options.values[input['custom_id'] as string] ?? '';
      const min = Number(input['min_length'] ?? 0);
      const max = Number(input['max_length'] ?? 4000);
      if (value === '' && input['required'] !== false) throw new Error(`fake discord: the client will not submit with required field "${input['custom_id']}" empty`);
      if (value !== '' && (value.length < min || value.length > max)) {
        throw new Error(`fake discord: the client will not submit "${input['custom_id']}" of ${value.length} characters (${min}-${max})`);
      }
    }
    const submitted = (node: JsonObject): JsonObject => {
      if (node['type'] === 4) return { type: 4, id: node['id'], custom_id: node['custom_id'], value: options.values[node['custom_id'] as string] ?? '' };
      if (node['type'] === 18) return { type: 18, id: node['id'], component: submitted(node['component'] as JsonObject) };
      if (node['type'] === 1) return { type: 1, id: node['id'], components: (node['components'] as JsonObject[]).map(submitted) };
      return { type: node['type'], id: node['id'] };
    };
    const from = opener.type === 3 && opener.originalMessageId ? this.store.get(opener.originalMessageId) : undefined;
    const base = this.interactionBase({
      type: 5,
      user: opener.user,
      guildId: opener.guildId,
      channelId: opener.channelId,
      memberPermissions: options.memberPermissions ?? (opener.payload['member'] as JsonObject | undefined)?.['permissions'],
      appPermissions: opener.payload['app_permissions'],
      locale: opener.payload['locale'],
    });
    base.payload['data'] = { custom_id: modal['custom_id'], components: (modal['components'] as JsonObject[]).map(submitted) };
    if (from) base.payload['message'] = clone(from.message);
    return this.register(base, {
      type: 5,
      user: opener.user,
      guildId: opener.guildId,
      channelId: opener.channelId,
      customId: modal['custom_id'] as string,
      ...(from ? { originalMessageId: from.message.id } : {}),
    });
  }

  // ----- message store

  private isExpired(i: FakeInteraction): boolean {
    return i.forceExpired || Date.now() - i.dispatchedAt > this.tokenTtlMs;
  }

  private storeAttachment(channelId: string, file: RecordedFile, meta: JsonObject | undefined): FakeAttachment {
    const id = snowflake();
    const filename = (meta?.['filename'] as string | undefined) ?? file.name;
    const url = `${this.baseUrl}/attachments/${channelId}/${id}/${encodeURIComponent(filename)}`;
    this.attachments.set(id, { bytes: file.bytes, contentType: file.contentType, filename });
    const att: FakeAttachment = { id, filename, size: file.size, url, proxy_url: url, content_type: file.contentType };
    const size = file.contentType.startsWith('image/') || /\.(png|jpe?g|gif|webp)$/i.test(filename) ? imageSize(file.bytes) : undefined;
    if (size) {
      att.width = size.width;
      att.height = size.height;
    }
    if (typeof meta?.['description'] === 'string') att.description = meta['description'];
    if (typeof meta?.['title'] === 'string') att.title = meta['title'];
    return att;
  }

  /** The message's attachments after a create/edit: `attachments` lists what stays, files[n] are new. */
  private resolveAttachments(
    channelId: string,
    existing: FakeAttachment[],
    body: JsonObject,
    files: RecordedFile[],
  ): FakeAttachment[] {
    const limit = this.options.attachmentSizeLimit ?? 10 * 1024 * 1024;
    let total = 0;
    for (const f of files) {
      total += f.size;
      if (f.size > limit) throw errors.tooLarge();
    }
    if (total > 25 * 1024 * 1024 && limit <= 25 * 1024 * 1024) throw errors.tooLarge();
    const byIndex = new Map<string, RecordedFile>();
    files.forEach((f, i) => {
      const m = /^files\[(\d+)\]$/.exec(f.field) ?? /^file(\d*)$/.exec(f.field);
      byIndex.set(m ? m[1] || '0' : String(i), f);
    });
    const used = new Set<RecordedFile>();
    const list = body['attachments'];
    const result: FakeAttachment[] = [];
    if (Array.isArray(list)) {
      for (const entry of list as JsonObject[]) {
        const id = String(entry?.['id'] ?? '');
        const old = existing.find((a) => a.id === id);
        if (old) {
          result.push(old);
          continue;
        }
        const file = byIndex.get(id);
        if (file && !used.has(file)) {
          used.add(file);
          result.push(this.storeAttachment(channelId, file, entry));
        }
      }
    } else {
      result.push(...existing);
    }
    for (const f of files) if (!used.has(f)) result.push(this.storeAttachment(channelId, f, undefined));
    return result;
  }

  private checkAllowedMentions(body: JsonObject): void {
    if (this.options.validate === false) return;
    const errs = allowedMentionsErrors(body['allowed_mentions']);
    if (errs) throw errors.invalidForm(errs);
  }

  /** Replaces `attachment://name` in embeds and components with the stored attachment's URL. */
  private resolveAttachmentRefs(node: unknown, atts: FakeAttachment[]): void {
    if (Array.isArray(node)) {
      for (const item of node) this.resolveAttachmentRefs(item, atts);
      return;
    }
    if (!isObject(node)) return;
    const url = node['url'];
    if (typeof url === 'string' && url.startsWith('attachment://')) {
      const att = atts.find((a) => a.filename === url.slice('attachment://'.length));
      if (att) {
        node['url'] = att.url;
        node['proxy_url'] = att.proxy_url;
        if (att.width !== undefined) node['width'] = att.width;
        if (att.height !== undefined) node['height'] = att.height;
        node['content_type'] = att.content_type;
        node['attachment_id'] = att.id;
      }
    }
    for (const [key, value] of Object.entries(node)) if (key !== 'url') this.resolveAttachmentRefs(value, atts);
  }

  private numberComponents(components: JsonObject[]): void {
    let next = 1;
    const used = new Set<number>();
    const collect = (n: unknown): void => {
      if (Array.isArray(n)) n.forEach(collect);
      else if (isObject(n)) {
        if (typeof n['id'] === 'number') used.add(n['id']);
        for (const v of Object.values(n)) collect(v);
      }
    };
    collect(components);
    const assign = (n: unknown): void => {
      if (Array.isArray(n)) n.forEach(assign);
      else if (isObject(n)) {
        if (typeof n['type'] === 'number' && n['id'] === undefined) {
          while (used.has(next)) next++;
          n['id'] = next;
          used.add(next);
        }
        if (Array.isArray(n['components'])) assign(n['components']);
        if (Array.isArray(n['items'])) assign(n['items']);
        if (isObject(n['accessory'])) assign(n['accessory']);
      }
    };
    assign(components);
  }

  private validate(msg: FakeMessage, allowEmpty: boolean): void {
    if (this.options.validate === false) return;
    const v2 = (msg.flags & MessageFlag.IsComponentsV2) !== 0;
    if (v2 && (msg.content !== '' || msg.embeds.length > 0)) {
      throw errors.invalidForm(
        formError(['content'], 'MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2', 'The \'content\' and \'embeds\' fields cannot be used when using MessageFlags.IS_COMPONENTS_V2'),
      );
    }
    if (msg.content.length > 2000) {
      throw errors.invalidForm(formError(['content'], 'BASE_TYPE_MAX_LENGTH', 'Must be 2000 or fewer in length.'));
    }
    if (msg.embeds.length > 10) {
      throw errors.invalidForm(formError(['embeds'], 'BASE_TYPE_MAX_LENGTH', 'Must be 10 or fewer in length.'));
    }
    if (msg.attachments.length > 10) {
      throw errors.invalidForm(formError(['attachments'], 'BASE_TYPE_MAX_LENGTH', 'Must be 10 or fewer in length.'));
    }
    const customIds = new Set<string>();
    let count = 0;
    const walk = (n: unknown, path: string[]): void => {
      if (Array.isArray(n)) {
        n.forEach((c, i) => walk(c, [...path, String(i)]));
        return;
      }
      if (!isObject(n)) return;
      if (typeof n['type'] === 'number') count++;
      const cid = n['custom_id'];
      if (cid !== undefined) {
        if (typeof cid !== 'string' || cid.length < 1 || cid.length > 100) {
          throw errors.invalidForm(formError([...path, 'custom_id'], 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 100 in length.'));
        }
        if (customIds.has(cid)) {
          throw errors.invalidForm(formError([...path, 'custom_id'], 'COMPONENT_CUSTOM_ID_DUPLICATED', 'Component custom id cannot be duplicated'));
        }
        customIds.add(cid);
      }
      if (n['type'] === 12 && Array.isArray(n['items']) && (n['items'].length < 1 || n['items'].length > 10)) {
        throw errors.invalidForm(formError([...path, 'items'], 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 10 in length.'));
      }
      if (n['type'] === 1 && Array.isArray(n['components']) && n['components'].length > 5) {
        throw errors.invalidForm(formError([...path, 'components'], 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 5 in length.'));
      }
      for (const key of ['components', 'items', 'accessory']) if (n[key] !== undefined) walk(n[key], [...path, key]);
    };
    msg.components.forEach((c, i) => walk(c, ['components', String(i)]));
    if (!v2 && msg.components.length > 5) {
      throw errors.invalidForm(formError(['components'], 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 5 in length.'));
    }
    if (v2 && count > 40) {
      throw errors.invalidForm(formError(['components'], 'COMPONENTS_TOO_MANY', 'Must be 40 or fewer in total.'));
    }
    if (
      !allowEmpty &&
      msg.content === '' &&
      msg.embeds.length === 0 &&
      msg.components.length === 0 &&
      msg.attachments.length === 0 &&
      msg['poll'] === undefined &&
      msg['sticker_items'] === undefined
    ) {
      throw errors.emptyMessage();
    }
  }

  private normalizeEmbeds(embeds: unknown): JsonObject[] {
    if (!Array.isArray(embeds)) return [];
    return (embeds as JsonObject[]).map((e) => ({ type: 'rich', ...e }));
  }

  private addVersion(stored: StoredMessage, via: string): void {
    const m = stored.message;
    stored.history.push({
      at: Date.now(),
      content: m.content,
      embeds: clone(m.embeds),
      components: clone(m.components),
      attachments: clone(m.attachments),
      flags: m.flags,
      allowed_mentions: clone(m.allowed_mentions ?? null),
      via,
    });
    this.events.emit('message', clone(m));
  }

  private createMessage(args: {
    channelId: string;
    body: JsonObject;
    files: RecordedFile[];
    type: number;
    via: string;
    interaction?: FakeInteraction;
    loading?: boolean;
    ephemeral?: boolean;
  }): StoredMessage {
    const { channelId, body, files } = args;
    this.checkAllowedMentions(body);
    const channel = this.channels.get(channelId);
    const now = new Date();
    const id = snowflake(now.getTime());
    const allowedFlags = MessageFlag.SuppressEmbeds | MessageFlag.SuppressNotifications | MessageFlag.IsComponentsV2;
    let flags = (Number(body['flags'] ?? 0) & allowedFlags) | (args.ephemeral ? MessageFlag.Ephemeral : 0);
    if (args.loading) flags |= MessageFlag.Loading;
    const attachments = this.resolveAttachments(channelId, [], body, files);
    const components = clone((body['components'] as JsonObject[] | undefined) ?? []);
    const embeds = this.normalizeEmbeds(clone(body['embeds']));
    const message: FakeMessage = {
      id,
      channel_id: channelId,
      ...(channel?.guildId ? { guild_id: channel.guildId } : {}),
      author: { ...this.botUser, public_flags: 0, flags: 0, banner: null, accent_color: null, avatar_decoration_data: null },
      content: typeof body['content'] === 'string' ? body['content'] : '',
      embeds,
      components,
      attachments,
      flags,
      allowed_mentions: clone((body['allowed_mentions'] as JsonObject | undefined) ?? null),
      timestamp: now.toISOString(),
      edited_timestamp: null,
      type: body['message_reference'] ? 19 : args.type,
      mention_everyone: false,
      mentions: [],
      mention_roles: [],
      pinned: false,
      tts: body['tts'] === true,
    };
    if (body['message_reference']) message.message_reference = clone(body['message_reference']) as JsonObject;
    if (body['poll']) message['poll'] = clone(body['poll']);
    if (args.interaction) {
      message.webhook_id = this.applicationId;
      message.application_id = this.applicationId;
      const i = args.interaction;
      message.interaction_metadata = {
        id: i.id,
        type: i.type,
        user: i.user,
        authorizing_integration_owners: clone(i.payload['authorizing_integration_owners']),
        ...(i.commandName ? { name: i.commandName, command_type: 1 } : {}),
      };
    }
    this.numberComponents(message.components);
    this.resolveAttachmentRefs(message.embeds, attachments);
    this.resolveAttachmentRefs(message.components, attachments);
    this.validate(message, args.loading === true);
    const stored: StoredMessage = {
      message,
      ephemeral: (flags & MessageFlag.Ephemeral) !== 0,
      history: [],
      ...(args.interaction ? { interactionId: args.interaction.id } : {}),
    };
    this.store.set(id, stored);
    const order = this.channelOrder.get(channelId) ?? [];
    order.push(id);
    this.channelOrder.set(channelId, order);
    this.addVersion(stored, args.via);
    return stored;
  }

  private editMessage(stored: StoredMessage, body: JsonObject, files: RecordedFile[], via: string): void {
    this.checkAllowedMentions(body);
    const current = stored.message;
    const next: FakeMessage = clone(current);
    if ('content' in body) next.content = typeof body['content'] === 'string' ? body['content'] : '';
    if ('embeds' in body) next.embeds = this.normalizeEmbeds(clone(body['embeds']));
    if ('components' in body) next.components = clone((body['components'] as JsonObject[] | null) ?? []);
    // Per request, as on Discord: an edit without allowed_mentions gets the defaults, not the last edit's.
    next.allowed_mentions = clone((body['allowed_mentions'] as JsonObject | null | undefined) ?? null);
    const wasLoading = (current.flags & MessageFlag.Loading) !== 0;
    let flags = current.flags & ~MessageFlag.Loading;
    if ('flags' in body && body['flags'] !== null && body['flags'] !== undefined) {
      const requested = Number(body['flags']);
      const editable = MessageFlag.SuppressEmbeds | MessageFlag.IsComponentsV2;
      // Ephemeral can't change, Components V2 can't be removed once set.
      flags = (flags & ~editable) | (requested & editable) | (current.flags & MessageFlag.IsComponentsV2);
    }
    next.flags = flags;
    if ('attachments' in body || files.length > 0) {
      next.attachments = this.resolveAttachments(next.channel_id, current.attachments, body, files);
    }
    if (!wasLoading) next.edited_timestamp = new Date().toISOString();
    this.numberComponents(next.components);
    this.resolveAttachmentRefs(next.embeds, next.attachments);
    this.resolveAttachmentRefs(next.components, next.attachments);
    this.validate(next, false);
    stored.message = next;
    this.addVersion(stored, via);
  }

  private deleteMessage(id: string): void {
    const stored = this.store.get(id);
    if (!stored) return;
    this.store.delete(id);
    const order = this.channelOrder.get(stored.message.channel_id);
    if (order) this.channelOrder.set(stored.message.channel_id, order.filter((m) => m !== id));
  }

  // ----- HTTP

  private async handleHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const method = (req.method ?? 'GET').toUpperCase();
    const fullPath = url.pathname.split('/').map(safeDecode).join('/');

    if (fullPath.startsWith('/attachments/')) {
      const id = fullPath.split('/')[3] ?? '';
      const att = this.attachments.get(id);
      if (!att) {
        this.send(res, 404, { message: '404: Not Found', code: 0 });
        return;
      }
      res.writeHead(200, { 'content-type': att.contentType, 'content-length': att.bytes.length.toString() });
      res.end(att.bytes);
      return;
    }

    const raw = await readBody(req);
    const call: RecordedCall = {
      index: this.calls.length,
      method,
      path: fullPath.startsWith(API_PREFIX) ? fullPath.slice(API_PREFIX.length) : fullPath,
      route: '',
      query: Object.fromEntries(url.searchParams.entries()),
      headers: req.headers,
      body: null,
      files: [],
      at: Date.now(),
    };
    call.route = `${method} ${call.path}`;
    this.calls.push(call);

    let result: HandlerResult;
    try {
      if (!fullPath.startsWith(`${API_PREFIX}/`)) throw errors.notFound();
      const parsed = await parseBody(req.headers, raw);
      call.body = parsed.body;
      call.files = parsed.files;

      let route: RouteDef | undefined;
      let params: Record<string, string> | null = null;
      for (const r of this.routes) {
        if (r.method !== method) continue;
        params = matchTemplate(r.template, call.path);
        if (params) {
          route = r;
          break;
        }
      }
      if (route) call.route = `${method} ${route.template}`;
      this.linkInteraction(call, params);
      this.changed(); // the call is visible (without a status) while it is delayed or handled


      await this.applyDelay(call);
      const fault = this.takeFault(call);
      if (fault) {
        result = fault;
      } else {
        if (!route || !params) throw errors.notFound();
        if (route.auth === 'bot') this.checkBotAuth(call);
        result = await route.handler({
          method,
          path: call.path,
          params,
          query: url.searchParams,
          body: call.body,
          files: call.files,
          headers: req.headers,
          call,
        });
      }
    } catch (err) {
      if (err instanceof ApiError) result = { status: err.status, body: err.body, headers: err.headers };
      else {
        this.log(`internal error on ${method} ${call.path}: ${String(err)}`);
        result = { status: 500, body: { message: 'fake internal error', code: 0, error: String(err) } };
      }
    }

    call.status = result.status === 200 && result.body === undefined ? 204 : result.status;
    call.response = result.body;
    if (call.status === 401 && call.interactionId && call.fault === undefined) call.fault = 'expired-token';
    this.log(`${method} ${call.path} → ${call.status}`);
    this.send(res, result.status, result.body, result.headers);
    this.events.emit('call', call);
    this.changed();
  }

  private linkInteraction(call: RecordedCall, params: Record<string, string> | null): void {
    let interaction: FakeInteraction | undefined;
    if (params?.['interaction']) interaction = this.interactions.get(params['interaction']);
    else if (params?.['token']) {
      const id = this.tokens.get(params['token']);
      interaction = id ? this.interactions.get(id) : undefined;
    }
    if (interaction) {
      call.interactionId = interaction.id;
      call.sinceDispatchMs = call.at - interaction.dispatchedAt;
    }
  }

  private checkBotAuth(call: RecordedCall): void {
    const header = call.headers['authorization'] ?? '';
    const token = header.startsWith('Bot ') && header.length > 4 ? header.slice(4) : undefined;
    // No token configured: the first one a client presents is the bot's (IDENTIFY adopts it alike).
    if (token !== undefined) this.expectedToken ??= token;
    const ok = token !== undefined && token === this.expectedToken;
    call.authOk = ok;
    if (!ok && this.options.strictToken !== false) throw errors.unauthorized();
  }

  private async applyDelay(call: RecordedCall): Promise<void> {
    const d = this.delays.find((x) => callMatches(x.route, call));
    if (!d) return;
    d.times--;
    if (d.times <= 0) this.delays = this.delays.filter((x) => x !== d);
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.pendingDelays.delete(done);
        resolve();
      };
      const timer = setTimeout(done, d.ms);
      this.pendingDelays.add(done);
    });
  }

  private takeFault(call: RecordedCall): HandlerResult | undefined {
    const rl = this.rateLimits.find((x) => callMatches(x.route, call));
    if (rl) {
      rl.times--;
      if (rl.times <= 0) this.rateLimits = this.rateLimits.filter((x) => x !== rl);
      call.fault = 'rate-limit';
      const ra = rl.retryAfterSeconds;
      const header = this.options.integerRetryAfterHeader ? String(Math.ceil(ra)) : String(ra);
      const headers: Record<string, string> = {
        'retry-after': header,
        'x-ratelimit-scope': rl.scope,
      };
      if (rl.global) {
        headers['x-ratelimit-global'] = 'true';
      } else {
        headers['x-ratelimit-limit'] = '5';
        headers['x-ratelimit-remaining'] = '0';
        headers['x-ratelimit-reset'] = ((Date.now() + ra * 1000) / 1000).toFixed(3);
        headers['x-ratelimit-reset-after'] = ra.toFixed(3);
        headers['x-ratelimit-bucket'] = `fake${Buffer.from(call.route).toString('hex').slice(0, 24)}`;
      }
      return {
        status: 429,
        body: { message: 'You are being rate limited.', retry_after: ra, global: rl.global, ...(rl.global ? { code: 0 } : {}) },
        headers,
      };
    }
    const f = this.failures.find((x) => callMatches(x.route, call));
    if (f) {
      f.times--;
      if (f.times <= 0) this.failures = this.failures.filter((x) => x !== f);
      call.fault = 'fail';
      return { status: f.status, body: f.body, headers: f.headers };
    }
    return undefined;
  }

  // ----- routes

  private buildRoutes(): RouteDef[] {
    const routes: RouteDef[] = [];
    const add = (method: string, template: string, auth: RouteDef['auth'], handler: Handler): void => {
      routes.push({ method, template, auth, handler });
    };

    add('GET', '/gateway/bot', 'bot', () => ({
      status: 200,
      body: {
        url: this.gatewayUrl,
        shards: this.options.shards ?? 1,
        session_start_limit: { total: 1000, remaining: 1000, reset_after: 0, max_concurrency: this.options.maxConcurrency ?? 1 },
      },
    }));
    add('GET', '/gateway', 'none', () => ({ status: 200, body: { url: this.gatewayUrl } }));
    add('GET', '/users/@me', 'bot', () => ({ status: 200, body: { ...this.botUser, verified: true, flags: 0 } }));
    const application = (): HandlerResult => ({
      status: 200,
      body: {
        id: this.applicationId,
        name: this.botUser.username,
        icon: null,
        description: '',
        bot_public: true,
        bot_require_code_grant: false,
        verify_key: '0'.repeat(64),
        flags: 0,
        bot: this.botUser,
        owner: this.defaultUser,
        team: null,
      },
    });
    add('GET', '/applications/@me', 'bot', application);
    add('GET', '/oauth2/applications/@me', 'bot', application);

    // commands
    const commandList = (ctx: HandlerCtx): JsonObject[] => {
      if (ctx.params['app'] !== this.applicationId) throw errors.unknownCommand();
      const g = ctx.params['guild'];
      if (!g) return this.globalCommands;
      if (!this.guild(g)) throw new ApiError(403, { message: 'Missing Access', code: 50001 });
      let list = this.guildCommands.get(g);
      if (!list) {
        list = [];
        this.guildCommands.set(g, list);
      }
      return list;
    };
    const toCommand = (ctx: HandlerCtx, body: JsonObject, existing?: JsonObject): JsonObject => {
      if (typeof body['name'] !== 'string' || !/^[-_\p{L}\p{N}]{1,32}$/u.test(body['name'])) {
        throw errors.invalidForm(formError(['name'], 'APPLICATION_COMMAND_INVALID_NAME', 'Command name is invalid'));
      }
      const type = (body['type'] as number | undefined) ?? 1;
      if (type === 1 && (typeof body['description'] !== 'string' || body['description'].length < 1 || body['description'].length > 100)) {
        throw errors.invalidForm(formError(['description'], 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 100 in length.'));
      }
      const g = ctx.params['guild'];
      return {
        id: existing?.['id'] ?? snowflake(),
        application_id: this.applicationId,
        version: snowflake(),
        type,
        name: body['name'],
        name_localizations: body['name_localizations'] ?? null,
        description: body['description'] ?? '',
        description_localizations: body['description_localizations'] ?? null,
        options: body['options'] ?? [],
        default_member_permissions: body['default_member_permissions'] ?? null,
        dm_permission: body['dm_permission'] ?? true,
        nsfw: body['nsfw'] ?? false,
        contexts: body['contexts'] ?? null,
        integration_types: body['integration_types'] ?? [0],
        ...(g ? { guild_id: g } : {}),
      };
    };
    for (const prefix of ['/applications/:app/commands', '/applications/:app/guilds/:guild/commands']) {
      add('GET', prefix, 'bot', (ctx) => ({ status: 200, body: commandList(ctx) }));
      add('POST', prefix, 'bot', (ctx) => {
        const list = commandList(ctx);
        const body = (ctx.body ?? {}) as JsonObject;
        const idx = list.findIndex((c) => c['name'] === body['name'] && (c['type'] ?? 1) === (body['type'] ?? 1));
        const cmd = toCommand(ctx, body, idx >= 0 ? list[idx] : undefined);
        if (idx >= 0) list[idx] = cmd;
        else list.push(cmd);
        this.changed();
        return { status: idx >= 0 ? 200 : 201, body: cmd };
      });
      add('PUT', prefix, 'bot', (ctx) => {
        const list = commandList(ctx);
        if (!Array.isArray(ctx.body)) throw errors.invalidForm(formError([], 'BASE_TYPE_ARRAY', 'Must be an array.'));
        const next = (ctx.body as JsonObject[]).map((b) =>
          toCommand(ctx, b, list.find((c) => c['name'] === b['name'] && (c['type'] ?? 1) === (b['type'] ?? 1))),
        );
        list.splice(0, list.length, ...next);
        this.changed();
        return { status: 200, body: next };
      });
      add('GET', `${prefix}/:command`, 'bot', (ctx) => {
        const cmd = commandList(ctx).find((c) => c['id'] === ctx.params['command']);
        if (!cmd) throw errors.unknownCommand();
        return { status: 200, body: cmd };
      });
      add('PATCH', `${prefix}/:command`, 'bot', (ctx) => {
        const list = commandList(ctx);
        const idx = list.findIndex((c) => c['id'] === ctx.params['command']);
        const old = list[idx];
        if (idx < 0 || !old) throw errors.unknownCommand();
        const cmd = toCommand(ctx, { ...old, ...((ctx.body ?? {}) as JsonObject) }, old);
        list[idx] = cmd;
        this.changed();
        return { status: 200, body: cmd };
      });
      add('DELETE', `${prefix}/:command`, 'bot', (ctx) => {
        const list = commandList(ctx);
        const idx = list.findIndex((c) => c['id'] === ctx.params['command']);
        if (idx < 0) throw errors.unknownCommand();
        list.splice(idx, 1);
        this.changed();
        return { status: 204 };
      });
    }

    // guilds and channels
    add('GET', '/guilds/:guild', 'bot', (ctx) => {
      const g = this.guild(ctx.params['guild']);
      if (!g) throw errors.unknownGuild();
      const payload = this.guildCreatePayload(g);
      for (const k of ['channels', 'members', 'threads', 'presences', 'voice_states', 'joined_at', 'large', 'member_count']) delete payload[k];
      return { status: 200, body: payload };
    });
    add('GET', '/guilds/:guild/channels', 'bot', (ctx) => {
      const g = this.guild(ctx.params['guild']);
      if (!g) throw errors.unknownGuild();
      return { status: 200, body: g.channels.map((c) => this.channelJson(c)) };
    });
    const channelOf = (ctx: HandlerCtx): FakeChannel => {
      const c = this.channels.get(ctx.params['channel'] ?? '');
      if (!c) throw errors.unknownChannel();
      return c;
    };
    add('GET', '/channels/:channel', 'bot', (ctx) => ({ status: 200, body: this.channelJson(channelOf(ctx)) }));
    add('POST', '/channels/:channel/typing', 'bot', (ctx) => {
      channelOf(ctx);
      return { status: 204 };
    });
    add('GET', '/channels/:channel/messages', 'bot', (ctx) => {
      const c = channelOf(ctx);
      const limit = Math.min(100, Number(ctx.query.get('limit') ?? 50));
      const ids = (this.channelOrder.get(c.id) ?? []).filter((id) => !this.store.get(id)?.ephemeral);
      const list = ids
        .slice()
        .reverse()
        .slice(0, limit)
        .map((id) => clone(this.store.get(id)?.message));
      return { status: 200, body: list };
    });
    add('POST', '/channels/:channel/messages', 'bot', (ctx) => {
      const c = channelOf(ctx);
      const stored = this.createMessage({
        channelId: c.id,
        body: (ctx.body ?? {}),
        files: ctx.files,
        type: 0,
        via: 'POST /channels/:c/messages',
      });
      return { status: 200, body: clone(stored.message) };
    });
    const botMessage = (ctx: HandlerCtx): StoredMessage => {
      const c = channelOf(ctx);
      const stored = this.store.get(ctx.params['message'] ?? '');
      if (!stored || stored.message.channel_id !== c.id || stored.ephemeral) throw errors.unknownMessage();
      return stored;
    };
    add('GET', '/channels/:channel/messages/:message', 'bot', (ctx) => ({ status: 200, body: clone(botMessage(ctx).message) }));
    add('PATCH', '/channels/:channel/messages/:message', 'bot', (ctx) => {
      const stored = botMessage(ctx);
      if (stored.message.author['id'] !== this.botUser.id) throw errors.otherAuthor();
      this.editMessage(stored, (ctx.body ?? {}), ctx.files, 'PATCH /channels/:c/messages/:m');
      return { status: 200, body: clone(stored.message) };
    });
    add('DELETE', '/channels/:channel/messages/:message', 'bot', (ctx) => {
      const stored = botMessage(ctx);
      this.deleteMessage(stored.message.id);
      return { status: 204 };
    });

    // interactions
    add('POST', '/interactions/:interaction/:token/callback', 'none', (ctx) => this.onCallback(ctx));

    // interaction webhooks
    const webhookInteraction = (ctx: HandlerCtx): FakeInteraction => {
      const id = this.tokens.get(ctx.params['token'] ?? '');
      const i = id ? this.interactions.get(id) : undefined;
      if (!i || ctx.params['app'] !== i.applicationId) throw errors.unknownWebhook();
      if (this.isExpired(i)) throw errors.invalidWebhookToken();
      return i;
    };
    const webhookMessage = (ctx: HandlerCtx, i: FakeInteraction): StoredMessage => {
      const ref = ctx.params['message'] ?? '';
      const id = ref === '@original' ? i.originalMessageId : ref;
      const allowed = ref === '@original' || i.followUpIds.includes(ref) || ref === i.originalMessageId;
      const stored = id && allowed ? this.store.get(id) : undefined;
      if (!stored) throw errors.unknownMessage();
      return stored;
    };
    add('POST', '/webhooks/:app/:token', 'none', (ctx) => {
      const i = webhookInteraction(ctx);
      if (!i.acknowledged) throw errors.unknownWebhook();
      const body = (ctx.body ?? {}) as JsonObject;
      const stored = this.createMessage({
        channelId: i.channelId,
        body,
        files: ctx.files,
        type: 0,
        via: 'POST /webhooks/:app/:token',
        interaction: i,
        ephemeral: (Number(body['flags'] ?? 0) & MessageFlag.Ephemeral) !== 0,
      });
      i.followUpIds.push(stored.message.id);
      const wait = ctx.query.get('wait');
      return wait === 'true' || wait === '1' ? { status: 200, body: clone(stored.message) } : { status: 204 };
    });
    add('GET', '/webhooks/:app/:token/messages/:message', 'none', (ctx) => {
      const i = webhookInteraction(ctx);
      return { status: 200, body: clone(webhookMessage(ctx, i).message) };
    });
    add('PATCH', '/webhooks/:app/:token/messages/:message', 'none', (ctx) => {
      const i = webhookInteraction(ctx);
      const stored = webhookMessage(ctx, i);
      this.editMessage(stored, (ctx.body ?? {}), ctx.files, 'PATCH /webhooks/:app/:token/messages/:m');
      return { status: 200, body: clone(stored.message) };
    });
    add('DELETE', '/webhooks/:app/:token/messages/:message', 'none', (ctx) => {
      const i = webhookInteraction(ctx);
      const stored = webhookMessage(ctx, i);
      this.deleteMessage(stored.message.id);
      return { status: 204 };
    });
    return routes;
  }

  private onCallback(ctx: HandlerCtx): HandlerResult {
    const i = this.interactions.get(ctx.params['interaction'] ?? '');
    if (!i || i.token !== ctx.params['token']) throw errors.unknownInteraction();
    const now = Date.now();
    const body = (ctx.body ?? {}) as JsonObject;
    const type = Number(body['type']);
    const data = (body['data'] as JsonObject | undefined) ?? null;
    const withResponse = ctx.query.get('with_response') === 'true';
    const record: InteractionCallbackRecord = {
      type,
      data: data ? clone(data) : null,
      files: ctx.files,
      at: now,
      sinceDispatchMs: now - i.dispatchedAt,
      status: 0,
      withResponse,
    };
    i.callbacks.push(record);
    try {
      if (i.acknowledged) throw errors.alreadyAcked();
      if (i.forceExpired || now - i.dispatchedAt > (this.options.ackWindowMs ?? 3000)) throw errors.unknownInteraction();
      let message: StoredMessage | undefined;
      switch (type) {
        case 4:
        case 5: {
          message = this.createMessage({
            channelId: i.channelId,
            body: type === 5 ? { flags: Number(data?.['flags'] ?? 0) } : (data ?? {}),
            files: ctx.files,
            type: i.type === 2 ? 20 : 0,
            via: `callback ${type}`,
            interaction: i,
            loading: type === 5,
            ephemeral: (Number(data?.['flags'] ?? 0) & MessageFlag.Ephemeral) !== 0,
          });
          // A component interaction's reply is a new message, and becomes @original.
          i.originalMessageId = message.message.id;
          break;
        }
        case 6:
          if (!onMessage(i)) throw errors.invalidForm(formError(['type'], 'INTERACTION_RESPONSE_TYPE_INVALID', 'Invalid interaction response type'));
          break;
        case 7: {
          if (!onMessage(i)) throw errors.invalidForm(formError(['type'], 'INTERACTION_RESPONSE_TYPE_INVALID', 'Invalid interaction response type'));
          message = i.originalMessageId ? this.store.get(i.originalMessageId) : undefined;
          if (!message) throw errors.unknownMessage();
          this.editMessage(message, data ?? {}, ctx.files, 'callback 7');
          break;
        }
        case 9:
          // A modal answers a command or a component, never another modal's submission.
          if (i.type !== 2 && i.type !== 3) throw errors.invalidForm(formError(['type'], 'INTERACTION_RESPONSE_TYPE_INVALID', 'Invalid interaction response type'));
          i.modal = checkModal(data);
          this.numberComponents(i.modal['components'] as JsonObject[]);
          break;
        case 1:
        case 8:
        case 10:
        case 12:
          break;
        default:
          throw errors.invalidForm(formError(['type'], 'BASE_TYPE_CHOICES', `Value must be one of (1, 4, 5, 6, 7, 8, 9, 10, 12).`));
      }
      i.acknowledged = true;
      record.status = withResponse ? 200 : 204;
      this.changed();
      if (!withResponse) return { status: 204 };
      const m = message?.message;
      return {
        status: 200,
        body: {
          interaction: {
            id: i.id,
            type: i.type,
            activity_instance_id: null,
            ...(m
              ? {
                  response_message_id: m.id,
                  response_message_loading: (m.flags & MessageFlag.Loading) !== 0,
                  response_message_ephemeral: (m.flags & MessageFlag.Ephemeral) !== 0,
                }
              : {}),
          },
          resource: { type, ...(m ? { message: clone(m) } : {}) },
        },
      };
    } catch (err) {
      if (err instanceof ApiError) record.status = err.status;
      throw err;
    }
  }

  // ----- public helpers

  callsTo(matcher: RouteMatcher): RecordedCall[] {
    return this.calls.filter((c) => callMatches(matcher, c));
  }

  messages(channelId?: string): FakeMessage[] {
    const ids = channelId ? (this.channelOrder.get(channelId) ?? []) : [...this.store.keys()];
    return ids.flatMap((id) => {
      const s = this.store.get(id);
      return s ? [clone(s.message)] : [];
    });
  }

  message(id: string): FakeMessage | undefined {
    const s = this.store.get(id);
    return s ? clone(s.message) : undefined;
  }

  messageHistory(id: string): FakeMessageVersion[] {
    return clone(this.store.get(id)?.history ?? []);
  }

  attachmentBytes(attachmentId: string): Buffer | undefined {
    return this.attachments.get(attachmentId)?.bytes;
  }

  interaction(idOrToken: string): FakeInteraction | undefined {
    return this.interactions.get(idOrToken) ?? this.interactions.get(this.tokens.get(idOrToken) ?? '');
  }

  commands(guildId?: string): JsonObject[] {
    return clone(guildId ? (this.guildCommands.get(guildId) ?? []) : this.globalCommands);
  }

  expireTokensAfter(ms: number): void {
    this.tokenTtlMs = ms;
  }

  expireToken(idOrToken: string): void {
    const i = this.interaction(idOrToken);
    if (!i) throw new Error(`fake discord: unknown interaction ${idOrToken}`);
    i.forceExpired = true;
  }

  rateLimitNext(spec: RateLimitSpec): void {
    this.rateLimits.push({
      route: spec.route,
      retryAfterSeconds: spec.retryAfterSeconds ?? 0.05,
      times: spec.times ?? 1,
      global: spec.global ?? false,
      scope: spec.scope ?? (spec.global ? 'global' : 'user'),
    });
  }

  failNext(spec: FailSpec): void {
    this.failures.push({
      route: spec.route,
      status: spec.status,
      times: spec.times ?? 1,
      body: spec.body ?? { message: `fake failure ${spec.status}`, code: 0 },
      headers: spec.headers ?? {},
    });
  }

  delayNext(spec: DelaySpec): void {
    this.delays.push({ route: spec.route, ms: spec.ms, times: spec.times ?? 1 });
  }

  ageMessage(id: string, ms: number): void {
    const s = this.store.get(id);
    if (!s) throw new Error(`fake discord: unknown message ${id}`);
    s.message.timestamp = new Date(Date.parse(s.message.timestamp) - ms).toISOString();
  }

  waitFor<T>(predicate: (fake: FakeDiscord) => T | undefined | null | false, options: WaitOptions = {}): Promise<T> {
    const timeoutMs = options.timeoutMs ?? 5000;
    return new Promise<T>((resolve, reject) => {
      // eslint-disable-next-line prefer-const -- assigned below, after the closures that read it
      let timer: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        if (timer) clearTimeout(timer);
        this.events.off('change', check);
      };
      const check = (): boolean => {
        let value: T | undefined | null | false;
        try {
          value = predicate(this);
        } catch (err) {
          cleanup();
          reject(err instanceof Error ? err : new Error(String(err)));
          return true;
        }
        if (value !== undefined && value !== null && value !== false) {
          cleanup();
          resolve(value);
          return true;
        }
        return false;
      };
      if (check()) return;
      this.events.on('change', check);
      timer = setTimeout(() => {
        cleanup();
        const recent = this.calls
          .slice(-8)
          .map((c) => `  ${c.method} ${c.path} → ${c.status ?? '…'}`)
          .join('\n');
        reject(
          new Error(
            `fake discord: waitFor ${options.description ?? 'predicate'} timed out after ${timeoutMs} ms; last calls:\n${recent || '  (none)'}`,
          ),
        );
      }, timeoutMs);
    });
  }

  waitForCall(matcher: RouteMatcher, options: WaitOptions & { from?: number } = {}): Promise<RecordedCall> {
    const from = options.from ?? 0;
    return this.waitFor(
      () => this.calls.find((c) => c.index >= from && c.status !== undefined && callMatches(matcher, c)),
      { description: options.description ?? `a call to ${String(matcher)}`, ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}) },
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const conn of this.conns) conn.ws.terminate();
    for (const release of [...this.pendingDelays]) release();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.events.removeAllListeners();
  }
}

/** Starts the fake on 127.0.0.1, on a port the OS picks. */
export async function startFakeDiscord(options: FakeDiscordOptions = {}): Promise<FakeDiscord> {
  const fake = new FakeDiscordImpl(options);
  await fake.listen();
  return fake;
}
