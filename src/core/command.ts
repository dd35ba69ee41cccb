/**
 * The platform-neutral shape of a slash command: one object per command in `commands/`, listed in
 * `commands/index.ts`. Discord turns `definition` into application command JSON, Slack and the
 * playground into an inline-flag parser and help text, the CLI into its options and usage; every
 * platform answers a command by calling its `run`.
 */
import type { Engine } from './engine.js';
import { UserError } from './errors.js';
import type { Job, ProviderName, Requester } from './types.js';
import { truncate } from './text.js';

/** What the deployment allows; comes from config through the composition root. */
export interface CommandLimits {
  maxImagesPerJob: number;
  providers: readonly ProviderName[];
  defaultProvider: ProviderName;
  /** the model a request names none of, per configured provider */
  defaultModels: Readonly<Partial<Record<ProviderName, string>>>;
  /** LoRAs one job may name (MAX_LORAS) @default 3 */
  maxLoras?: number;
  /** models a user may pick, per provider; `*` = any well-formed id @default any */
  models?: Readonly<Partial<Record<ProviderName, readonly string[] | '*'>>>;
}

export interface CommandContext {
  engine: Engine;
  limits: CommandLimits;
  requester: Requester;
  /** typed options (Discord, the CLI) or the text typed after the command's name (Slack, the playground) */
  input: RawOptions | string;
  /**
   * Called once the input is valid, before the command starts anything slow whose answer is public (a
   * job's progress): the platform acknowledges now — Discord defers publicly, Slack acks within its
   * 3 s. Whatever the command answers before this call answers the command itself. A platform may
   * refuse here (a replayed delivery) by throwing a UserError.
   */
  accept?: () => Promise<void>;
  /**
   * Whether the requester may change this tenant's settings (Discord: Manage Server; Slack: a
   * workspace admin or owner; the playground's local user and the CLI's operator: yes). Asked only
   * when something is to change; unset = no one may.
   */
  mayManage?: () => Promise<boolean>;
}

/**
 * A command's answer, platform-neutral. Text is plain: what is inside `backticks` is meant as code,
 * everything else is escaped by the platform. Text answers are for the person who asked only.
 */
export type CommandResult =
  | { kind: 'text'; text: string; /** laid out in columns (help): shown monospaced */ monospace?: boolean }
  /** a job was started: the platform follows it with a public progress message */
  | { kind: 'job'; text: string; job: Job };

export interface Command {
  readonly name: string;
  /** the command for this deployment's limits; without them, its shape (names, flags, descriptions) */
  definition(limits?: CommandLimits): CommandDefinition;
  /** throws a UserError for anything the user must fix; the caller turns it into an answer */
  run(context: CommandContext): Promise<CommandResult>;
}

export interface CommandOption {
  name: string;
  description: string;
  /**
   * `boolean`: typed as a bare flag (`--draft` = on) or with on/off, true/false, yes/no; `attachment`:
   * a file (Discord's ATTACHMENT option, a path on the CLI), fetched by the platform under `maxBytes`
   * and handed to the command as an AttachedFile. Text platforms cannot attach: the flag is refused.
   */
  type: 'string' | 'integer' | 'boolean' | 'attachment';
  required?: boolean;
  /**
   * A required option that this other option may stand in for (`prompt`, or a `prompts` file). Discord
   * cannot say "one of two", so it offers both as optional; the command refuses when neither is given.
   */
  requiredUnless?: string;
  /** (attachment) the largest file accepted: the platform refuses a larger one before reading it whole */
  maxBytes?: number;
  /** (attachment) what to do instead where nothing can be attached, said when its flag is typed */
  typedInstead?: string;
  minValue?: number;
  maxValue?: number;
  maxLength?: number;
  choices?: readonly string[];
  /** the flag spellings accepted in plain text (`--count`, `--n`); the first is the one shown in help */
  flags: readonly string[];
  /** may be given more than once (`--lora a --lora b`): the values are joined with commas, as one list */
  repeatable?: boolean;
  /** how usage lines name the value (`N`, `RATIO`) @default the choices, `N` or `TEXT` */
  placeholder?: string;
}

export interface CommandDefinition {
  name: string;
  description: string;
  /** an example of what follows the command's name (Slack's usage hint) */
  usage?: string;
  /** options in display order; the first `required` string option is the free text before any flag */
  options: readonly CommandOption[];
  /** offered to server managers only by default (Discord: `default_member_permissions` Manage Server) */
  managersOnly?: boolean;
}

/** Raw option values as a platform delivers them, before validation. */
export type RawOptions = Record<string, unknown>;

/** An attachment option's value: the file's bytes, fetched by the platform under the option's `maxBytes`. */
export interface AttachedFile {
  /** the file name as the user gave it (untrusted: shown, never used as a path) */
  name: string;
  /** the type the platform reports, if any */
  contentType?: string;
  data: Uint8Array;
}

export function isAttachedFile(value: unknown): value is AttachedFile {
  if (!value || typeof value !== 'object') return false;
  const file = value as Partial<AttachedFile>;
  return typeof file.name === 'string' && file.data instanceof Uint8Array && (file.contentType === undefined || typeof file.contentType === 'string');
}

/** `64 KiB`, `1.5 MiB`: a size as a refusal shows it. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${+(bytes / 1024).toPrecision(3)} KiB`;
  return `${+(bytes / 1024 / 1024).toPrecision(3)} MiB`;
}

/**
 * The one refusal of a file above an attachment option's `maxBytes`, whoever finds it first (platform
 * or command); `bytes` unknown when the download was cut off at the cap.
 */
