/**
 * Slash commands and buttons. Every interaction gets an answer: a validation error or a refusal is
 * ephemeral, an unexpected error is logged (without tokens) and answered with one generic line —
 * never the silent "This interaction failed".
 */
import {
  MessageFlags,
  PermissionFlagsBits,
  type ButtonInteraction,
  type ChatInputCommandInteraction,
  type Interaction,
  type RepliableInteraction,
} from 'discord.js';
import { parseImagine } from '../../../commands/imagine.js';
import { run as runJobs } from '../../../commands/jobs.js';
import type { App } from '../../app.js';
import { decodeAction, GONE, mayAct, REFUSAL } from '../../core/actions.js';
import { isJobFinished } from '../../core/engine.js';
import { isUserError } from '../../core/errors.js';
import type { Requester } from '../../core/types.js';
import { gallerySummary } from '../../core/views.js';
import { layoutFor } from './gallery.js';
import type { ProgressRelay } from './progress.js';
import { galleryBody, NO_EMBEDS, NO_MENTIONS, safe } from './render.js';
import { describeError, factsOf, type DiscordFacts } from './transport.js';

export const GENERIC_FAILURE = 'Something went wrong on our side; the details are in the log.';
/** The answer to anything sent from a DM while DISCORD_DMS is off (an old global registration still offers it). */
export const DMS_OFF =
  "Art Factory works in servers only here: use /imagine in a server channel (DMs are turned off by this bot's operator: DISCORD_DMS=off).";

export interface InteractionDeps {
  app: App;
  relay: ProgressRelay;
  /** how long after the command its interaction token is still used @default 14 min */
  tokenLifetimeMs: number;
}

/** Guild, or the user's own DMs: the unit of fairness and of who may review. */
function tenantOf(interaction: Interaction): string {
  return interaction.guildId ?? `dm:${interaction.user.id}`;
}

function reviewer(interaction: Interaction): { id: string; name: string } {
  return { id: interaction.user.id, name: interaction.user.globalName ?? interaction.user.username };
}

/**
 * Answers privately, whatever has been sent already (reply, or follow-up after a defer). Answers may
 * echo what the user typed (an option's value, a job's prompt): no link in them may unfurl.
 */
async function answerPrivately(interaction: RepliableInteraction, content: string): Promise<void> {
  const message = { content, flags: MessageFlags.Ephemeral | NO_EMBEDS, allowedMentions: NO_MENTIONS };
  if (interaction.deferred || interaction.replied) await interaction.followUp(message);
  else await interaction.reply(message);
}

