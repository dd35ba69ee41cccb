/**
 * Each provider's facts, in one place: its default model, built-in prices (which are also the models
 * offered unasked), upscaler, default rate limit and concurrency, the most images one call may ask for,
 * how our aspect ratios map onto what it makes, how it flags unsafe images, and where each fact comes
 * from. Data only (no SDK, no I/O): the config reads its defaults here and each provider file its
 * limits and sizes, so changing a fact is one edit. docs/providers/ keeps the longer notes and sources.
 */
import type { AspectRatio, ProviderName } from '../core/types.js';

export interface Size {
  width: number;
  height: number;
}

export interface ProviderFacts {
  /** the model used when a request names none */
  defaultModel: string;
  /** USD per image by model; the non-upscaler ones are also the models a user may pick unless `<P>_MODELS` says otherwise */
  prices: Readonly<Record<string, number>>;
  /** the model "Upscale approved" calls; unset: this provider cannot upscale */
  upscaleModel?: string;
  /** requests a window when `<P>_RATE_LIMIT` is unset (`150/min`); unset: none known, learned from the first 429 */
  rateLimit?: string;
  /** calls in flight at once when `<P>_CONCURRENCY` is unset */
  concurrency: number;
  /** the most images one call may ask for */
  maxPerCall: number;
  /** models (by id prefix) whose calls take fewer */
  maxPerCallFor?: Readonly<Record<string, number>>;
  /** time a call usually takes, for ETAs before any has finished */
  typicalCallMs: number;
  /** a draft's price as a share of a full image's @default 1 */
  draftPriceFactor?: number;
  /** models (by id prefix) whose drafts are priced otherwise */
  draftPriceFactorFor?: Readonly<Record<string, number>>;
  /** how an unsafe image or prompt is reported, and what we make of it (a spoiler, or a refused call) */
  safety: string;
  /** where the prices and limits come from */
  source: string;
}

/** Replicate's Real-ESRGAN, by version: community models are run through `version`, not the official models' endpoint. */
export const REPLICATE_UPSCALE_MODEL = 'nightmareai/real-esrgan:f121d640bd286e1fdc67f9799164c1d5be36ff74576ee11c803ae5b665dd46aa';
/** The local provider's upscaler: the approved image resized with sharp, in process. */
export const LOCAL_UPSCALE_MODEL = 'local-upscale';
/** SDXL 1.0 base, by its AIR (urn:air:<ecosystem>:<type>:<source>:<model id>@<version id>). */
const CIVITAI_SDXL = 'urn:air:sdxl:checkpoint:civitai:101055@128078';

