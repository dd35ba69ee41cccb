/**
 * /settings — this server's (workspace's) defaults for /imagine, its daily image cap and its plan.
 * Without options it shows them, and which are defaults; with options it changes them. Everyone may
 * look; only those the platform says may manage the server may change (Discord: Manage Server; Slack:
 * workspace admins and owners; the playground's local user; the CLI's operator). A refusal or a bad
 * value is one line, and nothing is changed.
 */
import { z } from 'zod';
import type { Command, CommandContext, CommandDefinition, CommandLimits, CommandResult, RawOptions } from '../src/core/command.js';
import { UserError } from '../src/core/errors.js';
import {
  OUTPUT_FORMATS,
  PLANS,
  SETTING_KEYS,
  showValue,
  type SettingKey,
  type SettingsRecord,
  type SettingValues,
  type TenantSettings,
} from '../src/core/settings.js';
import { truncate } from '../src/core/text.js';
import { ASPECT_RATIOS, PROVIDER_NAMES, type ProviderName, type Requester } from '../src/core/types.js';

export function definition(limits?: CommandLimits): CommandDefinition {
  return {
    name: 'settings',
    description: 'Defaults, daily image cap and plan here; with options, change them',
    usage: 'count 8 ar 16:9 provider local (or nothing: show them)',
    managersOnly: true,
    options: [
      { name: 'provider', type: 'string', choices: limits?.providers ?? PROVIDER_NAMES, flags: ['provider'], description: 'Default provider' },
      { name: 'model', type: 'string', maxLength: 200, flags: ['model'], placeholder: 'ID', description: 'Default model of the default provider' },
      { name: 'ar', type: 'string', choices: ASPECT_RATIOS, flags: ['ar'], placeholder: 'RATIO', description: 'Default aspect ratio' },
      {
        name: 'count',
        type: 'integer',
        minValue: 1,
        ...(limits ? { maxValue: limits.maxImagesPerJob } : {}),
        flags: ['count'],
        description: 'Default number of images',
      },
      { name: 'format', type: 'string', choices: OUTPUT_FORMATS, flags: ['format'], description: 'Default image format' },
      { name: 'daily', type: 'integer', minValue: 0, flags: ['daily'], description: 'Images per UTC day here (0 = no cap of its own)' },
      { name: 'plan', type: 'string', choices: PLANS, flags: ['plan'], description: 'Plan: provider calls at once and the largest job' },
      { name: 'drafts', type: 'string', choices: ['on', 'off'], flags: ['drafts'], description: 'Small drafts by default (--draft off for full size)' },
    ],
  };
}

/** Who may change settings, as each platform says it. */
export function whoMayChange(platform: Requester['platform']): string {
  switch (platform) {
    case 'discord':
      return 'Only members with the Manage Server permission may change these settings; everyone may view them with /settings.';
    case 'slack':
      return 'Only workspace admins and owners may change these settings; everyone may view them with /settings.';
    default:
      return 'Only the operator of this bot may change these settings; everyone may view them with /settings.';
  }
}

/** What resets a setting to the deployment's default. */
const RESET = new Set(['default', 'reset']);
const HELP = /^(help|--help|-h)$/i;
/** `count=8`, `--count 8`, `count 8`: a key, with its value after `=` or as the next word. */
const KEY = /^(?:--)?([a-z]+)(?:=(.*))?$/i;

function shown(value: unknown): string {
  const text = typeof value === 'string' ? value : typeof value === 'number' ? String(value) : (JSON.stringify(value) ?? String(value));
  return `\`${truncate(text.replace(/`/g, "'"), 40)}\``;
}

function isKey(name: string): name is SettingKey {
  return (SETTING_KEYS as readonly string[]).includes(name);
}

/** `count 8 ar 16:9 provider local` → raw values by key; unknown, repeated and dangling keys are answered. */
export function parseSettingsText(text: string): RawOptions {
  const words = text.split(/\s+/).filter(Boolean);
  const raw: RawOptions = {};
  for (let i = 0; i < words.length; i += 1) {
    const match = KEY.exec(words[i]!);
    const name = match?.[1]?.toLowerCase() ?? '';
    if (!match || !isKey(name)) {
      throw new UserError('unknown_option', `Unknown setting ${shown(words[i])}. Settings: ${SETTING_KEYS.join(', ')}.`);
    }
    const value = match[2] ?? words[(i += 1)];
    if (value === undefined || value === '') throw new UserError('invalid_option', `Setting \`${name}\` needs a value, e.g. \`${name} ${example(name)}\`.`);
    if (raw[name] !== undefined) throw new UserError('invalid_option', `Setting \`${name}\` was given more than once.`);
    raw[name] = value;
  }
  return raw;
}