export async function handleInteraction(interaction: Interaction, deps: InteractionDeps): Promise<void> {
  try {
    // Registration keeps the commands out of DMs, but an older global registration may still offer
    // them there, and a button on an old DM gallery stays pressable: refuse here, before anything starts.
    if (!interaction.guildId && !deps.app.config.discord?.dms) {
      if (interaction.isRepliable()) await answerPrivately(interaction, DMS_OFF);
      return;
    }
    if (interaction.isChatInputCommand()) {
      if (interaction.commandName === 'imagine') return await imagine(interaction, deps);
      if (interaction.commandName === 'jobs') return await jobs(interaction, deps);
      return await answerPrivately(interaction, 'Unknown command. Try /imagine or /jobs.');
    }
    if (interaction.isButton()) return await button(interaction, deps);
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
 * /imagine: validate (synchronous, so the 3 s deadline is safe), defer publicly — the deferred reply
 * becomes the progress message — submit, and remember the message for the progress relay.
 */
async function imagine(interaction: ChatInputCommandInteraction, deps: InteractionDeps): Promise<void> {
  const { app, relay } = deps;
  const raw = Object.fromEntries(interaction.options.data.map((option) => [option.name, option.value]));
  let request;
  try {
    request = parseImagine(raw, app.limits);
  } catch (error) {
    if (!isUserError(error)) throw error;
    return answerPrivately(interaction, error.message);
  }
  const deferred = await interaction.deferReply({ withResponse: true });
  const messageId = deferred.resource?.message?.id ?? (await interaction.fetchReply()).id;

  const requester: Requester = {
    tenant: tenantOf(interaction),
    userId: interaction.user.id,
    userName: interaction.user.globalName ?? interaction.user.username,
    platform: 'discord',
    channelId: interaction.channelId,
  };
  let job;
  try {
    job = await app.engine.submit(request, requester);
  } catch (error) {
    if (!isUserError(error)) app.logger.error({ err: describeError(error) }, 'discord /imagine could not submit');
    // The public "thinking…" message goes; the reason is for the requester only.
    await interaction.deleteReply().catch(() => undefined);
    return answerPrivately(interaction, isUserError(error) ? error.message : GENERIC_FAILURE);
  }

  const facts: DiscordFacts = {
    channelId: interaction.channelId,
    messageId,
    ...(interaction.guildId ? { guildId: interaction.guildId } : {}),
    tokenExpiresAt: interaction.createdTimestamp + deps.tokenLifetimeMs,
    ...(interaction.attachmentSizeLimit ? { attachmentSizeLimit: interaction.attachmentSizeLimit } : {}),
  };
  await relay.register(job.id, { ...facts, interactionToken: interaction.token });
  try {
    await app.engine.annotate(job.id, 'discord', { ...facts });
  } catch (error) {
    // The job runs and this process still edits the message; only a restart would lose it.
    app.logger.error({ job: job.id, err: describeError(error) }, 'discord message ids could not be saved');
  }
  await relay.catchUp(job.id);
}

async function jobs(interaction: ChatInputCommandInteraction, deps: InteractionDeps): Promise<void> {
  const text = runJobs({
    engine: deps.app.engine,
    requester: { tenant: tenantOf(interaction), userId: interaction.user.id, platform: 'discord' },
  });
  await answerPrivately(interaction, safe(text));
}

/** Cancel and review buttons; anything else, or a job that is gone, is answered with GONE. */
async function button(interaction: ButtonInteraction, deps: InteractionDeps): Promise<void> {
  const { app, relay } = deps;
  const action = decodeAction(interaction.customId);
  if (!action || action.kind === 'page') return answerPrivately(interaction, GONE);
  const job = await app.engine.get(action.jobId);
  if (!job) return answerPrivately(interaction, GONE);
  const actor = {
    userId: interaction.user.id,
    moderator: interaction.memberPermissions?.has(PermissionFlagsBits.ManageMessages) ?? false,
  };
  if (!mayAct(job, actor, tenantOf(interaction))) return answerPrivately(interaction, REFUSAL);

  if (action.kind === 'cancel') {
    // Acknowledge first: cancelling waits for the store; the relay shows "Canceled" when it lands.
    await interaction.deferUpdate();
    try {
      await app.engine.cancel(job.id, reviewer(interaction));
    } catch (error) {
      if (!isUserError(error)) throw error;
      await answerPrivately(interaction, error.message);
    }
    return;
  }

  // Review buttons live on gallery messages only, and a gallery exists only once the job is finished.
  const gallery = factsOf(job.chat)?.gallery;
  const onGallery = gallery ? gallery.some((page) => page.messageId === interaction.message.id) : isJobFinished(job);
  if (!onGallery || !job.images.some((image) => image.index === action.image)) return answerPrivately(interaction, GONE);
  const updated = await app.engine.review(job.id, action.image, action.status, reviewer(interaction));
  const layout = layoutFor(updated, factsOf(updated.chat)?.gallery, interaction.message.id, action.image);
  // update() answers with a fresh token: it works on galleries of any age, unlike an edit.
  const body = galleryBody(updated, layout, gallerySummary(updated), layout.skipped);
  await interaction.update({ content: body.content, components: body.components, allowedMentions: NO_MENTIONS, flags: NO_EMBEDS });
  relay.refreshSummary(updated);
}
