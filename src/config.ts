/**
 * Environment → one typed, validated config object. Nothing else reads `process.env`.
 * A bad value stops start-up with the variable's name, what was expected and what was given;
 * secrets are never echoed back.
 */
import { z } from 'zod';
import { parseRate, type Rate } from './core/rate.js';
import { DEFAULT_PLANS, PLANS, type Plan, type PlanLimits } from './core/settings.js';
import { MODEL_IDS, PROVIDER_NAMES, type ProviderName } from './core/types.js';
// Data only (no SDK): each provider's defaults, prices and limits live with the providers.
import { LOCAL_UPSCALE_MODEL, PROVIDER_FACTS, REPLICATE_UPSCALE_MODEL, type ProviderFacts } from './providers/facts.js';

export interface ProviderConfig {
  /** model used when the request names none */
  model: string;
  /** models a user may pick; `*` = any (warned about at start) */
  models: readonly string[] | '*';
  /** calls allowed per period; undefined = no limit but the provider's own 429s */
  rateLimit?: Rate;
  concurrency: number;
  /** the model "Upscale approved" calls (FAL_UPSCALE_MODEL, REPLICATE_UPSCALE_MODEL; local's is fixed); unset: none */
  upscaleModel?: string;
}

export interface Config {
  discord?: { token: string; appId: string; guildId?: string; apiUrl: string; /** /imagine in DMs (all DMs share one daily cap) */ dms: boolean };
  slack?: {
    botToken: string;
    signingSecret: string;
    appToken?: string;
    apiUrl: string;
    port: number;
    reviewers: string[];
  };
  fal?: ProviderConfig & { key: string; baseUrl?: string };
  replicate?: ProviderConfig & {
    token: string;
    baseUrl: string;
    /** signs Replicate's webhooks; unset = asked of the API */
    webhookSecret?: string;
    /** seconds a create may be held for the prediction to end (`Prefer: wait`); 0 = off */
    preferWaitSeconds: number;
  };
  local: ProviderConfig & { latencyMs: number };
  /** Stability AI's REST v2 stable-image API (STABILITY_API_KEY); one image a call */
  stability?: ProviderConfig & { key: string; baseUrl: string };
  /** OpenAI Images (OPENAI_API_KEY), through the official SDK */
  openai?: ProviderConfig & { key: string; baseUrl: string };
  /** CivitAI's generation (orchestration) API (CIVITAI_API_TOKEN); models named by AIR */
  civitai?: ProviderConfig & { token: string; baseUrl: string };
  defaultProvider: ProviderName;
  storeUrl: string;
  outputDir: string;
  tenantRateLimit?: Rate;
  maxImagesPerJob: number;
  /** LoRAs one job may name (`--lora`) */
  maxLoras: number;
  /** provider calls per batch before it fails for good */
  maxAttempts: number;
  /** longest a single provider call may take, submit to result, before it is cancelled and retried */
  callTimeoutMs: number;
  tenantMaxRunningJobs: number;
  tenantMaxQueuedJobs: number;
  /** images one guild / workspace may request per UTC day; undefined = no cap */
  tenantDailyImages?: number;
  /** images per UTC day across all tenants; undefined = no cap */
  globalDailyImages?: number;
  /** per plan tier: a tenant's provider calls in flight at once and its largest job (never above maxImagesPerJob) */
  plans: Record<Plan, PlanLimits>;
  /** the plan of a tenant whose /settings set none */
  defaultPlan: Plan;
  /** extra hosts (`host` or `host:port`, https) images may be downloaded from */
  downloadHosts: string[];
  /** largest image accepted from a provider, in bytes */
  maxImageBytes: number;
  /** jobs one person may have queued or running at once in one guild / workspace */
  userMaxActiveJobs: number;
  /** loopback port of /healthz and /metrics; undefined = off */
  healthPort?: number;
  /** estimated USD per image, by model id */
  prices: Record<string, number>;
  playground: { enabled: boolean; port: number };
  publicUrl?: string;
  /** the bot's public HTTP server (webhooks), started when PUBLIC_URL is set */
  http: { host: string; port: number };
  /** calls end by webhook (PUBLIC_URL set); undefined = status stream and polling only */
  webhooks?: WebhookConfig;
  logLevel: string;
  /** distributed mode: store, queues and limits in this Redis; undefined = one process on SQLite */
  redisUrl?: string;
  /** start of every key this bot keeps in Redis, so several bots (or tests) can share one server */
  redisPrefix: string;
  /**
   * distributed mode: how long the batches of a process that stopped answering (killed, frozen) stay
   * locked before another process takes them over; a job's own lock lasts half of it
   */
  queueLockMs: number;
  /** what this process does: everything, chat only (commands, buttons, rendering), or batches only */
  role: Role;
  /** Discord sharding: the total (`auto` = as Discord advises) and the shards this process runs */
  discordShards?: { count: number | 'auto'; ids?: number[] };
  /** images in an S3-compatible bucket (OUTPUT_DIR is then this process's cache of it); undefined = on disk */
  s3?: S3Config;
  /** serve a seeded request already delivered from its files instead of calling the provider again (CACHE) */
  cache: boolean;
  /** a job of more images than this is shown as contact sheets (25 numbered tiles each) instead of a gallery @default 20 */
  galleryInlineMax: number;
  /** the review page at PUBLIC_URL/review/<job>, reached by signed links; undefined (no PUBLIC_URL or REVIEW_SECRET): not offered */
  review?: ReviewPageConfig;
}

