/**
 * A fake of the Slack Web API (plus file-upload URLs and response_urls) on node:http, and helpers
 * that drive a real Bolt app over HTTP with correctly signed requests.
 *
 * Point the real Bolt app at it:
 *
 *     const fake = await startFakeSlack({ users: { U1: { is_admin: true } } });
 *     const app = new App({ token: 'xoxb-test', signingSecret, botId: 'B1', botUserId: 'U0BOT',
 *       clientOptions: { slackApiUrl: fake.apiUrl, retryConfig: { retries: 0 } } });
 *     const server = await app.start({ port: 0, host: '127.0.0.1' });   // resolves to the http.Server
 *     const boltUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/slack/events`;
 *     await postSlashCommand(boltUrl, signingSecret, { text: 'a red fox --count 4',
 *       response_url: fake.responseUrl('r1') });
 *     await fake.waitFor((c) => c.method === 'chat.update');
 *
 * What the fake answers like Slack does (web-api 8.2 reads these exactly):
 * - every Web API answer is HTTP 200 JSON `{ ok: true, ... }` or `{ ok: false, error }`;
 * - no token is `not_authed`, a token it does not know is `invalid_auth` (it knows `xoxb-test`
 *   unless told `tokens`); a JSON body must carry its token in `Authorization: Bearer` (a `token`
 *   inside JSON counts as none, as on Slack), and a JSON body that does not parse is `invalid_json`;
 * - a rate limit is HTTP 429 with a `Retry-After` header (seconds) and `{ ok: false, error: 'ratelimited' }`;
 * - `chat.update` without `blocks` keeps the message's previous blocks (`blocks: []` removes them),
 *   the same for `attachments`;
 * - Block Kit limits are enforced (50 blocks, 25 elements per actions block, action_id/block_id
 *   ≤ 255 chars, button value ≤ 2000 chars, image blocks need an http(s) `image_url` or a
 *   `slack_file`) with `invalid_blocks`, unless `validateBlocks: false`;
 * - a response_url accepts 5 POSTs within 30 minutes; later ones get HTTP 404 `used_url`
 *   (`expired_url` after the TTL);
 * - `views.open` exchanges a trigger_id once (again: `exchanged_trigger_id`), checks the modal
 *   (validateView: `invalid_arguments` with Slack's messages) and answers the opened view (id, hash,
 *   empty state), which `viewSubmissionPayload` turns into the `view_submission` Slack would send.
 *
 * Request bodies are recorded with their args decoded: form fields are strings as sent (numbers
 * and booleans arrive as strings, e.g. `'true'`), and the JSON-encoded fields `blocks`,
 * `attachments`, `files`, `metadata`, `file_uploads`, `view` are parsed back into objects.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse as parseQuery } from 'node:querystring';
import { buffer as readBody } from 'node:stream/consumers';

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

export interface FakeSlackUserInit {
  name?: string;
  real_name?: string;
  team_id?: string;
  is_admin?: boolean;
  is_owner?: boolean;
  is_primary_owner?: boolean;
  is_bot?: boolean;
  deleted?: boolean;
  tz?: string;
}

export interface FakeSlackUser extends Required<Omit<FakeSlackUserInit, 'tz'>> {
  id: string;
  tz: string;
  profile: { real_name: string; display_name: string };
}

export interface FakeSlackChannelInit {
  name?: string;
  is_private?: boolean;
  is_im?: boolean;
}

export interface FakeSlackOptions {
  /** Workspace the fake pretends to be (auth.test, message `team`). Default `{ id: 'T1', domain: 'fake-team' }`. */
  team?: { id: string; domain?: string; name?: string };
  /** Bot identity (auth.test, message `user`/`bot_id`). Default `{ userId: 'U0BOT', botId: 'B1', appId: 'A1' }`. */
  bot?: { userId?: string; botId?: string; appId?: string; name?: string };
  /** users.info data by user id. Users not listed are regular members unless `strictUsers`. */
  users?: Record<string, FakeSlackUserInit>;
  /** users.info of an unlisted user answers `user_not_found`. Default false. */
  strictUsers?: boolean;
  /** Known channels. When given, other channel ids answer `channel_not_found`; when absent, every channel exists. */
  channels?: Record<string, FakeSlackChannelInit>;
  /** Accepted bot tokens; any other token answers `invalid_auth`, a missing one `not_authed`. @default DEFAULT_TOKENS */
  tokens?: string[];
  /** Enforce Block Kit limits with `invalid_blocks`. Default true. */
  validateBlocks?: boolean;
  /** Seconds part of the first message ts. Default 1700000000 (first ts is '1700000000.000100'). */
  startTs?: number;
  /** Uses allowed per response_url. Default 5 (Slack's limit). */
  responseUrlMaxUses?: number;
  /** Lifetime of a response_url in ms, counted from `responseUrl(id)` (or first use). Default 30 minutes. */
  responseUrlTtlMs?: number;
  /** Clock for response_url expiry and call timestamps. Default Date.now. */
  now?: () => number;
}

export type SlackCallKind = 'api' | 'upload' | 'response_url' | 'file_download';

/** One request the fake received, with what it answered. */
export interface SlackCall {
  /** 1, 2, 3, … in arrival order (across all kinds). */
  seq: number;
  kind: SlackCallKind;
  /** Web API method (`chat.update`), or `'upload'`, `'response_url'`, `'file_download'`. */
  method: string;
  /** Decoded request args (see module comment). For uploads: `{ file_id, filename?, length }`. */
  args: Record<string, unknown>;
  /** Bearer token from the Authorization header, else the `token` arg. */
  token: string | undefined;
  contentType: string | undefined;
  /** HTTP status the fake answered. */
  status: number;
  /** JSON body the fake answered. */
  response: Record<string, unknown>;
  /** `response.ok === true` and status 200. */
  ok: boolean;
  /** `response.error` if any. */
  error: string | undefined;
  /** Clock time (options.now) when recorded. */
  at: number;
}

export interface FakeSlackMessageVersion {
  text: string;
  blocks: unknown[] | undefined;
  attachments: unknown[] | undefined;
  /** What produced this version. */
  via: 'chat.postMessage' | 'chat.update' | 'response_url';
  /** seq of the call that produced it. */
  seq: number;
}

export interface FakeSlackMessage {
  type: 'message';
  channel: string;
  ts: string;
  text: string;
  blocks: unknown[] | undefined;
  attachments: unknown[] | undefined;
  thread_ts: string | undefined;
  metadata: unknown;
  user: string;
  bot_id: string;
  app_id: string;
  team: string;
  /** Present once updated: who and when (ts of the edit). */
  edited: { user: string; ts: string } | undefined;
}

export interface FakeSlackEphemeral {
  channel: string;
  user: string;
  message_ts: string;
  text: string;
  blocks: unknown[] | undefined;
  thread_ts: string | undefined;
}

/** A modal opened with views.open, as the fake answered it (the `view` object Slack returns). */
export interface FakeSlackView {
  id: string;
  trigger_id: string;
  /** the opened view: what views.open answered and what a view_submission payload carries back */
  view: Record<string, unknown>;
  seq: number;
}

export interface FakeSlackFileShare {
  channel_id: string;
  thread_ts: string | undefined;
  initial_comment: string | undefined;
  blocks: unknown[] | undefined;
}

export interface FakeSlackFile {
  id: string;
  filename: string;
  title: string;
  /** `length` declared to files.getUploadURLExternal. */
  declaredLength: number;
  alt_text: string | undefined;
  /** Bytes received on the upload URL (undefined until uploaded). */
  bytes: Buffer | undefined;
  /** Content-Type of the uploaded part (or of the raw body). */
  uploadContentType: string | undefined;
  uploadUrl: string;
  /** url_private served by the fake (GET returns the bytes). */
  urlPrivate: string;
  completed: boolean;
  shares: FakeSlackFileShare[];
}