export const PROVIDER_FACTS: Readonly<Record<ProviderName, ProviderFacts>> = {
  fal: {
    defaultModel: 'fal-ai/flux/schnell',
    prices: {
      'fal-ai/flux/schnell': 0.003,
      'fal-ai/flux/dev': 0.025,
      'fal-ai/flux-pro/v1.1': 0.04,
      // FLUX.1 [dev] with LoRAs: $0.035 per megapixel
      'fal-ai/flux-lora': 0.035,
      // Upscalers (never offered for /imagine). ESRGAN is billed by the compute second ($0.00111/s): a 2×
      // of a quarter-megapixel draft takes one to two seconds, about $0.002, an estimate. Clarity is
      // billed $0.03 per output megapixel: a draft ×2 is about one megapixel.
      'fal-ai/esrgan': 0.002,
      'fal-ai/clarity-upscaler': 0.03,
    },
    upscaleModel: 'fal-ai/esrgan',
    // fal publishes no request rate; the first 429 teaches one (scheduler.ts).
    concurrency: 10,
    maxPerCall: 4,
    typicalCallMs: 5_000,
    // flux is billed by the megapixel, each image rounded up to a whole one: a quarter-megapixel draft
    // costs what a full image does (its saving is time; the upscale's price comes on top).
    draftPriceFactor: 1,
    safety: '`has_nsfw_concepts[i]` per image → that image is posted as a spoiler',
    source: 'fal.ai/models/<model>/api (per-megapixel prices), fal queue API docs',
  },
  replicate: {
    defaultModel: 'black-forest-labs/flux-schnell',
    prices: {
      'black-forest-labs/flux-schnell': 0.003,
      'black-forest-labs/flux-dev': 0.025,
      'black-forest-labs/flux-1.1-pro': 0.04,
      // Real-ESRGAN is billed by the GPU second: a 2× of a draft runs a few seconds, about $0.002 (an estimate).
      [REPLICATE_UPSCALE_MODEL]: 0.002,
    },
    upscaleModel: REPLICATE_UPSCALE_MODEL,
    // 600 prediction creations a minute (Replicate's documented limit)
    rateLimit: '600/min',
    concurrency: 10,
    maxPerCall: 4,
    typicalCallMs: 5_000,
    safety: 'no per-image flag in flux output (never a spoiler); a prediction failed by its safety checker fails that call',
    source: 'replicate.com/<owner>/<model> (per-image prices), replicate.com/docs/topics/predictions/rate-limits',
  },
  local: {
    defaultModel: 'local',
    prices: { local: 0, [LOCAL_UPSCALE_MODEL]: 0 },
    upscaleModel: LOCAL_UPSCALE_MODEL,
    concurrency: 2,
    maxPerCall: 4,
    typicalCallMs: 50,
    safety: 'never flags (it draws the prompt as text)',
    source: 'this project (renders offline, free)',
  },
  stability: {
    defaultModel: 'stable-image-core',
    // Credits at $0.01 each: Ultra 8, Core 3, SD 3.5 Large 6.5, Large Turbo 4, Medium 3.5.
    prices: {
      'stable-image-core': 0.03,
      'stable-image-ultra': 0.08,
      'sd3.5-large': 0.065,
      'sd3.5-large-turbo': 0.04,
      'sd3.5-medium': 0.035,
    },
    rateLimit: '150/min',
    concurrency: 10,
    maxPerCall: 1,
    typicalCallMs: 6_000,
    safety: '`finish_reason: CONTENT_FILTERED` → spoiler; a 403 `content_moderation` refuses that call (not sent again)',
    source: 'platform.stability.ai/pricing (credits); 150 requests per 10 s documented, 150/min kept well inside (docs/providers/stability.md)',
  },
  openai: {
    defaultModel: 'gpt-image-1',
    // Per 1024×1024 image: gpt-image-1 at medium quality, DALL·E 3 standard.
    prices: { 'gpt-image-1': 0.042, 'dall-e-3': 0.04 },
    // Image models allow 5 to 50 requests a minute by usage tier: the lowest unless told.
    rateLimit: '5/min',
    concurrency: 5,
    maxPerCall: 10,
    maxPerCallFor: { 'dall-e-3': 1 },
    typicalCallMs: 30_000,
    // A draft is asked at `quality: low`: $0.011 against medium's $0.042 for a 1024² gpt-image-1 image.
    // DALL·E 3 has no lower quality than standard: its drafts cost what its images do.
    draftPriceFactorFor: { 'gpt-image': 0.011 / 0.042 },
    safety: '`moderation_blocked` / `content_policy_violation` refuse that call (not sent again), reported per image',
    source: 'platform.openai.com/docs/pricing, platform.openai.com/docs/guides/rate-limits',
  },
  civitai: {
    defaultModel: CIVITAI_SDXL,
    // Buzz (1000 = $1); an SDXL image of 25 steps costs a few Buzz: an estimate.
    prices: { [CIVITAI_SDXL]: 0.004 },
    concurrency: 10,
    // `quantity` has no documented cap: 4 keeps a failed job's retry cheap.
    maxPerCall: 4,
    typicalCallMs: 20_000,
    safety: '`nsfw: true` or `nsfwLevel` R / X / XXX on a result → spoiler (unverified against the live API)',
    source: 'github.com/civitai/civitai-javascript (jobs API), civitai.com/buzz (prices)',
  },
};

/** `table`'s value for the first prefix `model` starts with. */
function byPrefix(table: Readonly<Record<string, number>> | undefined, model: string): number | undefined {
  const prefix = Object.keys(table ?? {}).find((p) => model.startsWith(p));
  return prefix !== undefined ? table![prefix] : undefined;
}

/** The most images one call of `model` may ask for. */
export function maxPerCallOf(provider: ProviderName, model: string): number {
  const facts = PROVIDER_FACTS[provider];
  return byPrefix(facts.maxPerCallFor, model) ?? facts.maxPerCall;
}