export function fileTooLarge(option: string, maxBytes: number, bytes?: number): UserError {
  // Just over the cap reads the same rounded ("64 KiB, got 64 KiB"): then both are said in bytes.
  const close = bytes !== undefined && formatBytes(bytes) === formatBytes(maxBytes);
  const limit = close ? `${formatBytes(maxBytes)} (${maxBytes} bytes)` : formatBytes(maxBytes);
  const got = bytes === undefined ? 'a larger one' : close ? `${bytes} bytes` : formatBytes(bytes);
  return new UserError('invalid_option', `Expected \`${option}\` to be a file of at most ${limit}, got ${got}.`);
}

/** What a boolean option may be typed as; a bare flag is on. */
export const BOOLEAN_WORDS: Readonly<Record<string, boolean>> = { on: true, true: true, yes: true, off: false, false: false, no: false };

const FLAG = /^--([a-z][a-z0-9-]*)(?:=(.*))?$/i;

/**
 * Splits `a red fox --count 12 --ar 16:9 --no blur, text` into raw options: the text before the first
 * flag goes to `freeText`, each flag takes the words up to the next flag. Unknown, repeated and
 * dangling flags are answered with the option's name, never guessed at. A boolean flag takes the next
 * word only when it is on/off (true/false, yes/no); alone it is on, and the words after it are free
 * text again (`--draft a red fox`). An attachment's flag is refused: text cannot carry a file.
 */
export function parseInlineFlags(text: string, definition: CommandDefinition, freeText: string): RawOptions {
  const byFlag = new Map<string, CommandOption>();
  for (const option of definition.options) for (const flag of option.flags) byFlag.set(flag.toLowerCase(), option);

  const raw: RawOptions = {};
  const free: string[] = [];
  let current: { option: CommandOption; flag: string; words: string[] } | undefined;
  const close = () => {
    if (!current) return;
    if (current.option.type === 'boolean' && current.words.length === 0) {
      raw[current.option.name] = 'on';
      current = undefined;
      return;
    }
    const value = current.words.join(' ').trim();
    if (value === '') {
      throw new UserError(
        'invalid_option',
        `Option \`--${current.flag}\` needs a value, e.g. \`--${current.option.flags[0]} ${example(current.option)}\`.`,
      );
    }
    const earlier = raw[current.option.name];
    raw[current.option.name] = typeof earlier === 'string' ? `${earlier},${value}` : value;
    current = undefined;
  };

  for (const word of text.split(/\s+/).filter(Boolean)) {
    const match = FLAG.exec(word);
    if (!match) {
      if (current?.option.type === 'boolean') {
        // `--draft off` takes its word; `--draft a red fox` is a bare flag before more free text.
        const taken = current.words.length === 0 && Object.hasOwn(BOOLEAN_WORDS, word.toLowerCase());
        if (taken) current.words.push(word);
        close();
        if (taken) continue;
      }
      (current ? current.words : free).push(word);
      continue;
    }
    close();
    const flag = match[1]!.toLowerCase();
    const option = byFlag.get(flag);
    if (!option) {
      const known = definition.options.filter((o) => o.name !== freeText && o.type !== 'attachment').map((o) => `--${o.flags[0]}`);
      throw new UserError('unknown_option', `Unknown option \`--${truncate(flag, 40)}\`. Options: ${known.join(', ')}.`);
    }
    if (option.type === 'attachment') {
      throw new UserError(
        'invalid_option',
        `Option \`--${option.flags[0]}\` takes a file, which cannot be attached here${option.typedInstead ? `: ${option.typedInstead}` : ''}.`,
      );
    }
    if (raw[option.name] !== undefined && !option.repeatable) {
      throw new UserError('invalid_option', `Option \`--${option.flags[0]}\` was given more than once.`);
    }
    current = { option, flag, words: match[2] !== undefined ? [match[2]] : [] };
  }
  close();
  if (free.length > 0) raw[freeText] = free.join(' ');
  return raw;
}

function example(option: CommandOption): string {
  if (option.choices?.length) return option.choices[0]!;
  if (option.type === 'boolean') return 'on';
  if (option.type === 'integer') return String(option.minValue ?? 1);
  return '…';
}

/**
 * Plain-text help for text-based platforms: usage line and one line per option. Attachment options
 * are left out (nothing can be attached there); a boolean shows that it may stand alone.
 */
export function formatHelp(definition: CommandDefinition): string {
  const free = definition.options.find((o) => o.required && o.type === 'string');
  const typed = definition.options.filter((o) => o !== free && o.type !== 'attachment');
  const flags = typed.length > 0 ? ' [options]' : '';
  const lines = [`/${definition.name}${free ? ` ${free.name}` : ''}${flags} — ${definition.description}`];
  for (const option of typed) {
    const range =
      option.choices?.length
        ? ` (${option.choices.join(', ')})`
        : option.type === 'integer'
          ? ` (${option.minValue ?? '…'}–${option.maxValue ?? '…'})`
          : '';
    const value = option.type === 'boolean' ? ' [on|off]' : '';
    lines.push(`  --${option.flags[0]}${value}  ${option.description}${range}`);
  }
  return lines.join('\n');
}

/** The value an option takes, as a usage line shows it: `N`, `fal|local`, `RATIO`, `FILE`; none for a boolean flag. */
export function placeholderOf(option: CommandOption): string {
  if (option.placeholder) return option.placeholder;
  if (option.type === 'boolean') return '';
  if (option.type === 'attachment') return 'FILE';
  if (option.choices?.length && option.choices.length <= 4) return option.choices.join('|');
  return option.type === 'integer' ? 'N' : 'TEXT';
}
