/**
 * /imagine — one prompt, a batch of images. Platform-neutral: the typed options (Discord, CLI) and
 * the inline-flag text (Slack, playground) both end in the same validation and the same messages.
 */
import { z } from 'zod';
import {
  formatHelp,
  parseInlineFlags,
  type Command,
  type CommandContext,
  type CommandDefinition,
  type CommandLimits,
  type CommandResult,
  type RawOptions,
} from '../src/core/command.js';
import { truncate } from '../src/core/text.js';
import { UserError } from '../src/core/errors.js';
import { tenantImagineLimits, type ImagineDefaults } from '../src/core/settings.js';
import { ASPECT_RATIOS, OUTPUT_FORMATS, PROVIDER_NAMES, type ImagineRequest, type OutputFormat, type ProviderName } from '../src/core/types.js';

export const PROMPT_MAX = 1500;
export const NEGATIVE_MAX = 1000;
export const SEED_MAX = 2 ** 32 - 1;
export const DEFAULT_COUNT = 4;

/**
 * What the deployment allows /imagine to ask for (the limits every command gets), and the tenant's
 * defaults from /settings (count, ar, format), which fill what the options leave out.
 */
export type ImagineLimits = CommandLimits & { defaults?: ImagineDefaults };

export function definition(limits?: ImagineLimits): CommandDefinition {
  return {
    name: 'imagine',
    description: 'Generate a batch of images from a prompt',
    usage: 'a red fox in snow --count 12 --ar 16:9 --seed 42 (or: help)',
    options: [
      { name: 'prompt', type: 'string', required: true, maxLength: PROMPT_MAX, flags: ['prompt'], description: 'What to draw' },
      {
        name: 'count',
        type: 'integer',
        minValue: 1,
        ...(limits ? { maxValue: limits.maxImagesPerJob } : {}),
        flags: ['count', 'n'],
        description: `How many images (default ${limits?.defaults?.count ?? DEFAULT_COUNT})`,
      },
      { name: 'ar', type: 'string', choices: ASPECT_RATIOS, flags: ['ar', 'aspect'], placeholder: 'RATIO', description: `Aspect ratio (default ${limits?.defaults?.ar ?? '1:1'})` },
      { name: 'seed', type: 'integer', minValue: 0, maxValue: SEED_MAX, flags: ['seed'], description: 'Seed, for a reproducible job' },
      {
        name: 'provider',
        type: 'string',
        choices: limits?.providers ?? PROVIDER_NAMES,
        flags: ['provider'],
        description: limits ? `Provider (default ${limits.defaultProvider})` : 'Provider',
      },
      { name: 'model', type: 'string', maxLength: 200, flags: ['model'], placeholder: 'ID', description: 'Model id of the provider' },
      { name: 'negative', type: 'string', maxLength: NEGATIVE_MAX, flags: ['no', 'negative'], description: 'What to leave out' },
      { name: 'format', type: 'string', choices: OUTPUT_FORMATS, flags: ['format'], description: `Image file format (default ${limits?.defaults?.format ?? 'png'})` },
      {
        name: 'quality',
        type: 'integer',
        minValue: 1,
        maxValue: 100,
        flags: ['quality'],
        description: "Quality of jpeg and webp images (default the provider's)",
      },
    ],
  };
}

// Control characters (but newlines and tabs) and zero-width marks carry nothing a model can use and
// make prompts look empty when they are not; drop them before measuring.
// eslint-disable-next-line no-control-regex -- control characters are exactly what this removes
const INVISIBLE = /[\u0000-\u0008\u000B-\u001F\u007F\u200B-\u200D\u2060\uFEFF]/g;

function cleanText(value: string): string {
  return value.replace(INVISIBLE, '').replace(/\s+/g, ' ').trim();
}

function shown(value: unknown): string {
  const text = typeof value === 'string' ? value : typeof value === 'number' ? String(value) : JSON.stringify(value) ?? String(value);
  return `\`${truncate(text.replace(/`/g, "'"), 40)}\``;
}

function integerOption(raw: unknown, name: string, min: number, max: number): number | undefined {
  if (raw === undefined || raw === null || raw === '') return undefined;
  const text = typeof raw === 'string' ? raw.trim() : raw;
  const value = typeof text === 'string' && /^[+-]?\d+$/.test(text) ? Number(text) : text;
  const parsed = z.number().int().min(min).max(max).safeParse(value);
  if (!parsed.success) {
    throw new UserError('invalid_option', `Expected \`${name}\` to be an integer from ${min} to ${max}, got ${shown(raw)}.`);
  }
  return parsed.data;
}

function stringOption(raw: unknown, name: string): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'string') throw new UserError('invalid_option', `Expected \`${name}\` to be text, got ${shown(raw)}.`);
  return cleanText(raw);
}

const MODEL_ID = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*){1,3}$/i;

