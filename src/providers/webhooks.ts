/**
 * Webhook deliveries from fal and Replicate: who sent them (signature), when (timestamp within five
 * minutes), whether we have seen them (replay), and whether they are about a call we wait on. Only a
 * delivery that passes all four becomes a notice on the board (src/core/notices.ts); any other is
 * refused with a status and one line of reason, and changes nothing.
 *
 * fal signs with ED25519 (docs.fal.ai, "Webhooks" → "Verifying Your Webhook",
 * https://docs.fal.ai/model-apis/model-endpoints/webhooks): headers `X-Fal-Webhook-Request-Id`,
 * `X-Fal-Webhook-User-Id`, `X-Fal-Webhook-Timestamp` (Unix seconds, within ±5 min) and
 * `X-Fal-Webhook-Signature` (hex); the signed message is request id, user id, timestamp and the
 * SHA-256 hex of the raw body, joined by "\n"; the public keys are a JWKS
 * (https://rest.alpha.fal.ai/.well-known/jwks.json, cacheable for up to 24 h), and any of its keys may
 * have signed. fal retries a delivery that is not answered 2xx, 10 times over about 2 hours.
 *
 * Replicate signs with Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature:
 * v1,<base64>`, HMAC-SHA256 keyed with the `whsec_` secret of the account's default webhook), checked
 * with the `standardwebhooks` reference library; it does no replay check, so we do.
 *
 * Answers, chosen for how the senders retry (both retry what is not 2xx): 401 a missing or bad signature
 * or a timestamp out of the window (a forger's retries change nothing); 404 a call we do not wait on (a
 * delivery that overtook its own submit's answer is accepted on the retry); 409 a delivery seen before;
 * 503 when our side cannot check it now (keys or secret unreachable, the board down): the retry may pass.
 * A duplicate with a new id (a second delivery for an ended call) is accepted and changes nothing.
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import Replicate from 'replicate';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { DEFAULT_FAL_JWKS_URL, type Config } from '../config.js';
import type { CallNotice, CallNotices } from '../core/notices.js';
import { silentLogger, type Logger } from '../core/ports.js';
import { falNoticeOf } from './fal.js';
import { strictFetch, type Fetch } from './http.js';
import { DEFAULT_REPLICATE_BASE_URL, replicateNoticeOf } from './replicate.js';

/** How far a delivery's timestamp may be from our clock, either way. */
export const TIMESTAMP_TOLERANCE_MS = 5 * 60_000;
/** How long fal's keys are used before they are fetched again (fal: "up to 24 hours"). */
const JWKS_CACHE_MS = 24 * 60 * 60_000;
/** After a failed fetch of keys or secret, deliveries are answered 503 this long before we ask again. */
const FETCH_RETRY_MS = 30_000;
/** A signature no cached key verifies fetches the keys again (fal rotated them), at most this often. */
const JWKS_REFRESH_MS = 60_000;
/** fal's key set is a few hundred bytes; anything much larger is not it. */
const MAX_JWKS_BYTES = 64 * 1024;

/** What a webhook route hands over: the raw body and the headers, as received. */
export interface Delivery {
  body: Buffer;
  headers: Record<string, string | string[] | undefined>;
}

/** How a delivery was answered: `reason` is one line, without anything the sender sent. */
export interface Verdict {
  status: number;
  reason?: string;
}

class Unavailable extends Error {}