/** A draft of `model`'s price as a share of a full image's. */
export function draftPriceFactorOf(provider: ProviderName, model: string): number {
  const facts = PROVIDER_FACTS[provider];
  return byPrefix(facts.draftPriceFactorFor, model) ?? facts.draftPriceFactor ?? 1;
}

// ---- How our aspect ratios map onto what each provider makes ----

/** fal: its named sizes where one exists, else explicit dimensions (multiples of 64, about 1 megapixel). */
export const FAL_SIZES: Readonly<Record<AspectRatio, string | Size>> = {
  '1:1': 'square_hd',
  '16:9': 'landscape_16_9',
  '9:16': 'portrait_16_9',
  '4:3': 'landscape_4_3',
  '3:4': 'portrait_4_3',
  '3:2': { width: 1216, height: 832 },
  '2:3': { width: 832, height: 1216 },
  '21:9': { width: 1536, height: 640 },
};

/**
 * Draft sizes (fal's `image_size`, also CivitAI's drafts): about a quarter megapixel, multiples of 16 —
 * flux's one-megapixel sizes halved on each side, so an upscale ×2 brings a draft back to about a megapixel.
 */
export const FAL_DRAFT_SIZES: Readonly<Record<AspectRatio, Size>> = {
  '1:1': { width: 512, height: 512 },
  '16:9': { width: 672, height: 384 },
  '9:16': { width: 384, height: 672 },
  '4:3': { width: 576, height: 448 },
  '3:4': { width: 448, height: 576 },
  '3:2': { width: 608, height: 416 },
  '2:3': { width: 416, height: 608 },
  '21:9': { width: 768, height: 320 },
};

/** Replicate: the ratio is sent as it is (`aspect_ratio`), drafts as `megapixels: '0.25'`. */

/**
 * Stability's ratios (16:9 1:1 21:9 2:3 3:2 4:5 5:4 9:16 9:21). It has no 4:3 or 3:4: the nearest it
 * makes is 5:4 / 4:5 (1.25 against 1.33; 3:2 is further off), and the image says its true size, which
 * the manifest records.
 */
export const STABILITY_ASPECT_RATIOS: Readonly<Record<AspectRatio, string>> = {
  '1:1': '1:1',
  '16:9': '16:9',
  '9:16': '9:16',
  '4:3': '5:4',
  '3:4': '4:5',
  '3:2': '3:2',
  '2:3': '2:3',
  '21:9': '21:9',
};

/**
 * OpenAI: the sizes each model family makes (the first is its square); a ratio gets the nearest one
 * (openai.ts `openaiSize`), so only 1:1 comes back exact.
 */
export const OPENAI_SIZES: Readonly<Record<'gpt-image' | 'dall-e-3' | 'dall-e-2', readonly (readonly [number, number])[]>> = {
  'gpt-image': [[1024, 1024], [1536, 1024], [1024, 1536]],
  'dall-e-3': [[1024, 1024], [1792, 1024], [1024, 1792]],
  'dall-e-2': [[1024, 1024]],
};

/**
 * CivitAI: SDXL's trained sizes (multiples of 64, about a megapixel). 21:9 is 1344×576 rather than
 * SDXL's 1536×640: the client library refuses a side over 1440.
 */
export const CIVITAI_SIZES: Readonly<Record<AspectRatio, Size>> = {
  '1:1': { width: 1024, height: 1024 },
  '16:9': { width: 1344, height: 768 },
  '9:16': { width: 768, height: 1344 },
  '4:3': { width: 1152, height: 896 },
  '3:4': { width: 896, height: 1152 },
  '3:2': { width: 1216, height: 832 },
  '2:3': { width: 832, height: 1216 },
  '21:9': { width: 1344, height: 576 },
};

/** Local: about 0.6 megapixel, big enough to look at, small enough to render in tens of milliseconds (drafts half each way). */
export const LOCAL_SIZES: Readonly<Record<AspectRatio, Size>> = {
  '1:1': { width: 768, height: 768 },
  '16:9': { width: 1024, height: 576 },
  '9:16': { width: 576, height: 1024 },
  '4:3': { width: 896, height: 672 },
  '3:4': { width: 672, height: 896 },
  '3:2': { width: 960, height: 640 },
  '2:3': { width: 640, height: 960 },
  '21:9': { width: 1176, height: 504 },
};