/** Validates raw options (typed, or parsed from flags) into a request, or throws one clear UserError. */
export function parseImagine(given: RawOptions, limits: ImagineLimits): ImagineRequest {
  // The tenant's defaults (/settings) stand for the options left out, and are checked like them.
  const raw: RawOptions = { ...limits.defaults, ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined && v !== null)) };
  const prompt = stringOption(raw.prompt, 'prompt') ?? '';
  const promptLength = Array.from(prompt).length;
  if (promptLength === 0) throw new UserError('invalid_option', 'Expected `prompt` to be 1 to 1500 characters, got an empty prompt.');
  if (promptLength > PROMPT_MAX) {
    throw new UserError('invalid_option', `Expected \`prompt\` to be 1 to ${PROMPT_MAX} characters, got ${promptLength}.`);
  }

  const count = integerOption(raw.count, 'count', 1, limits.maxImagesPerJob) ?? DEFAULT_COUNT;

  const providerText = stringOption(raw.provider, 'provider')?.toLowerCase();
  let provider = limits.defaultProvider;
  if (providerText) {
    if (!(PROVIDER_NAMES as readonly string[]).includes(providerText)) {
      throw new UserError('invalid_option', `Expected \`provider\` to be one of ${limits.providers.join(', ')}, got ${shown(providerText)}.`);
    }
    if (!limits.providers.includes(providerText as ProviderName)) {
      throw new UserError(
        'provider_unavailable',
        `Provider \`${providerText}\` is not configured on this bot; available: ${limits.providers.join(', ')}.`,
      );
    }
    provider = providerText as ProviderName;
  }

  const modelText = stringOption(raw.model, 'model');
  let model = limits.defaultModels[provider];
  if (modelText) {
    const allowed = provider === 'local' ? ['local'] : (limits.models?.[provider] ?? '*');
    if (allowed === '*' ? !MODEL_ID.test(modelText) || modelText.length > 200 : !allowed.includes(modelText)) {
      const names = allowed === '*' ? [] : allowed.map((m) => `\`${m}\``);
      const expected = allowed === '*' ? 'a model id such as `owner/name`' : names.length === 1 ? names[0]! : `one of ${names.join(', ')}`;
      throw new UserError('invalid_option', `Expected \`model\` to be ${expected} for ${provider}, got ${shown(modelText)}.`);
    }
    model = modelText;
  }

  const arText = stringOption(raw.ar, 'ar');
  if (arText && !(ASPECT_RATIOS as readonly string[]).includes(arText)) {
    throw new UserError('invalid_option', `Expected \`ar\` to be one of ${ASPECT_RATIOS.join(', ')}, got ${shown(arText)}.`);
  }

  const seed = integerOption(raw.seed, 'seed', 0, SEED_MAX);

  const negative = stringOption(raw.negative, 'negative') || undefined;
  if (negative && Array.from(negative).length > NEGATIVE_MAX) {
    throw new UserError(
      'invalid_option',
      `Expected \`negative\` to be at most ${NEGATIVE_MAX} characters, got ${Array.from(negative).length}.`,
    );
  }

  const { format, quality } = formatOptions(raw);

  return {
    prompt,
    count,
    provider,
    model,
    aspectRatio: (arText ?? '1:1') as ImagineRequest['aspectRatio'],
    ...(seed !== undefined ? { seed } : {}),
    ...(negative ? { negative } : {}),
    ...(format ? { format } : {}),
    ...(quality !== undefined ? { quality } : {}),
  };
}

/** `format` (`jpg` taken for `jpeg`) and `quality`, which only a lossy format has. */
function formatOptions(raw: RawOptions): { format?: OutputFormat; quality?: number } {
  const text = stringOption(raw.format, 'format')?.toLowerCase();
  const name = text === 'jpg' ? 'jpeg' : text;
  if (name && !(OUTPUT_FORMATS as readonly string[]).includes(name)) {
    throw new UserError('invalid_option', `Expected \`format\` to be one of ${OUTPUT_FORMATS.join(', ')}, got ${shown(text)}.`);
  }
  const format = name as OutputFormat | undefined;
  const quality = integerOption(raw.quality, 'quality', 1, 100);
  if (quality !== undefined && (format ?? 'png') === 'png') {
    throw new UserError(
      'invalid_option',
      `Expected \`quality\` only with \`format\` jpeg or webp (png is lossless), got ${shown(quality)} with ${format ? '' : 'the default '}png.`,
    );
  }
  return { ...(format ? { format } : {}), ...(quality !== undefined ? { quality } : {}) };
}

/** `a red fox --count 12 --ar 16:9 --seed 42 --provider fal --no blur` → the same request as typed options. */
export function parseImagineText(text: string, limits: ImagineLimits): ImagineRequest {
  return parseImagine(parseInlineFlags(text, definition(limits), 'prompt'), limits);
}

export function help(limits: ImagineLimits): string {
  return `${formatHelp(definition(limits))}\nExample: /imagine a red fox in snow --count 12 --ar 16:9 --seed 42`;
}

/** Slack and the playground: an empty `/imagine`, or `/imagine help`, asks for help. */
const HELP = /^(help|--help|-h)?$/i;

/**
 * Validates (a mistake is thrown before anything is acknowledged), lets the platform acknowledge,
 * and enqueues. The caller shows the job's progress from the engine's events.
 */
async function run(context: CommandContext): Promise<CommandResult> {
  const { input } = context;
  // The tenant's defaults (help shows them too); a context made for help alone may have no engine.
  const limits = await tenantImagineLimits(context.engine?.tenantSettings, context.requester.tenant, context.limits);
  if (typeof input === 'string' && HELP.test(input.trim())) return { kind: 'text', text: help(limits), monospace: true };
  const request = typeof input === 'string' ? parseImagineText(input, limits) : parseImagine(input, limits);
  await context.accept?.();
  const job = await context.engine.submit(request, context.requester);
  const calls = job.batches.length;
  return {
    kind: 'job',
    text: `Job ${job.id}: ${job.request.count} images from ${job.request.provider} (${job.request.model}) in ${calls} call${calls === 1 ? '' : 's'}`,
    job,
  };
}

export const imagine = { name: 'imagine', definition, run } satisfies Command;