export interface FakeSlackResponse {
  /** Parsed JSON body (or form fields / `payload` JSON). */
  body: unknown;
  status: number;
  /** false when refused (used_url / expired_url). */
  accepted: boolean;
  seq: number;
}

export interface WaitForOptions {
  /** Default 5000. */
  timeoutMs?: number;
  /** Only consider calls with seq greater than this (e.g. `fake.lastSeq` taken earlier). */
  since?: number;
}

export interface FakeSlack {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `http://127.0.0.1:PORT/api/` — pass as `clientOptions.slackApiUrl`. */
  readonly apiUrl: string;
  readonly port: number;
  /** seq of the latest recorded call (0 if none). */
  readonly lastSeq: number;

  /** All recorded calls, or those of one method (`'chat.update'`, `'upload'`, `'response_url'`, …). */
  calls(method?: string): SlackCall[];
  /** Current messages of a channel (top-level and thread replies, deleted ones excluded), oldest first. */
  messages(channel: string): FakeSlackMessage[];
  message(channel: string, ts: string): FakeSlackMessage | undefined;
  /** Versions produced by chat.update / response_url replace_original, oldest first (the post itself excluded). */
  updatesOf(channel: string, ts: string): FakeSlackMessageVersion[];
  /** Replies posted with `thread_ts === ts`. */
  thread(channel: string, ts: string): FakeSlackMessage[];
  ephemerals(channel?: string): FakeSlackEphemeral[];
  /** Modals opened with views.open, oldest first. */
  views(): FakeSlackView[];
  files(): FakeSlackFile[];
  file(id: string): FakeSlackFile | undefined;

  /** Add or replace a user (users.info). */
  setUser(id: string, user: FakeSlackUserInit): void;

  /** Next `times` (default 1) calls of `method` ('*' = any API method) answer HTTP 429 + Retry-After. */
  rateLimit(method: string, opts?: { retryAfterSeconds?: number; times?: number }): void;
  /** Next `times` (default 1) calls of `method` ('*' = any) answer HTTP 200 `{ ok: false, error }`. */
  failNext(method: string, error: string, times?: number): void;
  /** Next `times` (default 1) calls of `method` ('*' = any; 'upload' for the upload URL) answer HTTP `status` (default 500). */
  serverError(method: string, opts?: { status?: number; times?: number }): void;
  /**
   * Next `times` (default 1) calls of `method` wait `ms` before being handled (a slow or hanging API).
   * The handle tells how many calls are being held now and lets them go at once.
   */
  delay(method: string, ms: number, opts?: { times?: number }): DelayHandle;
  /** postMessage / update / postEphemeral / delete / file shares in this channel answer `not_in_channel`
   * until cleared (the returned function, `clearNotInChannel`, or `conversations.join`). */
  notInChannel(channelId: string): () => void;
  clearNotInChannel(channelId?: string): void;
  /** Drop all pending faults (rate limits, failures, delays, not_in_channel). */
  clearFaults(): void;

  /** `http://127.0.0.1:PORT/response/{id}`; optionally bound to a message so that
   * `replace_original` / `delete_original` act on it. */
  responseUrl(id: string, bind?: { channel: string; ts: string }): string;
  /** Every POST to that response_url, refused ones included (`accepted: false`). */
  responses(id: string): FakeSlackResponse[];
  /** Make the response_url answer `expired_url` from now on. */
  expireResponseUrl(id: string): void;

  /** Resolves with the first recorded call (past or future) that satisfies `predicate`. */
  waitFor(predicate: (call: SlackCall) => boolean, opts?: WaitForOptions): Promise<SlackCall>;
  /** Forget calls, messages, files, responses and faults (users and channels stay). */
  reset(): void;
  close(): Promise<void>;
}

export interface DelayHandle {
  /** Calls of this rule that arrived and are waiting now. */
  readonly held: number;
  /** Lets every held call through now (the rule still delays later calls it has left). */
  release(): void;
}

/** The bot tokens a fake accepts unless told `tokens`. */
export const DEFAULT_TOKENS: readonly string[] = ['xoxb-test'];

// ---------------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------------

type Fault =
  | { kind: 'ratelimit'; method: string; remaining: number; retryAfterSeconds: number }
  | { kind: 'fail'; method: string; remaining: number; error: string }
  | { kind: 'http'; method: string; remaining: number; status: number };

interface DelayRule {
  method: string;
  remaining: number;
  ms: number;
  /** releases of the calls waiting on this rule */
  waiting: Set<() => void>;
}

interface StoredMessage {
  current: FakeSlackMessage;
  versions: FakeSlackMessageVersion[];
  deleted: boolean;
}

interface ResponseUrlState {
  uses: number;
  createdAt: number;
  expired: boolean;
  bind: { channel: string; ts: string } | undefined;
  log: FakeSlackResponse[];
}

interface Waiter {
  predicate: (call: SlackCall) => boolean;
  since: number;
  resolve: (call: SlackCall) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

interface ApiResult {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
}

const JSON_FIELDS = new Set(['blocks', 'attachments', 'files', 'metadata', 'file_uploads', 'view']);
const CHANNEL_METHODS = new Set([
  'chat.postMessage',
  'chat.update',
  'chat.postEphemeral',
  'chat.delete',
]);

export interface MultipartPart {
  name: string | undefined;
  filename: string | undefined;
  contentType: string | undefined;
  data: Buffer;
}

/** Minimal multipart/form-data parser (enough for undici's FormData and curl). */
export function parseMultipart(body: Buffer, contentType: string): MultipartPart[] {
  const match = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const boundary = match?.[1] ?? match?.[2];
  if (boundary === undefined) return [];
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: MultipartPart[] = [];
  let pos = body.indexOf(delimiter);
  while (pos !== -1) {
    let start = pos + delimiter.length;
    if (body[start] === 0x2d && body[start + 1] === 0x2d) break; // closing "--"
    if (body[start] === 0x0d && body[start + 1] === 0x0a) start += 2;
    const next = body.indexOf(delimiter, start);
    if (next === -1) break;
    let end = next;
    if (end - 2 >= start && body[end - 2] === 0x0d && body[end - 1] === 0x0a) end -= 2;
    const part = body.subarray(start, end);
    const headerEnd = part.indexOf('\r\n\r\n');
    if (headerEnd !== -1) {
      const headers: Record<string, string> = {};
      for (const line of part.subarray(0, headerEnd).toString('utf8').split('\r\n')) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const disposition = headers['content-disposition'] ?? '';
      parts.push({
        name: /\bname="([^"]*)"/.exec(disposition)?.[1],
        filename: /\bfilename="([^"]*)"/.exec(disposition)?.[1],
        contentType: headers['content-type'],
        data: Buffer.from(part.subarray(headerEnd + 4)),
      });
    }
    pos = next;
  }
  return parts;
}


function decodeField(key: string, value: unknown): unknown {
  if (typeof value === 'string' && JSON_FIELDS.has(key)) {
    try {
      return JSON.parse(value) as unknown;
    } catch {
      return value;
    }
  }
  return value;
}

