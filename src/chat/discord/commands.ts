/**
 * The platform-neutral command definitions as Discord application commands, registered with one
 * bulk-overwrite PUT: on DISCORD_GUILD_ID when set (instant, for development), else globally.
 * Commands are guild-installed and offered in servers only unless DISCORD_DMS=on: a DM has no
 * moderators to review its gallery and no server to bear its cost.
 */
import {
  ApplicationCommandOptionType,
  ApplicationIntegrationType,
  InteractionContextType,
  PermissionFlagsBits,
  REST,
  Routes,
  type RESTOptions,
  type RESTPutAPIApplicationCommandsJSONBody,
} from 'discord.js';
import { commands } from '../../../commands/index.js';
import { imagineLimits } from '../../app.js';
import type { Config } from '../../config.js';
import type { CommandDefinition, CommandLimits, CommandOption } from '../../core/command.js';

/** Discord's limits on names and descriptions of commands and options. */
const DESCRIPTION_MAX = 100;
const CHOICES_MAX = 25;

function optionJson(option: CommandOption) {
  const base = {
    name: option.name,
    description: option.description.slice(0, DESCRIPTION_MAX),
    // "This or that" does not exist on Discord: an option another may stand in for is offered as
    // optional, and the command refuses when neither is given.
    required: (option.required ?? false) && option.requiredUnless === undefined,
  };
  if (option.type === 'boolean') return { ...base, type: ApplicationCommandOptionType.Boolean as const };
  // The file arrives as `resolved.attachments[id]`; the adapter fetches it before the command runs.
  if (option.type === 'attachment') return { ...base, type: ApplicationCommandOptionType.Attachment as const };
  if (option.type === 'integer') {
    return {
      ...base,
      type: ApplicationCommandOptionType.Integer as const,
      ...(option.minValue !== undefined ? { min_value: option.minValue } : {}),
      ...(option.maxValue !== undefined ? { max_value: option.maxValue } : {}),
    };
  }
  return {
    ...base,
    type: ApplicationCommandOptionType.String as const,
    ...(option.maxLength !== undefined ? { max_length: Math.min(option.maxLength, 6000) } : {}),
    ...(option.choices?.length ? { choices: option.choices.slice(0, CHOICES_MAX).map((c) => ({ name: c, value: c })) } : {}),
  };
}

export interface CommandScope {
  /** offer the commands in the bot's DMs too @default false */
  dms: boolean;
}

/**
 * Where a command may be used. `contexts` replaces the deprecated `dm_permission`; group DMs
 * (PrivateChannel) need a user install, which `integration_types` does not offer.
 */
function scopeJson(scope: CommandScope) {
  return {
    contexts: scope.dms ? [InteractionContextType.Guild, InteractionContextType.BotDM] : [InteractionContextType.Guild],
    integration_types: [ApplicationIntegrationType.GuildInstall],
  };
}

/** One command definition as application command JSON (chat input). */
export function commandJson(definition: CommandDefinition, scope: CommandScope = { dms: false }) {
  // Discord wants required options before optional ones; keep the definition's order otherwise.
  const options = [...definition.options].sort((a, b) => Number(b.required ?? false) - Number(a.required ?? false));
  return {
    name: definition.name,
    description: definition.description.slice(0, DESCRIPTION_MAX),
    options: options.map(optionJson),
    // Discord offers it to members with Manage Server only, unless a server's admins choose otherwise
    // (the command checks the permission again: this is only what Discord shows).
    ...(definition.managersOnly ? { default_member_permissions: PermissionFlagsBits.ManageGuild.toString() } : {}),
    ...scopeJson(scope),
  };
}

/** Every command of the registry, for this deployment's limits. */
export function commandsJson(limits: CommandLimits, scope: CommandScope = { dms: false }): RESTPutAPIApplicationCommandsJSONBody {
  return commands.map((command) => commandJson(command.definition(limits), scope));
}

/**
 * Registers every command of the registry. `fetchImpl` replaces the HTTP client (tests, proxies).
 * @returns where they were registered and how many
 */
export async function deployCommands(
  config: Config,
  fetchImpl?: typeof fetch,
): Promise<{ scope: 'guild' | 'global'; count: number }> {
  const discord = config.discord;
  if (!discord) throw new Error('Discord is not configured: set DISCORD_TOKEN and DISCORD_APP_ID');
  const rest = new REST({
    api: discord.apiUrl,
    ...(fetchImpl ? { makeRequest: fetchImpl as unknown as RESTOptions['makeRequest'] } : {}),
  }).setToken(discord.token);
  const body = commandsJson(imagineLimits(config), { dms: discord.dms });
  const route = discord.guildId
    ? Routes.applicationGuildCommands(discord.appId, discord.guildId)
    : Routes.applicationCommands(discord.appId);
  const registered = (await rest.put(route, { body })) as unknown[];
  return { scope: discord.guildId ? 'guild' : 'global', count: registered.length };
}
