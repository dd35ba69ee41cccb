/** Who is acting in an interaction, and the private answer every handler falls back on. */
import { MessageFlags, PermissionFlagsBits, type Interaction, type RepliableInteraction } from 'discord.js';
import type { Actor } from '../../core/actions.js';
import { NO_EMBEDS, NO_MENTIONS } from './render.js';

/** Guild, or the user's own DMs: the unit of fairness and of who may review. */
export function tenantOf(interaction: Interaction): string {
  return interaction.guildId ?? `dm:${interaction.user.id}`;
}

export function reviewer(interaction: Interaction): { id: string; name: string } {
  return { id: interaction.user.id, name: interaction.user.globalName ?? interaction.user.username };
}

/** The member as mayAct sees them: a moderator holds Manage Messages (none in a DM). */
export function actorOf(interaction: Interaction): Actor {
  return {
    userId: interaction.user.id,
    moderator: interaction.memberPermissions?.has(PermissionFlagsBits.ManageMessages) ?? false,
  };
}

/**
 * Answers privately, whatever has been sent already (reply, or follow-up after a defer). Answers may
 * echo what the user typed (an option's value, a job's prompt): no link in them may unfurl.
 */
export async function answerPrivately(interaction: RepliableInteraction, content: string): Promise<void> {
  const message = { content, flags: MessageFlags.Ephemeral | NO_EMBEDS, allowedMentions: NO_MENTIONS };
  if (interaction.deferred || interaction.replied) await interaction.followUp(message);
  else await interaction.reply(message);
}
