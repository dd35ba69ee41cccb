/**
 * Slash commands, buttons and the "Review by number" modal. Every interaction gets an answer: a
 * validation error or a refusal is ephemeral, an unexpected error is logged (without tokens) and
 * answered with one generic line — never the silent "This interaction failed".
 */
import {
  ApplicationCommandOptionType,
  PermissionFlagsBits,
  type ButtonInteraction,
  type ChatInputCommandInteraction,
  type Interaction,
} from 'discord.js';
import { answer, commandList, commandNamed } from '../../../commands/index.js';
import type { App } from '../../app.js';
import type { Command, CommandLimits, RawOptions } from '../../core/command.js';
import { decodeAction, GONE, mayAct, REFUSAL } from '../../core/actions.js';
import { isJobFinished } from '../../core/engine.js';
import { GENERIC_FAILURE, isUserError } from '../../core/errors.js';
import type { Requester } from '../../core/types.js';
import { gallerySummary } from '../../core/views.js';
import type { Courier } from '../delivery/index.js';
import type { AttachmentFetcher } from './attachments.js';
import { layoutFor } from './gallery.js';
import { galleryBody, NO_EMBEDS, NO_MENTIONS, safeText } from './render.js';
import { actorOf, answerPrivately, reviewer, tenantOf } from './reply.js';
import { numbersSubmitted, sheetButton } from './sheet-actions.js';
import { describeError, type GalleryEntry, type MessageTarget, type Transport } from './transport.js';

export { GENERIC_FAILURE };
/** The answer to anything sent from a DM while DISCORD_DMS is off (an old global registration still offers it). */
export const DMS_OFF =
  "Art Factory works in servers only here: use /imagine in a server channel (DMs are turned off by this bot's operator: DISCORD_DMS=off).";

export interface InteractionDeps {
  app: App;
  courier: Courier<MessageTarget, GalleryEntry>;
  transport: Transport;
  /** how long after the command its interaction token is still used @default 14 min */
  tokenLifetimeMs: number;
  /** fetches an attachment option's file (Discord's CDN only, capped) before the command sees it */
  fetchAttachment: AttachmentFetcher;
  /** the clock review links expire by */
  now: () => number;
}

export async function handleInteraction(interaction: Interaction, deps: InteractionDeps): Promise<void> {
  try {
    // Registration keeps the commands out of DMs, but an older global registration may still offer
    // them there, and a button on an old DM gallery stays pressable: refuse here, before anything starts.
    if (!interaction.guildId && !deps.app.config.discord?.dms) {
      if (interaction.isRepliable()) await answerPrivately(interaction, DMS_OFF);
      return;
    }
    if (interaction.isChatInputCommand()) return await command(interaction, deps);
    if (interaction.isButton()) return await button(interaction, deps);
    if (interaction.isModalSubmit()) return await numbersSubmitted(interaction, deps);
    // Other components share our custom id space only by forgery; answer them like unknown buttons.
    if (interaction.isRepliable()) return await answerPrivately(interaction, GONE);
  } catch (error) {
    deps.app.logger.error(
      { err: describeError(error), kind: interaction.type, command: interaction.isCommand() ? interaction.commandName : undefined },
      'discord interaction failed',
    );
    if (interaction.isRepliable()) {
      await answerPrivately(interaction, GENERIC_FAILURE).catch((error: unknown) =>
        deps.app.logger.warn({ err: describeError(error) }, 'discord could not answer a failed interaction'),
      );
    }
  }
}

/**
 * A slash command, run by its registry entry. /imagine validates first (synchronously, so the 3 s
 * deadline is safe; a mistake is answered privately and nothing is posted), then accepts: the reply
 * is deferred publicly and becomes the job's progress message, which delivery edits from then on.
 */
