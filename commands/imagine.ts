/**
 * /imagine — one prompt, a batch of images; or a prompt list, each prompt with its own count, as one
 * job. Platform-neutral: the typed options (Discord, CLI) and the inline-flag text (Slack, playground)
 * both end in the same validation and the same messages. A list comes as a file (Discord's `prompts`
 * attachment, the CLI's `--prompts FILE`) or as the lines after a text command's first; one parser
 * reads both.
 */
import { z } from 'zod';
import {
  BOOLEAN_WORDS,
  fileTooLarge,
  formatHelp,
  isAttachedFile,
  parseInlineFlags,
  type Command,
  type CommandContext,
  type CommandDefinition,
  type CommandLimits,
  type CommandResult,
  type RawOptions,
} from '../src/core/command.js';
import { truncate } from '../src/core/text.js';
import { isUserError, UserError } from '../src/core/errors.js';
import { tenantImagineLimits, type ImagineDefaults } from '../src/core/settings.js';
import {
  ASPECT_RATIOS,
  MODEL_IDS,
  OUTPUT_FORMATS,
  PROVIDER_NAMES,
  type ImagineRequest,
  type OutputFormat,
  type LoraRef,
  type PromptEntry,
  type ProviderName,
} from '../src/core/types.js';

export const PROMPT_MAX = 1500;
export const NEGATIVE_MAX = 1000;
export const SEED_MAX = 2 ** 32 - 1;
export const DEFAULT_COUNT = 4;
/** At most this many different prompts in one list. */
export const PROMPT_LIST_MAX = 100;
/** At most this many prompt lines, repeats included (a repeat costs no image, but each line is recorded). */
export const PROMPT_LINES_MAX = 1000;
/** The largest prompt-list file (Discord's attachment, the CLI's `--prompts FILE`). */
export const PROMPT_FILE_MAX_BYTES = 64 * 1024;

/**
 * What the deployment allows /imagine to ask for (the limits every command gets), and the tenant's
 * defaults from /settings (count, ar, format, drafts), which fill what the options leave out.
 */
export type ImagineLimits = CommandLimits & { defaults?: ImagineDefaults };

