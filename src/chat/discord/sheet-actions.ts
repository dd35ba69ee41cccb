/**
 * A contact sheet's quick actions (render.ts sheetBody): Approve / Reject all pending on one sheet,
 * Review by number (a modal, then its submission), Review in browser (a signed link, privately).
 * Every review goes through `engine.reviewMany`, whose `reviewed` event brings the progress summary and
 * every sheet holding those images up to date (delivery → platform.ts gallery.edit).
 */
import {
  LabelBuilder,
  MessageFlags,
  ModalBuilder,
  TextInputBuilder,
  TextInputStyle,
  type ButtonInteraction,
  type ModalSubmitInteraction,
} from 'discord.js';
import { decodeAction, encodeAction, GONE, mayAct, REFUSAL, type Action, type Actor } from '../../core/actions.js';
import { isUserError } from '../../core/errors.js';
import { applyNumberedReviews, IMAGE_NUMBERS_MAX_CHARS, NUMBER_FIELD_LABELS, readReviewNumbers, type NumberedReview } from '../../core/image-numbers.js';
import type { Job } from '../../core/types.js';
import { sheetView } from '../../core/views.js';
import { reviewLink } from '../../web/review-token.js';
import type { InteractionDeps } from './interactions.js';
import { NO_EMBEDS, NO_MENTIONS, safeText, sheetBody } from './render.js';
import { actorOf, answerPrivately, reviewer, tenantOf } from './reply.js';

/** The custom ids of the modal's two fields. */
export const NUMBER_FIELDS = { approved: 'approve', rejected: 'reject' } as const;

type SheetAction = Extract<Action, { kind: 'bulk' | 'numbers' | 'browser' }>;

/** A sheet's button, pressed by someone `mayAct` already let through. */
export async function sheetButton(interaction: ButtonInteraction, action: SheetAction, job: Job, deps: InteractionDeps, actor: Actor): Promise<void> {
  const pages = deps.courier.factsOf(job).pages;
  // Sheet buttons live on sheet messages only; after a rerun the old sheets are no longer the job's.
  const sheet = pages.findIndex((page) => page?.sheet === true && page.messageId === interaction.message.id);
  if (sheet < 0) return answerPrivately(interaction, GONE);
  if (action.kind === 'numbers') return interaction.showModal(numbersModal(job));
  if (action.kind === 'browser') return offerLink(interaction, job, deps, actor);

  if (action.sheet !== sheet + 1) return answerPrivately(interaction, GONE);
  const layout = { page: action.sheet, pages: pages.length, images: pages[sheet]!.images };
  const pending = sheetView(job, layout.images, layout.page, layout.pages).pending;
  if (pending.length === 0) return answerPrivately(interaction, `Every image on sheet ${action.sheet} is reviewed already.`);
  // Acknowledged first: moving 25 files (a bucket's copies) may take longer than Discord's 3 s.
  await interaction.deferUpdate();
  try {
    const updated = await deps.app.engine.reviewMany(job.id, pending, action.status, reviewer(interaction));
    const body = sheetBody(updated, layout, deps.app.config.review !== undefined);
    await interaction.editReply({ content: body.content, components: body.components, allowedMentions: NO_MENTIONS });
  } catch (error) {
    if (!isUserError(error)) throw error;
    await answerPrivately(interaction, safeText(error.message));
  }
}

/** "Review by number": two optional fields, each taking `1-5, 8`; its submission carries the button's id. */
function numbersModal(job: Job): ModalBuilder {
  const field = (id: string, label: string, description: string) =>
    new LabelBuilder()
      .setLabel(label)
      .setDescription(description)
      .setTextInputComponent(
        new TextInputBuilder()
          .setCustomId(id)
          .setStyle(TextInputStyle.Short)
          .setRequired(false)
          .setMaxLength(IMAGE_NUMBERS_MAX_CHARS)
          .setPlaceholder('1-5, 8, 12'),
      );
  return new ModalBuilder()
    .setCustomId(encodeAction({ kind: 'numbers', jobId: job.id }))
    .setTitle(`Review by number (images 1-${job.request.count})`)
    .addLabelComponents(
      field(NUMBER_FIELDS.approved, NUMBER_FIELD_LABELS.approve, 'Image numbers to approve; leave empty for none'),
      field(NUMBER_FIELDS.rejected, NUMBER_FIELD_LABELS.reject, 'Image numbers to reject; leave empty for none'),
    );
}

/** A signed link to the review page, for this member only (it reviews as them), with when it stops working. */
async function offerLink(interaction: ButtonInteraction, job: Job, deps: InteractionDeps, actor: Actor): Promise<void> {
  const config = deps.app.config.review;
  // No PUBLIC_URL or REVIEW_SECRET: the button is never shown, so this one is forged or from an older config.
  if (!config) return answerPrivately(interaction, 'The review page is not available on this bot.');
  const who = reviewer(interaction);
  const link = reviewLink(config, job.id, { tenant: tenantOf(interaction), userId: who.id, name: who.name, moderator: actor.moderator }, deps.now());
  const at = Math.floor(link.expiresAt / 1000);
  // Our own text around a URL we built: not escaped (safe() would break the link); <…> and SuppressEmbeds keep it from unfurling.
  await answerPrivately(
    interaction,
    `Review job ${job.id} in your browser: <${link.url}>\nThis link is yours alone (it reviews as you) and works until <t:${at}:f> (<t:${at}:R>).`,
  );
}

/**
 * The modal's submission: who may act is checked again (a submission is an interaction of its own),
 * then both fields are read in full before anything moves — bad input, a number that is not one of the
 * job's images, or a number under both fields is answered in one line and changes nothing.
 */
export async function numbersSubmitted(interaction: ModalSubmitInteraction, deps: InteractionDeps): Promise<void> {
  const action = decodeAction(interaction.customId);
  if (action?.kind !== 'numbers') return answerPrivately(interaction, GONE);
  const job = await deps.app.engine.get(action.jobId);
  if (!job) return answerPrivately(interaction, GONE);
  if (!mayAct(job, actorOf(interaction), tenantOf(interaction))) return answerPrivately(interaction, REFUSAL);
  const approve = fieldOf(interaction, NUMBER_FIELDS.approved);
  const reject = fieldOf(interaction, NUMBER_FIELDS.rejected);
  if (approve === undefined || reject === undefined) return answerPrivately(interaction, GONE);

  let wanted: NumberedReview[];
  try {
    wanted = readReviewNumbers(job, { approve, reject });
  } catch (error) {
    if (!isUserError(error)) throw error;
    return answerPrivately(interaction, safeText(error.message));
  }
  await interaction.deferReply({ flags: MessageFlags.Ephemeral });
  const done = await applyNumberedReviews(deps.app.engine, job.id, wanted, reviewer(interaction));
  await interaction.editReply({ content: safeText(done), allowedMentions: NO_MENTIONS, flags: NO_EMBEDS });
}

/** A text field of the submission; undefined when it is missing (not our modal's shape). */
function fieldOf(interaction: ModalSubmitInteraction, id: string): string | undefined {
  try {
    return interaction.fields.getTextInputValue(id);
  } catch {
    return undefined;
  }
}