async function command(interaction: ChatInputCommandInteraction, deps: InteractionDeps): Promise<void> {
  const { app, courier } = deps;
  const found = commandNamed(interaction.commandName);
  if (!found) return answerPrivately(interaction, `Unknown command. Try ${commandList()}.`);
  const requester: Requester = {
    tenant: tenantOf(interaction),
    userId: interaction.user.id,
    userName: interaction.user.globalName ?? interaction.user.username,
    platform: 'discord',
    channelId: interaction.channelId,
  };
  let input: RawOptions;
  try {
    input = await optionsOf(interaction, found, app.limits, deps.fetchAttachment);
  } catch (error) {
    if (!isUserError(error)) throw error;
    return answerPrivately(interaction, safeText(error.message));
  }
  let reply: { id: string } | undefined;
  const result = await answer(
    found,
    {
      engine: app.engine,
      limits: app.limits,
      requester,
      input,
      // Manage Server, from the member's permissions as the interaction carries them (none in a DM).
      mayManage: () => Promise.resolve(interaction.memberPermissions?.has(PermissionFlagsBits.ManageGuild) ?? false),
      accept: async () => {
        const deferred = await interaction.deferReply({ withResponse: true });
        reply = deferred.resource?.message ?? (await interaction.fetchReply());
      },
    },
    (error) => app.logger.error({ err: describeError(error), command: found.name }, 'discord command failed'),
  );
  if (result.kind === 'job' && reply) {
    deps.transport.useToken(reply.id, interaction.token, interaction.createdTimestamp + deps.tokenLifetimeMs);
    return courier.follow(result.job, {
      channelId: interaction.channelId,
      messageId: reply.id,
      ...(interaction.guildId ? { guildId: interaction.guildId } : {}),
      ...(interaction.attachmentSizeLimit ? { attachmentSizeLimit: interaction.attachmentSizeLimit } : {}),
    });
  }
  // The public "thinking…" message goes; the reason is for the requester only.
  if (reply) await interaction.deleteReply().catch(() => undefined);
  await answerPrivately(interaction, safeText(result.text));
}

/**
 * The command's options as raw values; an attachment's file is fetched now (the command validates its
 * bytes like any other value). A file that cannot be fetched is refused here, before anything starts.
 */
async function optionsOf(
  interaction: ChatInputCommandInteraction,
  command: Command,
  limits: CommandLimits,
  fetchAttachment: AttachmentFetcher,
): Promise<RawOptions> {
  const declared = command.definition(limits).options;
  const input: RawOptions = {};
  for (const option of interaction.options.data) {
    const file = option.type === ApplicationCommandOptionType.Attachment ? option.attachment : undefined;
    const maxBytes = declared.find((d) => d.name === option.name)?.maxBytes;
    input[option.name] = file ? await fetchAttachment(option.name, file, maxBytes) : option.value;
  }
  return input;
}

/** Cancel, review and contact-sheet buttons; anything else, or a job that is gone, is answered with GONE. */
async function button(interaction: ButtonInteraction, deps: InteractionDeps): Promise<void> {
  const { app, courier } = deps;
  const action = decodeAction(interaction.customId);
  if (!action) return answerPrivately(interaction, GONE);
  const job = await app.engine.get(action.jobId);
  if (!job) return answerPrivately(interaction, GONE);
  const actor = actorOf(interaction);
  if (!mayAct(job, actor, tenantOf(interaction))) return answerPrivately(interaction, REFUSAL);

  if (action.kind === 'cancel') {
    // Acknowledge first: cancelling waits for the store; delivery shows "Canceled" when it lands.
    await interaction.deferUpdate();
    try {
      await app.engine.cancel(job.id, reviewer(interaction));
    } catch (error) {
      if (!isUserError(error)) throw error;
      await answerPrivately(interaction, error.message);
    }
    return;
  }

  if (action.kind === 'retry' || action.kind === 'reroll' || action.kind === 'upscale') {
    // Acknowledge first: reopening waits for the store; the progress message shows the job running again.
    await interaction.deferUpdate();
    try {
      const reopened =
        action.kind === 'retry'
          ? await app.engine.retryFailed(job.id, reviewer(interaction))
          : action.kind === 'upscale'
            ? await app.engine.upscaleApproved(job.id, reviewer(interaction))
            : await app.engine.reroll(job.id, action.image, reviewer(interaction));
      await courier.rerun(reopened);
    } catch (error) {
      if (!isUserError(error)) throw error;
      await answerPrivately(interaction, safeText(error.message));
    }
    return;
  }

  if (action.kind === 'bulk' || action.kind === 'numbers' || action.kind === 'browser') return sheetButton(interaction, action, job, deps, actor);

  // Review buttons live on gallery messages only, and a gallery exists only once the job is finished.
  const pages = courier.factsOf(job).pages.filter((page) => page !== undefined);
  // A gallery from before its pages were recorded: any finished job's message may be one. A contact sheet has no per-image buttons.
  const onGallery =
    pages.length > 0 ? pages.some((page) => page.messageId === interaction.message.id && !page.sheet) : isJobFinished(job);
  if (!onGallery || !job.images.some((image) => image.index === action.image)) return answerPrivately(interaction, GONE);
  const updated = await app.engine.review(job.id, action.image, action.status, reviewer(interaction));
  const layout = layoutFor(updated, pages, interaction.message.id, action.image);
  // update() answers with a fresh token: it works on galleries of any age, unlike an edit.
  const body = galleryBody(updated, layout, gallerySummary(updated), layout.skipped);
  // The summary on the progress message follows through the engine's `reviewed` (Delivery routes it to the courier).
  await interaction.update({ content: body.content, components: body.components, allowedMentions: NO_MENTIONS, flags: NO_EMBEDS });
}