/** Signed review-page links: HMAC with `secret`, bound to the job, the reviewer and an expiry. */
export interface ReviewPageConfig {
  /** PUBLIC_URL without its trailing slash: links are `<baseUrl>/review/<job>?t=…` */
  baseUrl: string;
  secret: string;
  /** how long a link works @default 24 h */
  linkMs: number;
}

/** Webhooks: where the providers deliver, and how often a call whose webhook has not come is polled anyway. */
export interface WebhookConfig {
  /** full delivery URLs (PUBLIC_URL + /webhooks/fal, /webhooks/replicate) */
  falUrl: string;
  replicateUrl: string;
  /** one status poll of a watched call this often, in case its webhook never comes */
  safetyPollMs: number;
  /** fal's webhook signing keys (a JWKS) */
  falJwksUrl: string;
}

export const DEFAULT_FAL_JWKS_URL = 'https://rest.alpha.fal.ai/.well-known/jwks.json';

/** Where images are kept in object storage. Credentials come from the AWS SDK's own chain, never from here. */
export interface S3Config {
  bucket: string;
  /** R2, MinIO or a test server; addressed path-style (`<endpoint>/<bucket>/<key>`) @default AWS S3 */
  endpoint?: string;
  /** @default us-east-1 */
  region: string;
  /** put before every key, as given (`art/` → `art/<jobId>/…`) @default '' */
  prefix: string;
  /** how long a delivered file's presigned link works, in seconds @default DEFAULT_S3_LINK_EXPIRES */
  linkExpiresSeconds?: number;
}

/** 7 days: the longest a SigV4 presigned link may last. */
export const DEFAULT_S3_LINK_EXPIRES = 604_800;

export const ROLES = ['all', 'edge', 'worker'] as const;
export type Role = (typeof ROLES)[number];

/** Replicate's Real-ESRGAN by version; pin another with REPLICATE_UPSCALE_MODEL. */
export const DEFAULT_REPLICATE_UPSCALE_MODEL = REPLICATE_UPSCALE_MODEL;
export { LOCAL_UPSCALE_MODEL };

/**
 * The built-in price table (USD per image), by provider, from each provider's facts
 * (src/providers/facts.ts). Its models are also what a user may pick by default (`FAL_MODELS`, …): a
 * model we know nothing about, not even its price, is not one to spend a team's money on unasked.
 */
export const BUILT_IN_PRICES: Record<ProviderName, Record<string, number>> = byProvider((facts) => ({ ...facts.prices }));