function example(key: SettingKey): string {
  return { provider: 'local', model: 'fal-ai/flux/dev', ar: '16:9', count: '8', format: 'webp', daily: '500', plan: 'pro', drafts: 'on' }[key];
}

/** A bad value: the setting, what it takes, what was given; nothing is changed. */
function bad(key: SettingKey, expected: string, given: unknown): UserError {
  return new UserError('invalid_option', `\`${key}\`: expected ${expected} (or default), got ${shown(given)}. Nothing was changed.`);
}

function oneOf(key: SettingKey, raw: unknown, allowed: readonly string[]): string {
  const text = typeof raw === 'string' ? raw.trim().toLowerCase() : raw;
  if (typeof text !== 'string' || !allowed.includes(text)) throw bad(key, `one of ${allowed.join(', ')}`, raw);
  return text;
}

function integer(key: SettingKey, raw: unknown, min: number, max: number): number {
  const text = typeof raw === 'string' ? raw.trim() : raw;
  const value = typeof text === 'string' && /^[+-]?\d+$/.test(text) ? Number(text) : text;
  const parsed = z.number().int().min(min).max(max).safeParse(value);
  if (!parsed.success) throw bad(key, `an integer from ${min} to ${max}`, raw);
  return parsed.data;
}

const MODEL_ID = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*){1,3}$/i;

type Changes = { [K in SettingKey]?: SettingValues[K] | null };

/**
 * Raw values → the changes to make (null = back to the default), checked against this deployment and
 * against each other: a model belongs to the provider set with it (or the one in force), a count
 * fits the plan set with it (or the one in force). The first bad value is thrown, in a fixed order.
 */
export function validateSettings(raw: RawOptions, current: SettingValues, settings: TenantSettings, limits: CommandLimits): Changes {
  const changes: Changes = {};
  const given = (key: SettingKey): unknown => {
    const value = raw[key];
    if (value === undefined || value === null) return undefined;
    return typeof value === 'string' && RESET.has(value.trim().toLowerCase()) ? null : value;
  };
  for (const key of Object.keys(raw)) {
    if (!isKey(key)) throw new UserError('unknown_option', `Unknown setting ${shown(key)}. Settings: ${SETTING_KEYS.join(', ')}.`);
  }

  const plan = given('plan');
  if (plan !== undefined) changes.plan = plan === null ? null : (oneOf('plan', plan, PLANS) as SettingValues['plan']);

  const provider = given('provider');
  if (provider !== undefined) {
    if (provider === null) changes.provider = null;
    else {
      const name = oneOf('provider', provider, PROVIDER_NAMES);
      if (!limits.providers.includes(name as ProviderName)) throw bad('provider', `one of ${limits.providers.join(', ')} (configured here)`, provider);
      changes.provider = name as ProviderName;
    }
  }

  const model = given('model');
  if (model !== undefined) {
    if (model === null) changes.model = null;
    else {
      const inForce = (changes.provider === undefined ? current.provider : changes.provider) ?? limits.defaultProvider;
      const id = typeof model === 'string' ? model.trim() : '';
      const allowed = inForce === 'local' ? ['local'] : (limits.models?.[inForce] ?? '*');
      if (allowed === '*' ? !MODEL_ID.test(id) || id.length > 200 : !allowed.includes(id)) {
        throw bad('model', allowed === '*' ? `a model id such as owner/name for ${inForce}` : `one of ${allowed.join(', ')} for ${inForce}`, model);
      }
      changes.model = { provider: inForce, id };
    }
  }

  const ar = given('ar');
  if (ar !== undefined) changes.ar = ar === null ? null : (oneOf('ar', ar, ASPECT_RATIOS) as SettingValues['ar']);

  const count = given('count');
  if (count !== undefined) {
    const planInForce = settings.planOf({ ...current, ...(changes.plan !== undefined ? { plan: changes.plan ?? undefined } : {}) });
    changes.count = count === null ? null : integer('count', count, 1, settings.maxImagesOf(planInForce));
  }

  const format = given('format');
  if (format !== undefined) changes.format = format === null ? null : (oneOf('format', format, OUTPUT_FORMATS) as SettingValues['format']);

  const daily = given('daily');
  if (daily !== undefined) changes.daily = daily === null ? null : integer('daily', daily, 0, settings.policy.globalDailyImages ?? 10_000_000);

  const drafts = given('drafts');
  if (drafts !== undefined) changes.drafts = drafts === null ? null : oneOf('drafts', drafts, ['on', 'off']) === 'on';

  return changes;
}