/** Decode a Web API request body the way Slack does: form, JSON or multipart. */
function decodeArgs(raw: Buffer, contentType: string | undefined, query: URLSearchParams): Record<string, unknown> {
  const args: Record<string, unknown> = {};
  for (const [k, v] of query) args[k] = decodeField(k, v);
  const type = (contentType ?? '').toLowerCase();
  if (raw.length === 0) return args;
  if (type.startsWith('application/json')) {
    try {
      const parsed = JSON.parse(raw.toString('utf8')) as unknown;
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
        Object.assign(args, parsed as Record<string, unknown>);
      }
    } catch {
      args.__invalid_json = raw.toString('utf8');
    }
    return args;
  }
  if (type.startsWith('multipart/form-data')) {
    for (const part of parseMultipart(raw, contentType ?? '')) {
      if (part.name === undefined) continue;
      args[part.name] = part.filename !== undefined ? part.data : decodeField(part.name, part.data.toString('utf8'));
    }
    return args;
  }
  const form = parseQuery(raw.toString('utf8'));
  for (const [k, v] of Object.entries(form)) {
    args[k] = decodeField(k, Array.isArray(v) ? v.join(',') : v);
  }
  return args;
}

function str(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return undefined;
}

function truthy(value: unknown): boolean {
  return value === true || value === 'true' || value === '1' || value === 1;
}