function header(delivery: Delivery, name: string): string | undefined {
  const value = delivery.headers[name];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** Seconds since the epoch as a timestamp header carries them, checked against our clock. */
function timestampRefusal(raw: string, now: number): Verdict | undefined {
  if (!/^\d{1,12}$/.test(raw)) return { status: 401, reason: 'malformed timestamp' };
  const skew = Math.abs(now - Number(raw) * 1000);
  return skew > TIMESTAMP_TOLERANCE_MS ? { status: 401, reason: 'timestamp outside the 5-minute window' } : undefined;
}

/**
 * A value fetched once and kept (fal's keys, Replicate's secret): fetched again after `keepMs`, or on
 * demand at most every `refreshMs`; after a failure, not asked again for FETCH_RETRY_MS.
 */
class Fetched<T> {
  private value: T | undefined;
  private fetchedAt = -Infinity;
  private failedAt = -Infinity;
  private pending: Promise<T> | undefined;

  constructor(
    private readonly load: () => Promise<T>,
    private readonly now: () => number,
    private readonly keepMs: number,
    private readonly refreshMs: number,
  ) {}

  /** The value; `fresh` asks for a new one if the kept one is older than `refreshMs`. */
  async get(fresh = false): Promise<T> {
    const now = this.now();
    const age = now - this.fetchedAt;
    if (this.value !== undefined && age < this.keepMs && !(fresh && age >= this.refreshMs)) return this.value;
    if (this.pending) return this.pending;
    if (now - this.failedAt < FETCH_RETRY_MS) {
      if (this.value !== undefined) return this.value;
      throw new Unavailable('fetched a moment ago without success');
    }
    this.pending = this.load().then(
      (value) => {
        this.value = value;
        this.fetchedAt = this.now();
        return value;
      },
      (error: unknown) => {
        this.failedAt = this.now();
        // Keys that were good a day ago are better than none while the fetch fails.
        if (this.value !== undefined) return this.value;
        throw new Unavailable(error instanceof Error ? error.message : String(error));
      },
    );
    try {
      return await this.pending;
    } finally {
      this.pending = undefined;
    }
  }
}

export interface FalKeysOptions {
  /** @default DEFAULT_FAL_JWKS_URL (config.ts) */
  url?: string;
  fetch?: Fetch;
  /** @default 30000 */
  requestTimeoutMs?: number;
  now?: () => number;
}

/** fal's ED25519 public keys from its JWKS, kept for 24 h. */
export class FalKeys {
  private readonly keys: Fetched<KeyObject[]>;

  constructor(options: FalKeysOptions = {}) {
    const url = options.url ?? DEFAULT_FAL_JWKS_URL;
    const fetchJwks = strictFetch({ provider: "fal's key server", fetch: options.fetch, requestTimeoutMs: options.requestTimeoutMs ?? 30_000 });
    this.keys = new Fetched(
      async () => {
        const response = await fetchJwks(url, { headers: { accept: 'application/json' } });
        if (!response.ok) throw new Error(`fal's key set answered HTTP ${response.status}`);
        const text = await response.text();
        if (text.length > MAX_JWKS_BYTES) throw new Error("fal's key set is larger than expected");
        const keys = publicKeysOf(parseJson(Buffer.from(text)));
        if (keys.length === 0) throw new Error("fal's key set holds no ED25519 key");
        return keys;
      },
      options.now ?? Date.now,
      JWKS_CACHE_MS,
      JWKS_REFRESH_MS,
    );
  }

  /** The keys; `fresh` fetches them again when a signature matched none (at most once a minute). */
  get(fresh = false): Promise<KeyObject[]> {
    return this.keys.get(fresh);
  }
}

/** The ED25519 keys of a JWKS (`{keys: [{kty: 'OKP', crv: 'Ed25519', x}]}`); anything else is skipped. */
function publicKeysOf(jwks: unknown): KeyObject[] {
  const list = (jwks as { keys?: unknown } | undefined)?.keys;
  if (!Array.isArray(list)) return [];
  return list.flatMap((jwk: unknown) => {
    const { kty, crv, x } = (jwk ?? {}) as Record<string, unknown>;
    if (kty !== 'OKP' || crv !== 'Ed25519' || typeof x !== 'string') return [];
    try {
      return [createPublicKey({ key: { kty, crv, x }, format: 'jwk' })];
    } catch {
      return [];
    }
  });
}

/** fal's signed message: request id, user id, timestamp and the body's SHA-256 (hex), one per line. */
export function falSignedMessage(requestId: string, userId: string, timestamp: string, body: Buffer): Buffer {
  const digest = createHash('sha256').update(body).digest('hex');
  return Buffer.from([requestId, userId, timestamp, digest].join('\n'), 'utf8');
}

/** Checks a fal delivery's signature; the replay key is the request id with the signature. */
async function verifyFal(delivery: Delivery, keys: FalKeys, now: number): Promise<Verdict | { replayKey: string }> {
  const requestId = header(delivery, 'x-fal-webhook-request-id');
  const userId = header(delivery, 'x-fal-webhook-user-id');
  const timestamp = header(delivery, 'x-fal-webhook-timestamp');
  const signature = header(delivery, 'x-fal-webhook-signature');
  if (!requestId || !userId || !timestamp || !signature) return { status: 401, reason: 'missing fal signature headers' };
  const late = timestampRefusal(timestamp, now);
  if (late) return late;
  // An ED25519 signature is 64 bytes.
  if (!/^[0-9a-f]{128}$/i.test(signature)) return { status: 401, reason: 'malformed signature' };
  const message = falSignedMessage(requestId, userId, timestamp, delivery.body);
  const bytes = Buffer.from(signature, 'hex');
  const signedBy = (set: KeyObject[]) => set.some((key) => verify(null, message, key, bytes));
  if (!signedBy(await keys.get()) && !signedBy(await keys.get(true))) return { status: 401, reason: 'signature does not match' };
  return { replayKey: `fal:${requestId}:${signature.toLowerCase()}` };
}

/** Checks a Replicate delivery's signature; the replay key is its webhook id. */
async function verifyReplicate(delivery: Delivery, secret: () => Promise<string>, now: number): Promise<Verdict | { replayKey: string }> {
  const id = header(delivery, 'webhook-id');
  const timestamp = header(delivery, 'webhook-timestamp');
  const signature = header(delivery, 'webhook-signature');
  if (!id || !timestamp || !signature) return { status: 401, reason: 'missing webhook signature headers' };
  if (id.length > 200) return { status: 401, reason: 'malformed webhook id' };
  const late = timestampRefusal(timestamp, now);
  if (late) return late;
  try {
    new Webhook(await secret()).verify(delivery.body, { 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': signature }, { jsonParse: false });
  } catch (error) {
    if (error instanceof WebhookVerificationError) return { status: 401, reason: 'signature does not match' };
    throw error;
  }
  return { replayKey: `replicate:${id}` };
}

export interface WebhookReceiverOptions {
  notices: CallNotices;
  log?: Logger;
  /** set when fal is configured */
  fal?: { keys: FalKeys };
  /** set when Replicate is configured: the account's signing secret (`whsec_…`) */
  replicate?: { secret: () => Promise<string> };
  now?: () => number;
}

/** What the webhook routes call: one delivery in, one verdict out. */
export class WebhookReceiver {
  private readonly log: Logger;
  private readonly now: () => number;

  constructor(private readonly options: WebhookReceiverOptions) {
    this.log = options.log ?? silentLogger;
    this.now = options.now ?? Date.now;
  }

  /** Fetches fal's keys and Replicate's secret now, so the first delivery does not wait for them. */
  async warmUp(): Promise<void> {
    const { fal, replicate } = this.options;
    const results = await Promise.allSettled([fal?.keys.get(), replicate?.secret()]);
    for (const [i, result] of results.entries()) {
      if (result.status === 'rejected') {
        this.log.warn({ provider: i === 0 ? 'fal' : 'replicate', error: (result.reason as Error).message }, 'webhooks: signing keys not fetched yet; deliveries are answered 503 until they are');
      }
    }
  }

  async receive(provider: 'fal' | 'replicate', delivery: Delivery): Promise<Verdict> {
    try {
      return await this.check(provider, delivery);
    } catch (error) {
      if (error instanceof Unavailable) return { status: 503, reason: `cannot check ${provider}'s signature now` };
      this.log.warn({ provider, error: error instanceof Error ? error.message : String(error) }, 'webhooks: a delivery could not be handled');
      return { status: 503, reason: 'cannot handle the delivery now' };
    }
  }

  private async check(provider: 'fal' | 'replicate', delivery: Delivery): Promise<Verdict> {
    const { fal, replicate, notices } = this.options;
    const now = this.now();
    let signed: Verdict | { replayKey: string };
    if (provider === 'fal') {
      if (!fal) return { status: 404, reason: 'fal is not configured' };
      signed = await verifyFal(delivery, fal.keys, now);
    } else {
      if (!replicate) return { status: 404, reason: 'Replicate is not configured' };
      signed = await verifyReplicate(delivery, replicate.secret, now);
    }
    if ('status' in signed) return signed;

    // Signed by the provider from here on: its body is as trustworthy as its API's answers.
    const body = parseJson(delivery.body);
    const notice: CallNotice | { requestId: string; ended: false } | undefined = provider === 'fal' ? falNoticeOf(body) : replicateNoticeOf(body);
    if (notice === undefined) return { status: 400, reason: 'body is not a call delivery' };
    const { requestId } = notice;
    if (!(await notices.isExpected(provider, requestId))) return { status: 404, reason: 'not a call we are waiting on' };
    if (!(await notices.claim(signed.replayKey))) return { status: 409, reason: 'delivery seen before' };
    // Only "completed" is asked for; another event (or a filter ignored) is acknowledged and changes nothing.
    if ('ended' in notice) return { status: 200 };
    try {
      await notices.publish(notice);
    } catch (error) {
      // Not acted on: the provider's retry must not count as a replay.
      await notices.release(signed.replayKey).catch(() => undefined);
      throw error;
    }
    this.log.debug({ provider, requestId, state: notice.status.state }, 'webhooks: call ended');
    return { status: 200 };
  }
}

export interface ReplicateSecretOptions {
  /** REPLICATE_WEBHOOK_SECRET; unset = asked of the API */
  secret?: string;
  token: string;
  baseUrl?: string;
  fetch?: Fetch;
  requestTimeoutMs?: number;
  now?: () => number;
}

/** The signing secret: the configured one, or the default webhook's, fetched once from the API. */
export function replicateSecret(options: ReplicateSecretOptions): () => Promise<string> {
  if (options.secret) {
    const configured = options.secret;
    return () => Promise.resolve(configured);
  }
  const fetched = new Fetched(
    async () => {
      const client = new Replicate({
        auth: options.token,
        baseUrl: options.baseUrl ?? DEFAULT_REPLICATE_BASE_URL,
        fetch: strictFetch({ provider: 'Replicate', fetch: options.fetch, requestTimeoutMs: options.requestTimeoutMs ?? 30_000 }),
      });
      const { key } = (await client.webhooks.default.secret.get()) as { key?: unknown };
      if (typeof key !== 'string' || !/^whsec_[A-Za-z0-9+/=]{8,}$/.test(key)) throw new Error('Replicate answered no usable signing secret');
      return key;
    },
    options.now ?? Date.now,
    Infinity,
    Infinity,
  );
  return () => fetched.get();
}

export interface ReceiverOverrides {
  fetch?: Fetch;
  requestTimeoutMs?: number;
}

/** The receiver for the configured providers, as the bot builds it. */
export function createWebhookReceiver(config: Config, notices: CallNotices, log: Logger, overrides: ReceiverOverrides = {}): WebhookReceiver {
  const http = { ...(overrides.fetch ? { fetch: overrides.fetch } : {}), ...(overrides.requestTimeoutMs ? { requestTimeoutMs: overrides.requestTimeoutMs } : {}) };
  return new WebhookReceiver({
    notices,
    log,
    ...(config.fal ? { fal: { keys: new FalKeys({ url: config.webhooks?.falJwksUrl ?? DEFAULT_FAL_JWKS_URL, ...http }) } } : {}),
    ...(config.replicate
      ? {
          replicate: {
            secret: replicateSecret({
              token: config.replicate.token,
              baseUrl: config.replicate.baseUrl,
              ...(config.replicate.webhookSecret ? { secret: config.replicate.webhookSecret } : {}),
              ...http,
            }),
          },
        }
      : {}),
  });
}