export function definition(limits?: ImagineLimits): CommandDefinition {
  return {
    name: 'imagine',
    description: 'Generate a batch of images from a prompt',
    usage: 'a red fox in snow --count 12 --ar 16:9 --seed 42 (or: help)',
    options: [
      { name: 'prompt', type: 'string', required: true, requiredUnless: 'prompts', maxLength: PROMPT_MAX, flags: ['prompt'], description: 'What to draw' },
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
      {
        name: 'draft',
        type: 'boolean',
        flags: ['draft'],
        description: `Small drafts; upscale the approved ones later (default ${limits?.defaults?.draft ? 'on' : 'off'})`,
      },
      {
        name: 'lora',
        type: 'string',
        maxLength: 2000,
        repeatable: true,
        flags: ['lora'],
        placeholder: 'ID[:SCALE]',
        description: `LoRA styles, ID[:scale] (a URL, a Hugging Face owner/repo or a CivitAI AIR; scale 0–4, default 1), comma-separated or repeated, up to ${limits?.maxLoras ?? DEFAULT_MAX_LORAS}`,
      },
      {
        name: 'prompts',
        type: 'attachment',
        maxBytes: PROMPT_FILE_MAX_BYTES,
        flags: ['prompts'],
        typedInstead: 'write one prompt per line after the first line instead',
        description: 'A .txt prompt list instead of prompt: one prompt per line, each may end with --count N',
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


function booleanOption(raw: unknown, name: string): boolean | undefined {
  if (raw === undefined || raw === null || raw === '') return undefined;
  if (typeof raw === 'boolean') return raw;
  const word = typeof raw === 'string' ? raw.trim().toLowerCase() : undefined;
  if (word !== undefined && Object.hasOwn(BOOLEAN_WORDS, word)) return BOOLEAN_WORDS[word];
  throw new UserError('invalid_option', `Expected \`${name}\` to be on or off, got ${shown(raw)}.`);
}

/** A cleaned prompt of 1 to PROMPT_MAX characters, or the refusal naming `prompt`. */
function checkedPrompt(raw: unknown): string {
  const prompt = stringOption(raw, 'prompt') ?? '';
  const length = Array.from(prompt).length;
  if (length === 0) throw new UserError('invalid_option', `Expected \`prompt\` to be 1 to ${PROMPT_MAX} characters, got an empty prompt.`);
  if (length > PROMPT_MAX) throw new UserError('invalid_option', `Expected \`prompt\` to be 1 to ${PROMPT_MAX} characters, got ${length}.`);
  return prompt;
}

/** One prompt line of a list, as typed: where it is, its prompt and its own `--count`, not yet checked. */
interface ListLine {
  line: number;
  prompt: unknown;
  count: unknown;
}

/** Runs `check`, its refusal prefixed with the line it is about: `Line 3: expected …`. */
function atLine<T>(line: number, check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (!isUserError(error)) throw error;
    throw new UserError(error.code, `Line ${line}: ${error.message.charAt(0).toLowerCase()}${error.message.slice(1)}`);
  }
}

/**
 * The prompt lines of a list's text, numbered from `firstLine`: blank lines and `#` comments are
 * skipped; a line may end with its own `--count N`, any other option is refused (it is the job's,
 * and `jobOptions` says where it goes).
 */
function listLines(text: string, command: CommandDefinition, firstLine: number, jobOptions: string): ListLine[] {
  const lines: ListLine[] = [];
  text.split(/\r\n|\r|\n/).forEach((content, i) => {
    const line = firstLine + i;
    const trimmed = content.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const raw = atLine(line, () => parseInlineFlags(content, command, 'prompt'));
    const other = command.options.find((o) => o.name !== 'prompt' && o.name !== 'count' && raw[o.name] !== undefined);
    if (other) {
      throw new UserError(
        'invalid_option',
        `Line ${line}: only \`--count\` may be given per prompt; \`--${other.flags[0]}\` applies to the whole job, ${jobOptions}.`,
      );
    }
    lines.push({ line, prompt: raw.prompt, count: raw.count });
  });
  return lines;
}

/**
 * A list's lines as entries: each prompt cleaned and checked like `prompt`, each count 1 to the job
 * limit (`each` when the line gives none). Identical prompts are one entry, made once: its count is
 * the largest asked for, and it keeps every line with that line's count.
 */
function entriesOf(lines: readonly ListLine[], each: number, maxImagesPerJob: number): PromptEntry[] {
  if (lines.length > PROMPT_LINES_MAX) {
    throw new UserError('invalid_option', `The prompt list has ${lines.length} prompt lines; at most ${PROMPT_LINES_MAX} per job.`);
  }
  const byPrompt = new Map<string, PromptEntry>();
  for (const { line, prompt: rawPrompt, count: rawCount } of lines) {
    const prompt = atLine(line, () => checkedPrompt(rawPrompt));
    const count = atLine(line, () => integerOption(rawCount, 'count', 1, maxImagesPerJob)) ?? each;
    const entry = byPrompt.get(prompt);
    if (entry) {
      entry.count = Math.max(entry.count, count);
      entry.lines.push({ line, count });
    } else byPrompt.set(prompt, { prompt, count, lines: [{ line, count }] });
  }
  const entries = [...byPrompt.values()];
  if (entries.length === 0) {
    throw new UserError('invalid_option', 'The prompt list has no prompts: write one prompt per line (blank lines and lines starting with # are skipped).');
  }
  if (entries.length > PROMPT_LIST_MAX) {
    throw new UserError('invalid_option', `The prompt list has ${entries.length} different prompts; at most ${PROMPT_LIST_MAX} per job.`);
  }
  const total = entries.reduce((sum, entry) => sum + entry.count, 0);
  if (total > maxImagesPerJob) {
    throw new UserError('invalid_option', `The prompt list asks for ${total} images; this bot's limit is ${maxImagesPerJob} per job.`);
  }
  return entries;
}

/**
 * A prompt list (one prompt per line, each may end with `--count N`) as entries, or one clear
 * refusal naming the line. `count` is the count of a line that gives none @default the tenant's, else 4.
 */
export function parsePromptList(text: string, limits: ImagineLimits, options: { count?: number; firstLine?: number } = {}): PromptEntry[] {
  const lines = listLines(text, definition(limits), options.firstLine ?? 1, 'give it with the command');
  return entriesOf(lines, options.count ?? limits.defaults?.count ?? DEFAULT_COUNT, limits.maxImagesPerJob);
}

/** The text of a `prompts` file: a .txt (or text/plain) file of at most 64 KiB, in UTF-8. */
function promptFileText(raw: unknown): string {
  if (!isAttachedFile(raw)) throw new UserError('invalid_option', `Expected \`prompts\` to be a .txt file, got ${shown(raw)}.`);
  if (raw.data.byteLength > PROMPT_FILE_MAX_BYTES) throw fileTooLarge('prompts', PROMPT_FILE_MAX_BYTES, raw.data.byteLength);
  const type = raw.contentType?.split(';')[0]?.trim().toLowerCase() || undefined;
  if (type !== 'text/plain' && !/\.txt$/i.test(raw.name)) {
    throw new UserError('invalid_option', `Expected \`prompts\` to be a .txt file (text/plain), got ${shown(raw.name)}${type ? ` (${shown(type)})` : ''}.`);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(raw.data);
  } catch {
    throw new UserError('invalid_option', 'Expected `prompts` to be UTF-8 text, and this file is not: save it as UTF-8.');
  }
}

/** The tenant's defaults (/settings) stand for the options left out, and are checked like them. */
function withDefaults(given: RawOptions, limits: ImagineLimits): RawOptions {
  return { ...limits.defaults, ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined && v !== null)) };
}

/**
 * Validates typed options (Discord, the CLI) into a request, or throws one clear UserError. A
 * `prompts` file stands for `prompt` (not both); a list of one prompt is a plain request.
 */
export function parseImagine(given: RawOptions, limits: ImagineLimits): ImagineRequest {
  const raw = withDefaults(given, limits);
  if (raw.prompts === undefined) {
    if (raw.prompt === undefined) throw new UserError('invalid_option', 'Give `prompt`, or a `prompts` file with one prompt per line.');
    return requestOf(raw, limits);
  }
  if (raw.prompt !== undefined) throw new UserError('invalid_option', 'Give either `prompt` or a `prompts` file, not both.');
  return requestOf(raw, limits, listLines(promptFileText(raw.prompts), definition(limits), 1, 'give it with the command'));
}

/** Options checked into a request: one prompt (`raw.prompt`), or the list's lines, each `raw.count` images unless it says. */
function requestOf(raw: RawOptions, limits: ImagineLimits, lines?: readonly ListLine[]): ImagineRequest {
  // One prompt is checked before the count, as it always was: the first refusal stays the same.
  let prompt = lines === undefined ? checkedPrompt(raw.prompt) : '';
  const each = integerOption(raw.count, 'count', 1, limits.maxImagesPerJob) ?? DEFAULT_COUNT;
  let count = each;
  let prompts: PromptEntry[] | undefined;
  if (lines !== undefined) {
    const entries = entriesOf(lines, each, limits.maxImagesPerJob);
    prompt = entries[0]!.prompt;
    count = entries.reduce((sum, entry) => sum + entry.count, 0);
    if (entries.length > 1) prompts = entries;
  }

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
  let model = limits.defaultModels[provider] ?? '';
  if (modelText) {
    const allowed = provider === 'local' ? ['local'] : (limits.models?.[provider] ?? '*');
    if (allowed === '*' ? !MODEL_IDS[provider].test(modelText) || modelText.length > 200 : !allowed.includes(modelText)) {
      const names = allowed === '*' ? [] : allowed.map((m) => `\`${m}\``);
      const example = provider === 'fal' || provider === 'replicate' ? 'owner/name' : (limits.defaultModels[provider] ?? 'owner/name');
      const expected = allowed === '*' ? `a model id such as \`${example}\`` : names.length === 1 ? names[0]! : `one of ${names.join(', ')}`;
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
  const draft = booleanOption(raw.draft, 'draft');
  const loras = loraOption(raw.lora, limits.maxLoras ?? DEFAULT_MAX_LORAS);

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
    ...(prompts ? { prompts } : {}),
    ...(draft ? { draft } : {}),
    ...(loras.length > 0 ? { loras } : {}),
  };
}

/** LoRAs a job may name at most, unless the deployment says (MAX_LORAS). */
export const DEFAULT_MAX_LORAS = 3;
/** A LoRA's weights: an https URL, a Hugging Face `owner/repo[/file]`, or a CivitAI AIR. */
const LORA_ID = /^(https:\/\/[^\s,]{1,480}|[A-Za-z0-9][\w.-]{0,95}\/[\w.-]{1,96}(\/[\w./-]{1,200})?|urn:air:[a-z0-9]+:lora:[a-z]+:\d+@\d+)$/i;

/** `a:0.8, https://…/style.safetensors, urn:air:sdxl:lora:civitai:1@2:1.2` → LoRAs with scales (default 1). */
function loraOption(raw: unknown, max: number): LoraRef[] {
  const text = stringOption(raw, 'lora');
  if (!text) return [];
  const loras = text.split(',').map((part) => part.trim()).filter(Boolean).map((part): LoraRef => {
    // The scale follows the last colon when it is a number (URLs and AIRs have colons of their own).
    const match = /^(.*):(-?\d+(?:\.\d+)?)$/.exec(part);
    const id = match ? match[1]! : part;
    const scale = match ? Number(match[2]) : 1;
    if (!LORA_ID.test(id)) {
      throw new UserError('invalid_option', `Expected \`lora\` to be an https URL, a Hugging Face owner/repo or a CivitAI AIR (urn:air:…:lora:…), got ${shown(id)}.`);
    }
    if (!(scale >= 0 && scale <= 4)) throw new UserError('invalid_option', `Expected the scale of LoRA ${shown(id)} to be from 0 to 4, got ${shown(match![2])}.`);
    return { id, scale };
  });
  if (loras.length > max) throw new UserError('invalid_option', `Expected at most ${max} LoRAs, got ${loras.length}.`);
  return loras;
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

/**
 * `a red fox --count 12 --ar 16:9 --seed 42 --provider fal --no blur` → the same request as typed
 * options. More lines make a prompt list: the first line's flags are the whole job's (its `--count`
 * the count of each prompt), its text if any the first prompt; each later line is one prompt.
 */
export function parseImagineText(text: string, limits: ImagineLimits): ImagineRequest {
  const command = definition(limits);
  const [first = '', ...rest] = text.split(/\r\n|\r|\n/);
  const raw = withDefaults(parseInlineFlags(first, command, 'prompt'), limits);
  const later = listLines(rest.join('\n'), command, 2, 'give it on the first line');
  if (later.length === 0) return requestOf(raw, limits);
  return requestOf(raw, limits, [...(raw.prompt !== undefined ? [{ line: 1, prompt: raw.prompt, count: undefined }] : []), ...later]);
}

export function help(limits: ImagineLimits): string {
  return [
    formatHelp(definition(limits)),
    'Example: /imagine a red fox in snow --count 12 --ar 16:9 --seed 42',
    "Prompt list: one prompt per line after the first; the first line's options apply to all (--count to each prompt), a line may end with its own --count N.",
  ].join('\n');
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
  const { count, draft, prompts } = job.request;
  const what = `${count} ${draft ? 'draft ' : ''}images${prompts ? ` for ${prompts.length} prompts` : ''}`;
  return {
    kind: 'job',
    text: `Job ${job.id}: ${what} from ${job.request.provider} (${job.request.model}) in ${calls} call${calls === 1 ? '' : 's'}`,
    job,
  };
}

export const imagine = { name: 'imagine', definition, run } satisfies Command;