function asArray(value: unknown): unknown[] | undefined {
  return Array.isArray(value) ? value : undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Block Kit checks that matter to a gallery bot; messages mimic Slack's `[ERROR] … [json-pointer:…]`. */
export function validateBlocks(blocks: unknown): string[] {
  const errors: string[] = [];
  if (!Array.isArray(blocks)) return ['must be an array [json-pointer:/blocks]'];
  if (blocks.length > 50) errors.push('no more than 50 items allowed [json-pointer:/blocks]');
  blocks.forEach((block, i) => {
    const at = `/blocks/${i}`;
    if (!isRecord(block) || typeof block.type !== 'string') {
      errors.push(`missing required field: type [json-pointer:${at}]`);
      return;
    }
    if (typeof block.block_id === 'string' && block.block_id.length > 255) {
      errors.push(`must be less than 256 characters [json-pointer:${at}/block_id]`);
    }
    if (block.type === 'image') {
      const url = block.image_url;
      const file = block.slack_file;
      if (typeof url === 'string') {
        if (!/^https?:\/\//.test(url)) errors.push(`downloading image failed [json-pointer:${at}/image_url]`);
      } else if (!isRecord(file) || (typeof file.id !== 'string' && typeof file.url !== 'string')) {
        errors.push(`must provide either image_url or slack_file [json-pointer:${at}]`);
      }
      if (typeof block.alt_text !== 'string') errors.push(`missing required field: alt_text [json-pointer:${at}]`);
    }
    if (block.type === 'section' && isRecord(block.text) && typeof block.text.text === 'string' && block.text.text.length > 3000) {
      errors.push(`must be less than 3001 characters [json-pointer:${at}/text/text]`);
    }
    if (block.type === 'actions') {
      const elements = asArray(block.elements) ?? [];
      if (elements.length > 25) errors.push(`no more than 25 items allowed [json-pointer:${at}/elements]`);
      const seen = new Set<string>();
      elements.forEach((element, j) => {
        const eat = `${at}/elements/${j}`;
        if (!isRecord(element)) return;
        if (typeof element.action_id === 'string') {
          if (element.action_id.length > 255) errors.push(`must be less than 256 characters [json-pointer:${eat}/action_id]`);
          if (seen.has(element.action_id)) errors.push(`duplicate action_id [json-pointer:${eat}/action_id]`);
          seen.add(element.action_id);
        }
        if (typeof element.value === 'string' && element.value.length > 2000) {
          errors.push(`must be less than 2001 characters [json-pointer:${eat}/value]`);
        }
      });
    }
  });
  return errors;
}

/**
 * What Slack checks of a modal that a bot can get wrong: type, a plain_text title (≤ 24 chars), submit
 * and close (≤ 24), a submit button whenever there is an input block, ≤ 100 blocks, callback_id
 * (≤ 255) and private_metadata (≤ 3000), each input block's label and element, and the message
 * checks of validateBlocks for the rest.
 */
export function validateView(view: unknown): string[] {
  if (!isRecord(view)) return ['must be an object [json-pointer:/view]'];
  const errors: string[] = [];
  if (view.type !== 'modal') errors.push('must be one of: modal, home [json-pointer:/view/type]');
  const plain = (value: unknown, at: string, max: number, required: boolean) => {
    if (value === undefined) {
      if (required) errors.push(`missing required field: ${at.split('/').pop()} [json-pointer:/view/${at}]`);
      return;
    }
    if (!isRecord(value) || value.type !== 'plain_text' || typeof value.text !== 'string') errors.push(`must be a plain_text object [json-pointer:/view/${at}]`);
    else if (value.text.length > max) errors.push(`must be less than ${max + 1} characters [json-pointer:/view/${at}/text]`);
  };
  plain(view.title, 'title', 24, true);
  plain(view.close, 'close', 24, false);
  const blocks = asArray(view.blocks);
  if (!blocks) return [...errors, 'missing required field: blocks [json-pointer:/view/blocks]'];
  if (blocks.length > 100) errors.push('no more than 100 items allowed [json-pointer:/view/blocks]');
  const inputs = blocks.filter((b) => isRecord(b) && b.type === 'input');
  plain(view.submit, 'submit', 24, inputs.length > 0);
  if (typeof view.callback_id === 'string' && view.callback_id.length > 255) errors.push('must be less than 256 characters [json-pointer:/view/callback_id]');
  if (typeof view.private_metadata === 'string' && view.private_metadata.length > 3000) {
    errors.push('must be less than 3001 characters [json-pointer:/view/private_metadata]');
  }
  blocks.forEach((block, i) => {
    if (!isRecord(block) || block.type !== 'input') return;
    const at = `/view/blocks/${i}`;
    if (!isRecord(block.label) || block.label.type !== 'plain_text' || typeof block.label.text !== 'string') errors.push(`missing required field: label [json-pointer:${at}]`);
    else if (block.label.text.length > 2000) errors.push(`must be less than 2001 characters [json-pointer:${at}/label/text]`);
    const element = block.element;
    if (!isRecord(element) || typeof element.type !== 'string') errors.push(`missing required field: element [json-pointer:${at}]`);
    else if (element.type === 'plain_text_input' && typeof element.max_length === 'number' && element.max_length > 3000) {
      errors.push(`must be less than 3001 [json-pointer:${at}/element/max_length]`);
    }
  });
  const others = blocks.filter((b) => !(isRecord(b) && b.type === 'input'));
  errors.push(...validateBlocks(others).map((e) => e.replace('[json-pointer:/blocks', '[json-pointer:/view/blocks')));
  return errors;
}

function summarize(call: SlackCall): string {
  let args: string;
  try {
    args = JSON.stringify(call.args, (_k, v: unknown) => (Buffer.isBuffer(v) ? `<${v.length} bytes>` : v));
  } catch {
    args = '{…}';
  }
  if (args.length > 160) args = `${args.slice(0, 157)}...`;
  const outcome = call.ok ? 'ok' : (call.error ?? 'error');
  return `  #${call.seq} ${call.method} ${args} -> ${call.status} ${outcome}`;
}

// ---------------------------------------------------------------------------------------------
// The fake
// ---------------------------------------------------------------------------------------------

export async function startFakeSlack(options: FakeSlackOptions = {}): Promise<FakeSlack> {
  const now = options.now ?? Date.now;
  const team = {
    id: options.team?.id ?? 'T1',
    domain: options.team?.domain ?? 'fake-team',
    name: options.team?.name ?? 'Fake Team',
  };
  const bot = {
    userId: options.bot?.userId ?? 'U0BOT',
    botId: options.bot?.botId ?? 'B1',
    appId: options.bot?.appId ?? 'A1',
    name: options.bot?.name ?? 'art-factory',
  };
  const validate = options.validateBlocks ?? true;
  const tokens = options.tokens ?? DEFAULT_TOKENS;
  const maxUses = options.responseUrlMaxUses ?? 5;
  const ttlMs = options.responseUrlTtlMs ?? 30 * 60 * 1000;
  const startTs = options.startTs ?? 1_700_000_000;

  const users = new Map<string, FakeSlackUserInit>(Object.entries(options.users ?? {}));
  const channels = options.channels ? new Map(Object.entries(options.channels)) : undefined;

  let calls: SlackCall[] = [];
  let seq = 0;
  let tsCounter = 0;
  let fileCounter = 0;
  let faults: Fault[] = [];
  let delays: DelayRule[] = [];
  let notIn = new Set<string>();
  let messages = new Map<string, Map<string, StoredMessage>>();
  let ephemerals: FakeSlackEphemeral[] = [];
  let files = new Map<string, FakeSlackFile>();
  let responseUrls = new Map<string, ResponseUrlState>();
  let views: FakeSlackView[] = [];
  /** trigger_ids already exchanged: Slack accepts each once */
  let usedTriggers = new Set<string>();
  const waiters = new Set<Waiter>();
  /** every call a delay rule holds now, released by close() so no timer outlives the fake */
  const held = new Set<() => void>();
  let port = 0;

  const nextTs = (): string => {
    tsCounter += 100;
    const secs = startTs + Math.floor(tsCounter / 1_000_000);
    return `${secs}.${String(tsCounter % 1_000_000).padStart(6, '0')}`;
  };
  const base = (): string => `http://127.0.0.1:${port}`;

  const record = (partial: Omit<SlackCall, 'seq' | 'at' | 'ok' | 'error'>): SlackCall => {
    seq += 1;
    const error = typeof partial.response.error === 'string' ? partial.response.error : undefined;
    const call: SlackCall = {
      ...partial,
      seq,
      at: now(),
      ok: partial.status === 200 && partial.response.ok === true,
      error,
    };
    calls.push(call);
    for (const waiter of [...waiters]) {
      if (call.seq <= waiter.since) continue;
      let matched: boolean;
      try {
        matched = waiter.predicate(call);
      } catch (err) {
        waiters.delete(waiter);
        clearTimeout(waiter.timer);
        waiter.reject(err instanceof Error ? err : new Error(String(err)));
        continue;
      }
      if (matched) {
        waiters.delete(waiter);
        clearTimeout(waiter.timer);
        waiter.resolve(call);
      }
    }
    return call;
  };

  const takeFault = (method: string): Fault | undefined => {
    const fault = faults.find((f) => f.remaining > 0 && (f.method === method || (f.method === '*' && method !== 'upload')));
    if (fault) fault.remaining -= 1;
    faults = faults.filter((f) => f.remaining > 0);
    return fault;
  };
  /** Waits as the first matching delay rule says (nothing when none matches). */
  const applyDelay = async (method: string): Promise<void> => {
    const rule = delays.find((d) => d.remaining > 0 && (d.method === method || d.method === '*'));
    if (!rule) return;
    rule.remaining -= 1;
    delays = delays.filter((d) => d.remaining > 0);
    await new Promise<void>((resolve) => {
      const release = (): void => {
        clearTimeout(timer);
        rule.waiting.delete(release);
        held.delete(release);
        resolve();
      };
      const timer = setTimeout(release, rule.ms);
      rule.waiting.add(release);
      held.add(release);
    });
  };
  const faultResult = (fault: Fault): ApiResult => {
    switch (fault.kind) {
      case 'ratelimit':
        return {
          status: 429,
          body: { ok: false, error: 'ratelimited' },
          headers: { 'retry-after': String(fault.retryAfterSeconds) },
        };
      case 'fail':
        return { status: 200, body: { ok: false, error: fault.error } };
      case 'http':
        return { status: fault.status, body: { ok: false, error: `http_${fault.status}` } };
    }
  };

  const channelStore = (channel: string): Map<string, StoredMessage> => {
    let store = messages.get(channel);
    if (!store) {
      store = new Map();
      messages.set(channel, store);
    }
    return store;
  };
  const snapshot = (m: FakeSlackMessage): FakeSlackMessage => structuredClone(m);
  const messageJson = (m: FakeSlackMessage): Record<string, unknown> => {
    const out: Record<string, unknown> = {
      type: 'message',
      user: m.user,
      bot_id: m.bot_id,
      app_id: m.app_id,
      team: m.team,
      text: m.text,
      ts: m.ts,
    };
    if (m.blocks !== undefined) out.blocks = m.blocks;
    if (m.attachments !== undefined) out.attachments = m.attachments;
    if (m.thread_ts !== undefined) out.thread_ts = m.thread_ts;
    if (m.edited !== undefined) out.edited = m.edited;
    return out;
  };

  const userJson = (id: string, init: FakeSlackUserInit): FakeSlackUser => {
    const name = init.name ?? id.toLowerCase();
    const realName = init.real_name ?? name;
    return {
      id,
      team_id: init.team_id ?? team.id,
      name,
      real_name: realName,
      deleted: init.deleted ?? false,
      is_admin: init.is_admin ?? false,
      is_owner: init.is_owner ?? false,
      is_primary_owner: init.is_primary_owner ?? false,
      is_bot: init.is_bot ?? false,
      tz: init.tz ?? 'UTC',
      profile: { real_name: realName, display_name: name },
    };
  };

  /** Channel checks shared by methods that write into a channel. */
  const checkChannel = (channel: string | undefined): ApiResult | undefined => {
    if (channel === undefined || channel === '') return { status: 200, body: { ok: false, error: 'channel_not_found' } };
    if (channels && !channels.has(channel)) return { status: 200, body: { ok: false, error: 'channel_not_found' } };
    if (notIn.has(channel)) return { status: 200, body: { ok: false, error: 'not_in_channel' } };
    return undefined;
  };
  const checkBlocks = (args: Record<string, unknown>): ApiResult | undefined => {
    if (!validate || args.blocks === undefined) return undefined;
    const errors = validateBlocks(args.blocks);
    if (errors.length === 0) return undefined;
    return {
      status: 200,
      body: {
        ok: false,
        error: 'invalid_blocks',
        errors,
        response_metadata: { messages: errors.map((e) => `[ERROR] ${e}`) },
      },
    };
  };

  const handleApi = (method: string, args: Record<string, unknown>, token: string | undefined, callSeq: () => number): ApiResult => {
    const ok = (body: Record<string, unknown>): ApiResult => ({ status: 200, body: { ok: true, ...body } });
    const fail = (error: string, extra: Record<string, unknown> = {}): ApiResult => ({
      status: 200,
      body: { ok: false, error, ...extra },
    });
    if (args.__invalid_json !== undefined) return fail('invalid_json');
    if (token === undefined || token === '') return fail('not_authed');
    if (!tokens.includes(token)) return fail('invalid_auth');
    if (CHANNEL_METHODS.has(method)) {
      const channelError = checkChannel(str(args.channel));
      if (channelError) return channelError;
    }

    switch (method) {
      case 'api.test':
        return ok({ args });
      case 'auth.test':
        return ok({
          url: `https://${team.domain}.slack.com/`,
          team: team.name,
          user: bot.name,
          team_id: team.id,
          user_id: bot.userId,
          bot_id: bot.botId,
          is_enterprise_install: false,
        });
      case 'chat.postMessage': {
        const channel = str(args.channel) ?? '';
        const text = str(args.text) ?? '';
        const blocks = asArray(args.blocks);
        const attachments = asArray(args.attachments);
        if (text === '' && blocks === undefined && attachments === undefined) return fail('no_text');
        if (text.length > 40_000) return fail('msg_too_long');
        const blockError = checkBlocks(args);
        if (blockError) return blockError;
        const threadTs = str(args.thread_ts);
        const ts = nextTs();
        const message: FakeSlackMessage = {
          type: 'message',
          channel,
          ts,
          text,
          blocks,
          attachments,
          thread_ts: threadTs,
          metadata: args.metadata,
          user: bot.userId,
          bot_id: bot.botId,
          app_id: bot.appId,
          team: team.id,
          edited: undefined,
        };
        channelStore(channel).set(ts, {
          current: message,
          versions: [{ text, blocks, attachments, via: 'chat.postMessage', seq: callSeq() }],
          deleted: false,
        });
        return ok({ channel, ts, message: messageJson(message) });
      }
      case 'chat.update': {
        const channel = str(args.channel) ?? '';
        const ts = str(args.ts);
        const stored = ts === undefined ? undefined : messages.get(channel)?.get(ts);
        if (!stored || stored.deleted) return fail('message_not_found');
        const text = str(args.text);
        const blocks = asArray(args.blocks);
        const attachments = asArray(args.attachments);
        if (text === undefined && blocks === undefined && attachments === undefined) return fail('no_text');
        if (text !== undefined && text.length > 40_000) return fail('msg_too_long');
        const blockError = checkBlocks(args);
        if (blockError) return blockError;
        applyUpdate(stored, { text, blocks, attachments }, 'chat.update', callSeq());
        return ok({
          channel,
          ts: stored.current.ts,
          text: stored.current.text,
          message: messageJson(stored.current),
        });
      }
      case 'chat.delete': {
        const channel = str(args.channel) ?? '';
        const ts = str(args.ts);
        const stored = ts === undefined ? undefined : messages.get(channel)?.get(ts);
        if (!stored || stored.deleted) return fail('message_not_found');
        stored.deleted = true;
        return ok({ channel, ts });
      }
      case 'chat.postEphemeral': {
        const channel = str(args.channel) ?? '';
        const user = str(args.user);
        if (user === undefined || user === '') return fail('user_not_found');
        const text = str(args.text) ?? '';
        const blocks = asArray(args.blocks);
        if (text === '' && blocks === undefined && args.attachments === undefined) return fail('no_text');
        const blockError = checkBlocks(args);
        if (blockError) return blockError;
        const messageTs = nextTs();
        ephemerals.push({ channel, user, message_ts: messageTs, text, blocks, thread_ts: str(args.thread_ts) });
        return ok({ message_ts: messageTs });
      }
      case 'views.open': {
        const trigger = str(args.trigger_id);
        if (trigger === undefined || trigger === '') {
          return fail('invalid_arguments', { response_metadata: { messages: ['[ERROR] invalid `trigger_id`'] } });
        }
        if (usedTriggers.has(trigger)) return fail('exchanged_trigger_id');
        const errors = validateView(args.view);
        if (errors.length > 0) return fail('invalid_arguments', { response_metadata: { messages: errors.map((e) => `[ERROR] ${e}`) } });
        usedTriggers.add(trigger);
        const input = args.view as Record<string, unknown>;
        const id = `V${String(views.length + 1).padStart(10, '0')}`;
        const view: Record<string, unknown> = {
          id,
          team_id: team.id,
          type: input.type,
          title: input.title,
          close: input.close ?? null,
          submit: input.submit ?? null,
          blocks: input.blocks,
          private_metadata: str(input.private_metadata) ?? '',
          callback_id: str(input.callback_id) ?? '',
          external_id: str(input.external_id) ?? '',
          state: { values: {} },
          hash: `${Math.floor(now() / 1000)}.${id}`,
          clear_on_close: input.clear_on_close === true,
          notify_on_close: input.notify_on_close === true,
          previous_view_id: null,
          root_view_id: id,
          app_id: bot.appId,
          app_installed_team_id: team.id,
          bot_id: bot.botId,
        };
        views.push({ id, trigger_id: trigger, view: structuredClone(view), seq: callSeq() });
        return ok({ view });
      }
      case 'users.info': {
        const id = str(args.user);
        if (id === undefined || id === '') return fail('user_not_found');
        const init = users.get(id);
        if (!init && options.strictUsers) return fail('user_not_found');
        return ok({ user: userJson(id, init ?? {}) });
      }
      case 'conversations.info': {
        const id = str(args.channel);
        if (id === undefined || id === '' || (channels && !channels.has(id))) return fail('channel_not_found');
        const info = channels?.get(id) ?? {};
        return ok({
          channel: {
            id,
            name: info.name ?? id.toLowerCase(),
            is_channel: !info.is_private && !info.is_im,
            is_group: false,
            is_im: info.is_im ?? false,
            is_private: info.is_private ?? false,
            is_member: !notIn.has(id),
            is_archived: false,
          },
        });
      }
      case 'conversations.join': {
        const id = str(args.channel);
        if (id === undefined || id === '' || (channels && !channels.has(id))) return fail('channel_not_found');
        if (channels?.get(id)?.is_private) return fail('method_not_supported_for_channel_type');
        notIn.delete(id);
        return ok({ channel: { id, name: channels?.get(id)?.name ?? id.toLowerCase(), is_member: true } });
      }
      case 'files.getUploadURLExternal': {
        const filename = str(args.filename);
        const length = Number(str(args.length));
        if (filename === undefined || filename === '') return fail('invalid_arguments');
        if (!Number.isFinite(length) || length <= 0) return fail('invalid_arguments');
        fileCounter += 1;
        const id = `F${String(fileCounter).padStart(10, '0')}`;
        const uploadUrl = `${base()}/upload/${id}`;
        files.set(id, {
          id,
          filename,
          title: filename,
          declaredLength: length,
          alt_text: str(args.alt_text),
          bytes: undefined,
          uploadContentType: undefined,
          uploadUrl,
          urlPrivate: `${base()}/files/${id}/${encodeURIComponent(filename)}`,
          completed: false,
          shares: [],
        });
        return ok({ upload_url: uploadUrl, file_id: id });
      }
      case 'files.completeUploadExternal': {
        const list = asArray(args.files);
        if (!list || list.length === 0) return fail('invalid_arguments');
        const entries: Array<{ file: FakeSlackFile; title: string | undefined }> = [];
        for (const entry of list) {
          const id = isRecord(entry) ? str(entry.id) : undefined;
          const file = id === undefined ? undefined : files.get(id);
          if (!file || !isRecord(entry)) return fail('file_not_found');
          if (file.bytes === undefined) return fail('file_upload_incomplete');
          entries.push({ file, title: str(entry.title) });
        }
        const channelId = str(args.channel_id) ?? str(args.channels);
        const threadTs = str(args.thread_ts);
        if (channelId !== undefined) {
          const channelError = checkChannel(channelId);
          if (channelError) return channelError;
        }
        const blockError = checkBlocks(args);
        if (blockError) return blockError;
        const out = entries.map(({ file, title }) => {
          file.completed = true;
          if (title !== undefined) file.title = title;
          if (channelId !== undefined) {
            file.shares.push({
              channel_id: channelId,
              thread_ts: threadTs,
              initial_comment: str(args.initial_comment),
              blocks: asArray(args.blocks),
            });
          }
          return {
            id: file.id,
            created: Math.floor(now() / 1000),
            name: file.filename,
            title: file.title,
            mimetype: file.uploadContentType ?? 'application/octet-stream',
            size: file.bytes?.length ?? 0,
            user: bot.userId,
            url_private: file.urlPrivate,
            permalink: `https://${team.domain}.slack.com/files/${bot.userId}/${file.id}/${file.filename}`,
            alt_txt: file.alt_text,
            shares: {},
          };
        });
        return ok({ files: out });
      }
      default:
        return fail('unknown_method');
    }
  };

  const applyUpdate = (
    stored: StoredMessage,
    change: { text: string | undefined; blocks: unknown[] | undefined; attachments: unknown[] | undefined },
    via: FakeSlackMessageVersion['via'],
    callSeq: number,
  ): void => {
    const m = stored.current;
    if (change.text !== undefined) m.text = change.text;
    // Slack keeps previous blocks/attachments when the field is omitted; [] removes them.
    if (change.blocks !== undefined) m.blocks = change.blocks.length === 0 ? undefined : change.blocks;
    if (change.attachments !== undefined) m.attachments = change.attachments.length === 0 ? undefined : change.attachments;
    m.edited = { user: bot.userId, ts: nextTs() };
    stored.versions.push({
      text: m.text,
      blocks: structuredClone(m.blocks),
      attachments: structuredClone(m.attachments),
      via,
      seq: callSeq,
    });
  };

  const send = (res: ServerResponse, result: ApiResult): void => {
    const payload = JSON.stringify(result.body);
    res.writeHead(result.status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(payload),
      ...(result.headers ?? {}),
    });
    res.end(payload);
  };

  const bearer = (req: IncomingMessage): string | undefined => {
    const header = req.headers.authorization;
    if (typeof header !== 'string') return undefined;
    const m = /^Bearer\s+(.+)$/i.exec(header.trim());
    return m?.[1];
  };

  const onApi = async (req: IncomingMessage, res: ServerResponse, method: string, url: URL): Promise<void> => {
    const raw = await readBody(req);
    const contentType = req.headers['content-type'];
    const args = decodeArgs(raw, contentType, url.searchParams);
    // Slack reads a JSON body's token from the Authorization header only.
    const json = (contentType ?? '').toLowerCase().startsWith('application/json');
    const token = bearer(req) ?? (json ? undefined : str(args.token));
    await applyDelay(method);
    const fault = takeFault(method);
    // seq of this call: the record() below takes seq + 1; handlers run synchronously before it.
    const result = fault ? faultResult(fault) : handleApi(method, args, token, () => seq + 1);
    record({ kind: 'api', method, args, token, contentType, status: result.status, response: result.body });
    send(res, result);
  };

  const onUpload = async (req: IncomingMessage, res: ServerResponse, fileId: string): Promise<void> => {
    const raw = await readBody(req);
    const contentType = req.headers['content-type'];
    const token = bearer(req);
    const file = files.get(fileId);
    let bytes: Buffer = raw;
    let partType = contentType;
    let partName: string | undefined;
    if ((contentType ?? '').toLowerCase().startsWith('multipart/form-data')) {
      const parts = parseMultipart(raw, contentType ?? '');
      const part = parts.find((p) => p.filename !== undefined) ?? parts[0];
      bytes = part?.data ?? Buffer.alloc(0);
      partType = part?.contentType;
      partName = part?.filename;
    }
    const args: Record<string, unknown> = { file_id: fileId, length: bytes.length };
    if (partName !== undefined) args.filename = partName;
    await applyDelay('upload');
    const fault = takeFault('upload');
    let status = 200;
    let text = `OK - ${bytes.length}`;
    if (fault) {
      status = fault.kind === 'ratelimit' ? 429 : fault.kind === 'http' ? fault.status : 400;
      text = fault.kind === 'fail' ? fault.error : `error ${status}`;
    } else if (!file) {
      status = 404;
      text = 'file_not_found';
    } else {
      file.bytes = bytes;
      file.uploadContentType = partType;
    }
    record({
      kind: 'upload',
      method: 'upload',
      args,
      token,
      contentType,
      status,
      response: status === 200 ? { ok: true, body: text } : { ok: false, error: text },
    });
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(text);
  };

  const onFileDownload = (req: IncomingMessage, res: ServerResponse, fileId: string): void => {
    const file = files.get(fileId);
    const status = file?.bytes ? 200 : 404;
    record({
      kind: 'file_download',
      method: 'file_download',
      args: { file_id: fileId },
      token: bearer(req),
      contentType: undefined,
      status,
      response: status === 200 ? { ok: true } : { ok: false, error: 'file_not_found' },
    });
    if (!file?.bytes) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, {
      'content-type': file.uploadContentType ?? 'application/octet-stream',
      'content-length': file.bytes.length,
    });
    res.end(file.bytes);
  };

  const responseState = (id: string): ResponseUrlState => {
    let state = responseUrls.get(id);
    if (!state) {
      state = { uses: 0, createdAt: now(), expired: false, bind: undefined, log: [] };
      responseUrls.set(id, state);
    }
    return state;
  };

  const onResponseUrl = async (req: IncomingMessage, res: ServerResponse, id: string): Promise<void> => {
    const raw = await readBody(req);
    const contentType = req.headers['content-type'];
    let body: unknown;
    const text = raw.toString('utf8');
    if ((contentType ?? '').toLowerCase().startsWith('application/json')) {
      try {
        body = JSON.parse(text) as unknown;
      } catch {
        body = text;
      }
    } else {
      const form = decodeArgs(raw, contentType, new URLSearchParams());
      body = typeof form.payload === 'string' ? (JSON.parse(form.payload) as unknown) : form;
    }
    const state = responseState(id);
    let result: ApiResult;
    if (state.expired || now() - state.createdAt > ttlMs) {
      result = { status: 404, body: { ok: false, error: 'expired_url' } };
    } else if (state.uses >= maxUses) {
      result = { status: 404, body: { ok: false, error: 'used_url' } };
    } else {
      state.uses += 1;
      result = { status: 200, body: { ok: true } };
    }
    const thisSeq = seq + 1;
    if (result.status === 200 && state.bind && isRecord(body)) {
      const stored = messages.get(state.bind.channel)?.get(state.bind.ts);
      if (stored && !stored.deleted) {
        if (truthy(body.delete_original)) {
          stored.deleted = true;
        } else if (truthy(body.replace_original)) {
          applyUpdate(
            stored,
            { text: str(body.text) ?? '', blocks: asArray(body.blocks) ?? [], attachments: asArray(body.attachments) },
            'response_url',
            thisSeq,
          );
        }
      }
    }
    state.log.push({ body, status: result.status, accepted: result.status === 200, seq: thisSeq });
    record({
      kind: 'response_url',
      method: 'response_url',
      args: { id, ...(isRecord(body) ? body : { body }) },
      token: undefined,
      contentType,
      status: result.status,
      response: result.body,
    });
    send(res, result);
  };

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = url.pathname;
    const handle = async (): Promise<void> => {
      let m: RegExpExecArray | null;
      if ((m = /^\/api\/([A-Za-z0-9_.]+)$/.exec(path)) && (req.method === 'POST' || req.method === 'GET')) {
        await onApi(req, res, m[1] ?? '', url);
      } else if ((m = /^\/upload\/([A-Za-z0-9]+)$/.exec(path)) && req.method === 'POST') {
        await onUpload(req, res, m[1] ?? '');
      } else if ((m = /^\/files\/([A-Za-z0-9]+)(?:\/.*)?$/.exec(path)) && req.method === 'GET') {
        onFileDownload(req, res, m[1] ?? '');
      } else if ((m = /^\/response\/([^/]+)$/.exec(path)) && req.method === 'POST') {
        await onResponseUrl(req, res, decodeURIComponent(m[1] ?? ''));
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found');
      }
    };
    handle().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  port = (server.address() as AddressInfo).port;

  const liveMessages = (channel: string): StoredMessage[] =>
    [...(messages.get(channel)?.values() ?? [])].filter((s) => !s.deleted);

  const fake: FakeSlack = {
    get url() {
      return base();
    },
    get apiUrl() {
      return `${base()}/api/`;
    },
    get port() {
      return port;
    },
    get lastSeq() {
      return seq;
    },
    calls(method) {
      return method === undefined ? [...calls] : calls.filter((c) => c.method === method);
    },
    messages(channel) {
      return liveMessages(channel)
        .map((s) => snapshot(s.current))
        .sort((a, b) => Number(a.ts) - Number(b.ts));
    },
    message(channel, ts) {
      const stored = messages.get(channel)?.get(ts);
      return stored && !stored.deleted ? snapshot(stored.current) : undefined;
    },
    updatesOf(channel, ts) {
      const stored = messages.get(channel)?.get(ts);
      return stored ? structuredClone(stored.versions.slice(1)) : [];
    },
    thread(channel, ts) {
      return fake.messages(channel).filter((m) => m.thread_ts === ts);
    },
    views() {
      return structuredClone(views);
    },
    ephemerals(channel) {
      return structuredClone(channel === undefined ? ephemerals : ephemerals.filter((e) => e.channel === channel));
    },
    files() {
      return [...files.values()].map((f) => ({ ...f, shares: [...f.shares] }));
    },
    file(id) {
      const f = files.get(id);
      return f ? { ...f, shares: [...f.shares] } : undefined;
    },
    setUser(id, user) {
      users.set(id, user);
    },
    rateLimit(method, opts = {}) {
      faults.push({
        kind: 'ratelimit',
        method,
        remaining: opts.times ?? 1,
        retryAfterSeconds: opts.retryAfterSeconds ?? 1,
      });
    },
    failNext(method, error, times = 1) {
      faults.push({ kind: 'fail', method, remaining: times, error });
    },
    serverError(method, opts = {}) {
      faults.push({ kind: 'http', method, remaining: opts.times ?? 1, status: opts.status ?? 500 });
    },
    delay(method, ms, opts = {}) {
      const rule: DelayRule = { method, ms, remaining: opts.times ?? 1, waiting: new Set() };
      delays.push(rule);
      return {
        get held() {
          return rule.waiting.size;
        },
        release() {
          for (const release of [...rule.waiting]) release();
        },
      };
    },
    notInChannel(channelId) {
      notIn.add(channelId);
      return () => {
        notIn.delete(channelId);
      };
    },
    clearNotInChannel(channelId) {
      if (channelId === undefined) notIn.clear();
      else notIn.delete(channelId);
    },
    clearFaults() {
      faults = [];
      delays = [];
      notIn = new Set();
    },
    responseUrl(id, bind) {
      const state = responseState(id);
      if (bind) state.bind = bind;
      return `${base()}/response/${encodeURIComponent(id)}`;
    },
    responses(id) {
      return structuredClone(responseUrls.get(id)?.log ?? []);
    },
    expireResponseUrl(id) {
      responseState(id).expired = true;
    },
    waitFor(predicate, opts = {}) {
      const timeoutMs = opts.timeoutMs ?? 5000;
      const since = opts.since ?? 0;
      for (const call of calls) {
        if (call.seq > since && predicate(call)) return Promise.resolve(call);
      }
      return new Promise<SlackCall>((resolve, reject) => {
        const waiter: Waiter = {
          predicate,
          since,
          resolve,
          reject,
          timer: setTimeout(() => {
            waiters.delete(waiter);
            const recent = calls.slice(-15).map(summarize);
            reject(
              new Error(
                `fakeSlack.waitFor: no matching call within ${timeoutMs} ms (${calls.length} calls recorded` +
                  `${since > 0 ? `, looking after #${since}` : ''}).` +
                  (recent.length > 0 ? ` Most recent:\n${recent.join('\n')}` : ' No calls at all.'),
              ),
            );
          }, timeoutMs),
        };
        waiters.add(waiter);
      });
    },
    reset() {
      calls = [];
      faults = [];
      delays = [];
      notIn = new Set();
      messages = new Map();
      ephemerals = [];
      files = new Map();
      responseUrls = new Map();
      views = [];
      usedTriggers = new Set();
    },
    async close() {
      for (const waiter of waiters) {
        clearTimeout(waiter.timer);
        waiter.reject(new Error('fakeSlack closed while waiting'));
      }
      waiters.clear();
      for (const release of [...held]) release();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
  return fake;
}

// ---------------------------------------------------------------------------------------------
// Request helpers: drive a real Bolt app over HTTP
// ---------------------------------------------------------------------------------------------

export interface SlackSignatureHeaders {
  'X-Slack-Signature': string;
  'X-Slack-Request-Timestamp': string;
}

/** Headers Slack sends: `v0=` + hex HMAC-SHA256(signingSecret, `v0:{ts}:{rawBody}`). */
export function signSlackRequest(
  signingSecret: string,
  rawBody: string,
  timestampSeconds: number = Math.floor(Date.now() / 1000),
): SlackSignatureHeaders {
  const hmac = createHmac('sha256', signingSecret).update(`v0:${timestampSeconds}:${rawBody}`).digest('hex');
  return { 'X-Slack-Signature': `v0=${hmac}`, 'X-Slack-Request-Timestamp': String(timestampSeconds) };
}

export interface SignedPostOptions {
  /** Request timestamp in seconds (default now). Older than 5 minutes → Bolt answers 401. */
  timestamp?: number;
  /** Sign with a wrong secret (Bolt answers 401). */
  badSignature?: boolean;
  /** Override Content-Type (default exactly `application/x-www-form-urlencoded`; a `; charset` suffix makes Bolt answer 400). */
  contentType?: string;
  /** Extra headers, e.g. `X-Slack-Retry-Num`. */
  headers?: Record<string, string>;
}

export interface SignedPostResult {
  status: number;
  /** Response body as text ('' for a bare ack()). */
  body: string;
  headers: Record<string, string>;
}

export interface SlashCommandParams {
  command?: string;
  text?: string;
  user_id?: string;
  user_name?: string;
  team_id?: string;
  team_domain?: string;
  channel_id?: string;
  channel_name?: string;
  response_url?: string;
  trigger_id?: string;
  api_app_id?: string;
  token?: string;
  enterprise_id?: string;
}

export interface BlockActionParams {
  user: string | { id: string; username?: string; name?: string; team_id?: string };
  team?: string | { id: string; domain?: string };
  channel: string | { id: string; name?: string };
  /** The message holding the buttons (e.g. `fake.message(channel, ts)`). */
  message: { ts: string; text?: string; blocks?: unknown[]; thread_ts?: string; user?: string; bot_id?: string };
  actions: Array<{
    action_id: string;
    /** Default: the block of `message.blocks` holding this action_id, else 'actions'. */
    block_id?: string;
    value?: string;
    type?: string;
    text?: { type: 'plain_text'; text: string; emoji?: boolean };
    style?: string;
    action_ts?: string;
  }>;
  response_url?: string;
  trigger_id?: string;
  api_app_id?: string;
  token?: string;
  state?: { values: Record<string, unknown> };
}

/** Accepts `http://host:port` (→ `/slack/events`) or a full endpoint URL. */
function eventsUrl(boltUrl: string): string {
  const url = new URL(boltUrl);
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/slack/events';
  return url.toString();
}

/** POST a signed body to a Bolt endpoint. */
export async function postSigned(
  boltUrl: string,
  signingSecret: string,
  rawBody: string,
  opts: SignedPostOptions = {},
): Promise<SignedPostResult> {
  const secret = opts.badSignature ? `${signingSecret}-wrong` : signingSecret;
  const signature = signSlackRequest(secret, rawBody, opts.timestamp);
  const response = await fetch(eventsUrl(boltUrl), {
    method: 'POST',
    headers: {
      'Content-Type': opts.contentType ?? 'application/x-www-form-urlencoded',
      ...signature,
      ...(opts.headers ?? {}),
    },
    body: rawBody,
  });
  const body = await response.text();
  return { status: response.status, body, headers: Object.fromEntries(response.headers.entries()) };
}

let triggerCounter = 0;
const nextTrigger = (): string => {
  triggerCounter += 1;
  return `${1_700_000_000 + triggerCounter}.1.${'a'.repeat(8)}${triggerCounter}`;
};

/**
 * The form-encoded body Slack sends for a slash command (a fresh trigger_id unless one is given).
 * Post the same string twice with `postSigned` and the same `timestamp` to replay identical bytes.
 */
export function slashCommandBody(params: SlashCommandParams): string {
  const fields: Record<string, string> = {
    token: params.token ?? 'verification-token',
    team_id: params.team_id ?? 'T1',
    team_domain: params.team_domain ?? 'fake-team',
    channel_id: params.channel_id ?? 'C1',
    channel_name: params.channel_name ?? 'general',
    user_id: params.user_id ?? 'U1',
    user_name: params.user_name ?? 'alice',
    command: params.command ?? '/imagine',
    text: params.text ?? '',
    api_app_id: params.api_app_id ?? 'A1',
    is_enterprise_install: 'false',
    response_url: params.response_url ?? 'http://127.0.0.1:9/response/unused-slash-command',
    trigger_id: params.trigger_id ?? nextTrigger(),
  };
  if (params.enterprise_id !== undefined) fields.enterprise_id = params.enterprise_id;
  return new URLSearchParams(fields).toString();
}

/** A signed slash command, form-encoded like Slack sends it. */
export function postSlashCommand(
  boltUrl: string,
  signingSecret: string,
  params: SlashCommandParams,
  opts: SignedPostOptions = {},
): Promise<SignedPostResult> {
  return postSigned(boltUrl, signingSecret, slashCommandBody(params), opts);
}

/** Build the `block_actions` payload Slack sends for a button click. */
export function blockActionPayload(params: BlockActionParams): Record<string, unknown> {
  const user = typeof params.user === 'string' ? { id: params.user } : params.user;
  const team = typeof params.team === 'string' ? { id: params.team } : (params.team ?? { id: 'T1' });
  const channel = typeof params.channel === 'string' ? { id: params.channel } : params.channel;
  const teamInfo = { id: team.id, domain: team.domain ?? 'fake-team' };
  const username = user.username ?? user.name ?? user.id.toLowerCase();
  const blocks = params.message.blocks ?? [];
  const blockIdOf = (actionId: string): string => {
    for (const block of blocks) {
      if (!isRecord(block)) continue;
      const elements = asArray(block.elements) ?? (isRecord(block.accessory) ? [block.accessory] : []);
      if (elements.some((e) => isRecord(e) && e.action_id === actionId) && typeof block.block_id === 'string') {
        return block.block_id;
      }
    }
    return 'actions';
  };
  const actionTs = `${Math.floor(Date.now() / 1000)}.${String(Date.now() % 1_000_000).padStart(6, '0')}`;
  return {
    type: 'block_actions',
    user: { id: user.id, username, name: user.name ?? username, team_id: user.team_id ?? teamInfo.id },
    api_app_id: params.api_app_id ?? 'A1',
    token: params.token ?? 'verification-token',
    container: {
      type: 'message',
      message_ts: params.message.ts,
      channel_id: channel.id,
      is_ephemeral: false,
      ...(params.message.thread_ts !== undefined ? { thread_ts: params.message.thread_ts } : {}),
    },
    trigger_id: params.trigger_id ?? nextTrigger(),
    team: teamInfo,
    enterprise: null,
    is_enterprise_install: false,
    channel: { id: channel.id, name: channel.name ?? 'general' },
    message: {
      type: 'message',
      user: params.message.user ?? 'U0BOT',
      bot_id: params.message.bot_id ?? 'B1',
      ts: params.message.ts,
      text: params.message.text ?? '',
      blocks,
      ...(params.message.thread_ts !== undefined ? { thread_ts: params.message.thread_ts } : {}),
    },
    state: params.state ?? { values: {} },
    response_url: params.response_url ?? 'http://127.0.0.1:9/response/unused-block-action',
    actions: params.actions.map((a) => ({
      action_id: a.action_id,
      block_id: a.block_id ?? blockIdOf(a.action_id),
      text: a.text ?? { type: 'plain_text', text: a.action_id, emoji: true },
      ...(a.value !== undefined ? { value: a.value } : {}),
      ...(a.style !== undefined ? { style: a.style } : {}),
      type: a.type ?? 'button',
      action_ts: a.action_ts ?? actionTs,
    })),
  };
}

/** A signed `block_actions` interaction, sent as `payload=<urlencoded json>`. */
export function postBlockAction(
  boltUrl: string,
  signingSecret: string,
  params: BlockActionParams,
  opts: SignedPostOptions = {},
): Promise<SignedPostResult> {
  const body = new URLSearchParams({ payload: JSON.stringify(blockActionPayload(params)) }).toString();
  return postSigned(boltUrl, signingSecret, body, opts);
}

export interface ViewSubmissionParams {
  /** The view as opened (`fake.views()[i].view`): its id, callback_id, private_metadata and blocks come back. */
  view: Record<string, unknown>;
  user: string | { id: string; username?: string; name?: string; team_id?: string };
  team?: string | { id: string; domain?: string };
  /** What was typed: `values[block_id][action_id]` for a plain_text_input; a field left out is sent as null (empty). */
  values?: Record<string, Record<string, string | null>>;
  trigger_id?: string;
  api_app_id?: string;
  token?: string;
}

/**
 * The `view_submission` payload Slack sends when a modal is submitted: the opened view with its
 * `state.values` holding every input block's element (`{ type, value }`, null when left empty).
 */
export function viewSubmissionPayload(params: ViewSubmissionParams): Record<string, unknown> {
  const user = typeof params.user === 'string' ? { id: params.user } : params.user;
  const team = typeof params.team === 'string' ? { id: params.team } : (params.team ?? { id: 'T1' });
  const username = user.username ?? user.name ?? user.id.toLowerCase();
  const values: Record<string, Record<string, { type: string; value: string | null }>> = {};
  const known = new Set<string>();
  for (const block of asArray(params.view.blocks) ?? []) {
    if (!isRecord(block) || block.type !== 'input' || typeof block.block_id !== 'string' || !isRecord(block.element)) continue;
    const actionId = str(block.element.action_id) ?? '';
    known.add(`${block.block_id}/${actionId}`);
    values[block.block_id] = { [actionId]: { type: String(block.element.type), value: params.values?.[block.block_id]?.[actionId] ?? null } };
  }
  for (const [blockId, actions] of Object.entries(params.values ?? {})) {
    for (const actionId of Object.keys(actions)) {
      if (!known.has(`${blockId}/${actionId}`)) throw new Error(`the view has no input ${blockId}/${actionId}`);
    }
  }
  return {
    type: 'view_submission',
    team: { id: team.id, domain: team.domain ?? 'fake-team' },
    user: { id: user.id, username, name: user.name ?? username, team_id: user.team_id ?? team.id },
    api_app_id: params.api_app_id ?? 'A1',
    token: params.token ?? 'verification-token',
    trigger_id: params.trigger_id ?? nextTrigger(),
    view: { ...structuredClone(params.view), state: { values } },
    response_urls: [],
    is_enterprise_install: false,
    enterprise: null,
  };
}

/** A signed `view_submission`, sent as `payload=<urlencoded json>`; Bolt answers the ack's `response_action` as JSON (or an empty body). */
export function postViewSubmission(
  boltUrl: string,
  signingSecret: string,
  params: ViewSubmissionParams,
  opts: SignedPostOptions = {},
): Promise<SignedPostResult> {
  const body = new URLSearchParams({ payload: JSON.stringify(viewSubmissionPayload(params)) }).toString();
  return postSigned(boltUrl, signingSecret, body, opts);
}