/** Upscaler models: priced so their costs are known, but never a model to generate with. */
export const UPSCALE_MODELS: ReadonlySet<string> = new Set([
  ...Object.values(PROVIDER_FACTS).flatMap((facts) => (facts.upscaleModel ? [facts.upscaleModel] : [])),
  'fal-ai/clarity-upscaler',
]);

/** @default prices in USD per image; override any of them with MODEL_PRICES (JSON). */
export const DEFAULT_PRICES: Record<string, number> = Object.assign({}, ...Object.values(BUILT_IN_PRICES)) as Record<string, number>;

export const DEFAULT_MAX_IMAGE_BYTES = 25 * 1024 * 1024;

export const DEFAULT_MODELS: Record<ProviderName, string> = byProvider((facts) => facts.defaultModel);

/** @default the upscaler each provider's "Upscale approved" calls */
export const DEFAULT_UPSCALE_MODELS: Partial<Record<ProviderName, string>> = Object.fromEntries(
  PROVIDER_NAMES.flatMap((name) => (PROVIDER_FACTS[name].upscaleModel ? [[name, PROVIDER_FACTS[name].upscaleModel]] : [])),
);

function byProvider<T>(pick: (facts: ProviderFacts) => T): Record<ProviderName, T> {
  return Object.fromEntries(PROVIDER_NAMES.map((name) => [name, pick(PROVIDER_FACTS[name])])) as Record<ProviderName, T>;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

/** Reads one variable through a zod schema; a failure names the variable and what was given. */
function read<T>(env: Env, name: string, schema: z.ZodType<T>, expected: string, secret = false): T {
  const raw = env[name];
  const value = raw === undefined || raw.trim() === '' ? undefined : raw.trim();
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const given = value === undefined ? 'nothing' : secret ? 'a value that is not valid' : `"${value}"`;
    throw new ConfigError(`${name}: expected ${expected}, got ${given}`);
  }
  return parsed.data;
}

const optionalString = z.string().optional();
const url = z.url({ protocol: /^(https?|wss?)$/ }).optional();

function int(env: Env, name: string, min: number, max: number, fallback: number): number {
  return read(
    env,
    name,
    z.coerce.number().int().min(min).max(max).optional(),
    `an integer from ${min} to ${max}`,
  ) ?? fallback;
}

/** `PLAN_PRO=5/100`: calls in flight at once / largest job in images. */
function plan(env: Env, name: string, fallback: PlanLimits): PlanLimits {
  const raw = read(env, name, optionalString, 'CALLS/IMAGES');
  if (raw === undefined) return fallback;
  const match = /^(\d{1,4})\s*\/\s*(\d{1,7})$/.exec(raw);
  const calls = Number(match?.[1]);
  const images = Number(match?.[2]);
  if (!match || calls < 1 || calls > 1000 || images < 1 || images > 1000) {
    throw new ConfigError(`${name}: expected CALLS/IMAGES such as ${fallback.calls}/${fallback.images} (calls 1 to 1000, images 1 to 1000), got "${raw}"`);
  }
  return { calls, images };
}

function rate(env: Env, name: string, fallback: string | undefined): Rate | undefined {
  const value = env[name] === undefined ? fallback : env[name];
  try {
    return parseRate(value);
  } catch (error) {
    throw new ConfigError(`${name}: ${(error as Error).message}`);
  }
}

/** `FAL_MODELS=a,b` → the list; `*` → any; unset → the provider's priced models. The default model is always allowed. */
function models(env: Env, name: string, provider: ProviderName, defaultModel: string): readonly string[] | '*' {
  const raw = read(env, name, optionalString, 'a comma-separated list of model ids, or *');
  if (raw === '*') return '*';
  const list = raw ? raw.split(',').map((m) => m.trim()).filter(Boolean) : Object.keys(BUILT_IN_PRICES[provider]).filter((m) => !UPSCALE_MODELS.has(m));
  const bad = list.find((m) => !MODEL_IDS[provider].test(m));
  const example = provider === 'fal' || provider === 'replicate' ? 'owner/name' : DEFAULT_MODELS[provider];
  if (bad !== undefined) throw new ConfigError(`${name}: expected a comma-separated list of model ids such as ${example}, or *, got "${bad}"`);
  return [...new Set([defaultModel, ...list])];
}