/** Every setting with its value, and which are defaults; then the latest change. */
export function describeSettings(record: SettingsRecord, settings: TenantSettings, limits: CommandLimits): string {
  const { values } = record;
  const plan = settings.planOf(values);
  const { calls } = settings.policy.plans[plan];
  const provider = values.provider && limits.providers.includes(values.provider) ? values.provider : limits.defaultProvider;
  const daily = settings.dailyOf(values);
  const fallback: Record<SettingKey, string> = {
    provider: limits.defaultProvider,
    model: `${limits.defaultModels[provider] ?? 'none'} (${provider})`,
    ar: '1:1',
    count: '4',
    format: 'as the provider makes it',
    daily: daily === undefined ? 'none' : String(daily),
    plan,
    drafts: 'off',
  };
  const lines = SETTING_KEYS.map((key) => {
    const value = showValue(key, values);
    return `${key}: ${value ?? fallback[key]}${value === undefined ? ' (default)' : ''}`;
  });
  lines.push(`The ${plan} plan: ${calls} provider call${calls === 1 ? '' : 's'} at once, at most ${settings.maxImagesOf(plan)} images per job.`);
  const last = record.history.at(-1);
  if (last) lines.push(`Last change: ${last.key} ${last.old ?? 'default'} → ${last.new ?? 'default'} by ${last.byName ?? last.by}, ${last.at.slice(0, 16).replace('T', ' ')} UTC.`);
  return lines.join('\n');
}

function help(): string {
  return [
    '/settings [key value …] — show the settings here, or change them (server managers)',
    '  provider  default provider',
    '  model     default model of the default provider',
    `  ar        default aspect ratio (${ASPECT_RATIOS.join(', ')})`,
    '  count     default number of images',
    `  format    default image format (${OUTPUT_FORMATS.join(', ')})`,
    '  daily     images per UTC day here (0 = no cap of its own)',
    `  plan      ${PLANS.join(', ')}: provider calls at once and the largest job`,
    '  drafts    on, off (small drafts by default; upscale the approved)',
    'Any value may be `default`, which goes back to the bot’s default. Example: /settings count 8 ar 16:9',
  ].join('\n');
}

async function run(context: CommandContext): Promise<CommandResult> {
  const { input, limits, requester } = context;
  const settings = context.engine.tenantSettings;
  if (!settings) throw new UserError('not_found', 'This bot keeps no per-server settings.');
  if (typeof input === 'string' && HELP.test(input.trim())) return { kind: 'text', text: help(), monospace: true };
  const raw = typeof input === 'string' ? parseSettingsText(input) : Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined && v !== null));
  const tenant = requester.tenant;
  if (Object.keys(raw).length === 0) {
    const record = await settings.read(tenant);
    return { kind: 'text', text: `Settings here:\n${describeSettings(record, settings, limits)}` };
  }
  if (tenant.startsWith('dm:')) throw new UserError('forbidden', 'Settings belong to a server or workspace; direct messages have none to change.');
  if (!(await context.mayManage?.())) throw new UserError('forbidden', whoMayChange(requester.platform));
  const current = await settings.read(tenant);
  const changes = validateSettings(raw, current.values, settings, limits);
  const { record, changes: made } = await settings.change(tenant, changes, { id: requester.userId, ...(requester.userName ? { name: requester.userName } : {}) });
  const summary = made.length
    ? `Changed: ${made.map((c) => `${c.key} ${c.old ?? 'default'} → ${c.new ?? 'default'}`).join(', ')}.`
    : 'Nothing changed: those are the settings already.';
  return { kind: 'text', text: `${summary}\n${describeSettings(record, settings, limits)}` };
}

export const settings = { name: 'settings', definition, run } satisfies Command;