/** `host` or `host:port`, lower-cased; a URL or a path is refused (the scheme is always https). */
function hostList(env: Env, name: string): string[] {
  const raw = read(env, name, optionalString, 'a comma-separated list of host or host:port');
  const hosts = (raw ?? '').split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);
  const bad = hosts.find((h) => !/^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:\d{1,5})?$/.test(h));
  if (bad !== undefined) throw new ConfigError(`${name}: expected a comma-separated list of host or host:port (no scheme, no path), got "${bad}"`);
  return hosts;
}

const MODEL_ID = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*){1,3}$/i;

/** A model id, or a Replicate model pinned to a version (`owner/name:<64 hex>`). */
const VERSIONED_MODEL_ID = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*){1,3}(:[0-9a-f]{64})?$/i;

function withoutTrailingSlash(value: string): string {
  return value.replace(/\/+$/, '');
}

export function loadConfig(env: Env = process.env): Config {
  const discordToken = read(env, 'DISCORD_TOKEN', optionalString, 'a bot token', true);
  const discordAppId = read(env, 'DISCORD_APP_ID', z.string().regex(/^\d{5,25}$/).optional(), 'a numeric application id');
  if (discordToken && !discordAppId) throw new ConfigError('DISCORD_APP_ID: expected the application id when DISCORD_TOKEN is set, got nothing');

  const slackToken = read(env, 'SLACK_BOT_TOKEN', optionalString, 'a bot token (xoxb-…)', true);
  const slackSecret = read(env, 'SLACK_SIGNING_SECRET', optionalString, 'the signing secret', true);
  if (slackToken && !slackSecret) throw new ConfigError('SLACK_SIGNING_SECRET: expected the signing secret when SLACK_BOT_TOKEN is set, got nothing');

  const falKey = read(env, 'FAL_KEY', optionalString, 'a fal key', true);
  const replicateToken = read(env, 'REPLICATE_API_TOKEN', optionalString, 'a Replicate token', true);

  const stabilityKey = read(env, 'STABILITY_API_KEY', optionalString, 'a Stability AI key', true);
  const openaiKey = read(env, 'OPENAI_API_KEY', optionalString, 'an OpenAI key', true);
  const civitaiToken = read(env, 'CIVITAI_API_TOKEN', optionalString, 'a CivitAI token', true);
  const keys: Partial<Record<ProviderName, [string, string | undefined]>> = {
    fal: ['FAL_KEY', falKey],
    replicate: ['REPLICATE_API_TOKEN', replicateToken],
    stability: ['STABILITY_API_KEY', stabilityKey],
    openai: ['OPENAI_API_KEY', openaiKey],
    civitai: ['CIVITAI_API_TOKEN', civitaiToken],
  };
  const configured = PROVIDER_NAMES.filter((name) => keys[name]?.[1]);
  const defaultProvider =
    read(env, 'DEFAULT_PROVIDER', z.enum(PROVIDER_NAMES).optional(), `one of ${PROVIDER_NAMES.join(', ')}`) ??
    configured[0] ??
    'local';
  const needs = keys[defaultProvider];
  if (needs && !needs[1]) throw new ConfigError(`DEFAULT_PROVIDER: "${defaultProvider}" needs ${needs[0]} to be set`);

  const playgroundMode = read(env, 'PLAYGROUND', z.enum(['on', 'off']).optional(), 'on or off (or unset)');
  const prices = { ...DEFAULT_PRICES };
  const priceJson = read(env, 'MODEL_PRICES', optionalString, 'JSON');
  if (priceJson) {
    const parsed = z.record(z.string(), z.number().min(0)).safeParse(safeJson(priceJson));
    if (!parsed.success) {
      throw new ConfigError(`MODEL_PRICES: expected a JSON object of model id → USD per image, got "${priceJson}"`);
    }
    Object.assign(prices, parsed.data);
  }

  // Every variable is checked, used or not: a typo should stop start-up today, not the day a key is added.
  const discord = {
    dms: read(env, 'DISCORD_DMS', z.enum(['on', 'off']).optional(), 'on or off') === 'on',
    guildId: read(env, 'DISCORD_GUILD_ID', z.string().regex(/^\d{5,25}$/).optional(), 'a numeric guild id'),
    apiUrl: withoutTrailingSlash(read(env, 'DISCORD_API_URL', url, 'an http(s) URL') ?? 'https://discord.com/api'),
  };
  const slack = {
    appToken: read(env, 'SLACK_APP_TOKEN', optionalString, 'an app-level token (xapp-…)', true),
    apiUrl: read(env, 'SLACK_API_URL', url, 'an http(s) URL') ?? 'https://slack.com/api/',
    port: int(env, 'SLACK_PORT', 0, 65535, 3000),
    reviewers: (env.SLACK_REVIEWERS ?? '').split(/[\s,]+/).filter(Boolean),
  };
  const falModel = read(env, 'FAL_MODEL', optionalString, 'a fal model id') ?? DEFAULT_MODELS.fal;
  const fal = {
    baseUrl: read(env, 'FAL_BASE_URL', url, 'an http(s) URL'),
    model: falModel,
    models: models(env, 'FAL_MODELS', 'fal', falModel),
    rateLimit: rate(env, 'FAL_RATE_LIMIT', PROVIDER_FACTS.fal.rateLimit),
    concurrency: int(env, 'FAL_CONCURRENCY', 1, 1000, PROVIDER_FACTS.fal.concurrency),
    upscaleModel: read(env, 'FAL_UPSCALE_MODEL', z.string().regex(MODEL_ID).optional(), 'a fal model id such as fal-ai/esrgan') ?? DEFAULT_UPSCALE_MODELS.fal,
  };
  const replicateModel = read(env, 'REPLICATE_MODEL', optionalString, 'a Replicate model owner/name') ?? DEFAULT_MODELS.replicate;
  const replicate = {
    baseUrl: withoutTrailingSlash(read(env, 'REPLICATE_BASE_URL', url, 'an http(s) URL ending in /v1') ?? 'https://api.replicate.com/v1'),
    model: replicateModel,
    models: models(env, 'REPLICATE_MODELS', 'replicate', replicateModel),
    rateLimit: rate(env, 'REPLICATE_RATE_LIMIT', PROVIDER_FACTS.replicate.rateLimit),
    concurrency: int(env, 'REPLICATE_CONCURRENCY', 1, 1000, PROVIDER_FACTS.replicate.concurrency),
    // 25 s at most: a held create must answer 5 s inside the 30 s request timeout.
    preferWaitSeconds: int(env, 'REPLICATE_PREFER_WAIT', 0, 25, 0),
    upscaleModel:
      read(env, 'REPLICATE_UPSCALE_MODEL', z.string().regex(VERSIONED_MODEL_ID).optional(), 'a Replicate model owner/name, or owner/name:VERSION for a community model') ??
      DEFAULT_UPSCALE_MODELS.replicate,
  };

  const hosted = (prefix: 'STABILITY' | 'OPENAI' | 'CIVITAI', provider: ProviderName, baseUrl: string) => {
    const { rateLimit, concurrency } = PROVIDER_FACTS[provider];
    const model = read(env, `${prefix}_MODEL`, optionalString, `a ${provider} model id such as ${DEFAULT_MODELS[provider]}`) ?? DEFAULT_MODELS[provider];
    if (!MODEL_IDS[provider].test(model)) throw new ConfigError(`${prefix}_MODEL: expected a model id such as ${DEFAULT_MODELS[provider]}, got "${model}"`);
    return {
      baseUrl: withoutTrailingSlash(read(env, `${prefix}_BASE_URL`, url, 'an http(s) URL') ?? baseUrl),
      model,
      models: models(env, `${prefix}_MODELS`, provider, model),
      rateLimit: rate(env, `${prefix}_RATE_LIMIT`, rateLimit),
      concurrency: int(env, `${prefix}_CONCURRENCY`, 1, 1000, concurrency),
    };
  };
  const stability = hosted('STABILITY', 'stability', 'https://api.stability.ai');
  const openai = hosted('OPENAI', 'openai', 'https://api.openai.com/v1');
  const civitai = hosted('CIVITAI', 'civitai', 'https://orchestration.civitai.com');

  const publicUrl = read(env, 'PUBLIC_URL', url, 'an http(s) URL');
  const http = {
    host: read(env, 'HTTP_HOST', z.string().regex(/^([0-9a-fA-F:.]+|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$/).optional(), 'an address to listen on, such as 0.0.0.0 or 127.0.0.1') ?? '0.0.0.0',
    port: int(env, 'HTTP_PORT', 0, 65535, 8080),
  };
  const webhookSecret = read(env, 'REPLICATE_WEBHOOK_SECRET', z.string().regex(/^whsec_[A-Za-z0-9+/=]{8,}$/).optional(), 'a signing secret whsec_…', true);
  const falJwksUrl = read(env, 'FAL_JWKS_URL', url, 'an http(s) URL') ?? DEFAULT_FAL_JWKS_URL;
  const safetyPollMs = int(env, 'WEBHOOK_SAFETY_POLL_SECONDS', 1, 3600, 30) * 1000;
  const base = publicUrl === undefined ? undefined : withoutTrailingSlash(publicUrl);
  const webhooks: WebhookConfig | undefined = base
    ? { falUrl: `${base}/webhooks/fal`, replicateUrl: `${base}/webhooks/replicate`, safetyPollMs, falJwksUrl }
    : undefined;

  const reviewSecret = read(env, 'REVIEW_SECRET', z.string().min(32).optional(), 'a random secret of at least 32 characters', true);
  const review: ReviewPageConfig | undefined =
    base && reviewSecret ? { baseUrl: base, secret: reviewSecret, linkMs: int(env, 'REVIEW_LINK_HOURS', 1, 24 * 30, 24) * 3_600_000 } : undefined;

  const redisUrl = read(env, 'REDIS_URL', z.string().regex(/^rediss?:\/\/\S+$/).optional(), 'redis://HOST:PORT (or rediss://)', true);
  const role = read(env, 'ROLE', z.enum(ROLES).optional(), `one of ${ROLES.join(', ')}`) ?? 'all';
  if (role !== 'all' && !redisUrl) throw new ConfigError(`ROLE: "${role}" needs REDIS_URL (edge and worker processes share work through Redis)`);
  const discordShards = shards(env);
  const s3 = s3Config(env);

  return {
    discord: discordToken && discordAppId ? { token: discordToken, appId: discordAppId, ...discord } : undefined,
    slack: slackToken && slackSecret ? { botToken: slackToken, signingSecret: slackSecret, ...slack } : undefined,
    fal: falKey ? { key: falKey, ...fal } : undefined,
    replicate: replicateToken ? { token: replicateToken, ...replicate, ...(webhookSecret ? { webhookSecret } : {}) } : undefined,
    local: {
      model: DEFAULT_MODELS.local,
      models: [DEFAULT_MODELS.local],
      concurrency: int(env, 'LOCAL_CONCURRENCY', 1, 64, PROVIDER_FACTS.local.concurrency),
      latencyMs: int(env, 'LOCAL_LATENCY_MS', 0, 600_000, 0),
      rateLimit: undefined,
      upscaleModel: DEFAULT_UPSCALE_MODELS.local!,
    },
    ...(stabilityKey ? { stability: { key: stabilityKey, ...stability } } : {}),
    ...(openaiKey ? { openai: { key: openaiKey, ...openai } } : {}),
    ...(civitaiToken ? { civitai: { token: civitaiToken, ...civitai } } : {}),
    defaultProvider,
    storeUrl:
      read(env, 'STORE_URL', z.string().regex(/^(sqlite|redis|rediss):\/\/.+/).optional(), 'sqlite://PATH or redis://HOST') ??
      'sqlite://data/art-factory.sqlite',
    outputDir: read(env, 'OUTPUT_DIR', optionalString, 'a folder') ?? 'data/output',
    tenantRateLimit: rate(env, 'TENANT_RATE_LIMIT', '60/min'),
    maxImagesPerJob: int(env, 'MAX_IMAGES_PER_JOB', 1, 1000, 100),
    maxLoras: int(env, 'MAX_LORAS', 0, 10, 3),
    maxAttempts: int(env, 'PROVIDER_MAX_ATTEMPTS', 1, 20, 5),
    callTimeoutMs: int(env, 'PROVIDER_TIMEOUT', 1, 3600, 300) * 1000,
    tenantMaxRunningJobs: int(env, 'TENANT_MAX_RUNNING_JOBS', 1, 100, 3),
    tenantMaxQueuedJobs: int(env, 'TENANT_MAX_QUEUED_JOBS', 0, 1000, 20),
    tenantDailyImages: int(env, 'TENANT_DAILY_IMAGES', 0, 10_000_000, 1000) || undefined,
    globalDailyImages: int(env, 'GLOBAL_DAILY_IMAGES', 0, 100_000_000, 5000) || undefined,
    plans: {
      free: plan(env, 'PLAN_FREE', DEFAULT_PLANS.free),
      pro: plan(env, 'PLAN_PRO', DEFAULT_PLANS.pro),
      business: plan(env, 'PLAN_BUSINESS', DEFAULT_PLANS.business),
    },
    defaultPlan: read(env, 'DEFAULT_PLAN', z.enum(PLANS).optional(), `one of ${PLANS.join(', ')}`) ?? 'business',
    downloadHosts: hostList(env, 'DOWNLOAD_HOSTS'),
    maxImageBytes: int(env, 'MAX_IMAGE_BYTES', 1024, 1024 * 1024 * 1024, DEFAULT_MAX_IMAGE_BYTES),
    userMaxActiveJobs: int(env, 'USER_MAX_ACTIVE_JOBS', 1, 1000, 5),
    healthPort: env.HEALTH_PORT?.trim() === 'off' ? undefined : int(env, 'HEALTH_PORT', 0, 65535, 4001),
    prices,
    playground: {
      enabled: playgroundMode ? playgroundMode === 'on' : !discordToken && !slackToken,
      port: int(env, 'PLAYGROUND_PORT', 0, 65535, 4000),
    },
    publicUrl,
    http,
    ...(webhooks ? { webhooks } : {}),
    logLevel:
      read(env, 'LOG_LEVEL', z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(), 'a pino level') ??
      'info',
    ...(redisUrl ? { redisUrl } : {}),
    redisPrefix: read(env, 'REDIS_PREFIX', z.string().regex(/^[A-Za-z0-9_-]{1,32}$/).optional(), 'letters, digits, _ or - (at most 32)') ?? 'af',
    // Shorter takes a dead process's batches over sooner; but a process whose event loop stalls this
    // long loses its batches to another, which polls them again (no second submit once an id is saved).
    queueLockMs: int(env, 'QUEUE_LOCK_SECONDS', 2, 600, 30) * 1000,
    role,
    ...(discordShards ? { discordShards } : {}),
    ...(s3 ? { s3 } : {}),
    cache: (read(env, 'CACHE', z.enum(['on', 'off']).optional(), 'on or off') ?? 'on') === 'on',
    galleryInlineMax: int(env, 'GALLERY_INLINE_MAX', 1, 1000, 20),
    ...(review ? { review } : {}),
  };
}

/** `S3_BUCKET` and its companions; the companions without a bucket are a mistake, not a no-op. */
function s3Config(env: Env): S3Config | undefined {
  // S3's rules for new bucket names (R2 and MinIO follow them): 3–63 of a-z, 0-9, '.', '-'.
  const bucket = read(env, 'S3_BUCKET', z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/).optional(), 'a bucket name (3 to 63 of a-z, 0-9, . and -)');
  const endpoint = read(env, 'S3_ENDPOINT', z.url({ protocol: /^https?$/ }).optional(), 'an http(s) URL', true);
  const region = read(env, 'S3_REGION', z.string().regex(/^[a-z0-9-]{2,32}$/).optional(), 'a region such as us-east-1 (R2: auto)');
  // Key characters every S3-compatible store takes as they are; no leading '/' and no '..' segment.
  const prefix = read(env, 'S3_PREFIX', z.string().regex(/^(?!\/)(?!.*(^|\/)\.\.?(\/|$))[A-Za-z0-9!_.*'()/-]{1,200}$/).optional(), "a key prefix of letters, digits and !_.*'()/- such as art-factory/");
  const linkExpires = read(
    env,
    'S3_LINK_EXPIRES',
    z.coerce.number().int().min(60).max(DEFAULT_S3_LINK_EXPIRES).optional(),
    `seconds from 60 to ${DEFAULT_S3_LINK_EXPIRES} (7 days, the longest a presigned link may last)`,
  );
  if (endpoint && /^[a-z]+:\/\/[^/]*@/i.test(endpoint)) {
    throw new ConfigError('S3_ENDPOINT: expected a URL without a user or password (credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)');
  }
  if (!bucket) {
    const stray = (['S3_ENDPOINT', 'S3_REGION', 'S3_PREFIX', 'S3_LINK_EXPIRES'] as const).find((name) => env[name]?.trim());
    if (stray) throw new ConfigError(`${stray}: needs S3_BUCKET to be set`);
    return undefined;
  }
  return {
    bucket,
    ...(endpoint ? { endpoint: withoutTrailingSlash(endpoint) } : {}),
    region: region ?? 'us-east-1',
    prefix: prefix ?? '',
    linkExpiresSeconds: linkExpires ?? DEFAULT_S3_LINK_EXPIRES,
  };
}

/** `DISCORD_SHARDS=auto|N` and `DISCORD_SHARD_IDS=0,2` or `0-3` (each below N). */
function shards(env: Env): Config['discordShards'] {
  const count = read(env, 'DISCORD_SHARDS', z.union([z.literal('auto'), z.coerce.number().int().min(1).max(10_000)]).optional(), 'auto or a shard count from 1');
  const rawIds = read(env, 'DISCORD_SHARD_IDS', z.string().regex(/^\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*$/).optional(), 'shard ids such as 0,1 or 0-3');
  if (count === undefined) {
    if (rawIds !== undefined) throw new ConfigError('DISCORD_SHARD_IDS: needs DISCORD_SHARDS (the total shard count) to be set');
    return undefined;
  }
  if (rawIds === undefined) return { count };
  if (count === 'auto') throw new ConfigError('DISCORD_SHARD_IDS: needs a numeric DISCORD_SHARDS, got "auto" (each process must know the total)');
  const ids = new Set<number>();
  for (const part of rawIds.split(',')) {
    const [from, to = from] = part.trim().split('-').map(Number) as [number, number?];
    if (to < from) throw new ConfigError(`DISCORD_SHARD_IDS: expected ranges low-high, got "${part.trim()}"`);
    for (let id = from; id <= to; id += 1) {
      if (id >= count) throw new ConfigError(`DISCORD_SHARD_IDS: expected ids from 0 to ${count - 1} (DISCORD_SHARDS=${count}), got ${id}`);
      ids.add(id);
    }
  }
  return { count, ids: [...ids].sort((a, b) => a - b) };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Which providers can take requests with this config. */
export function configuredProviders(config: Config): ProviderName[] {
  return PROVIDER_NAMES.filter((name) => name === 'local' || config[name] !== undefined);
}
