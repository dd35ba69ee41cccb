/**
 * Big jobs on Discord: contact sheets instead of one attachment per image, and their quick actions
 * (Approve / Reject all pending, Review by number in a modal, Review in browser by a signed link) —
 * the real discord.js client against the fake, the local provider, files and manifest on disk.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { setTimeout } from 'node:timers/promises';
import { once } from 'node:events';
import {
  ActionRowBuilder,
  Client,
  Events,
  GatewayIntentBits,
  LabelBuilder,
  MessageFlags,
  ModalBuilder,
  Routes,
  TextInputBuilder,
  TextInputStyle,
  type Interaction,
} from 'discord.js';
import { describe, expect, it } from 'vitest';
import { encodeAction, GONE, REFUSAL } from '../../../src/core/actions.js';
import { NO_NUMBERS } from '../../../src/core/image-numbers.js';
import type { OutputImage } from '../../../src/core/provider.js';
import type { Job } from '../../../src/core/types.js';
import { LocalProvider } from '../../../src/providers/local.js';
import { verifyReviewToken } from '../../../src/web/review-token.js';
import { MessageFlag, startFakeDiscord, type FakeDiscord, type FakeMessage } from '../../fakes/discord.js';
import { filesIn, onCleanup, readManifest } from '../../helpers.js';
import { readContactSheet } from '../../sheet-reader.js';
import { answerOf, customIds, jobIdIn, jobIdOf, MANAGE_MESSAGES, PRIVATE, progressMessageOf, startBot, TOKEN, waitForContent, type Bot } from './harness.js';

const SECRET = 'a-review-secret-that-is-long-enough-0123456789';
const STRANGER = { id: '222222222222222222', username: 'stranger' };
const MODERATOR = { id: '333333333333333333', username: 'mod' };
const MODERATOR_PERMISSIONS = (BigInt(MANAGE_MESSAGES) | (1n << 10n)).toString();

function sheetMessages(fake: FakeDiscord, jobId: string): FakeMessage[] {
  return fake.messages().filter((m) => m.content.startsWith('**Contact sheet') && jobIdIn(m) === jobId);
}

/** Runs /imagine for `count` images and waits for its `sheets` contact sheets. */
async function bigJob(bot: Bot, count: number, sheets: number): Promise<{ jobId: string; progressId: string; sheets: FakeMessage[] }> {
  const sent = bot.fake.sendCommand({ name: 'imagine', options: { prompt: 'a catalog of chairs', count } });
  const progressId = await progressMessageOf(bot.fake, sent.id);
  const jobId = await jobIdOf(bot.fake, progressId);
  const posted = await bot.fake.waitFor((f) => (sheetMessages(f, jobId).length === sheets ? sheetMessages(f, jobId) : undefined), {
    timeoutMs: 30_000,
    description: `${sheets} contact sheets`,
  });
  // Delivered in full: every sheet recorded as the job's (a button on one not yet recorded is answered GONE).
  for (let delivered = false; !delivered; await setTimeout(10)) {
    const job = await bot.app.engine.get(jobId);
    delivered = (job?.chat?.['discord'] as { delivered?: boolean } | undefined)?.delivered === true;
  }
  return { jobId, progressId, sheets: posted };
}

const statuses = (job: Readonly<Job> | undefined) => Object.fromEntries((job?.images ?? []).map((image) => [image.index, image.review.status]));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const files = (numbers: number[]) => numbers.map((n) => `${String(n).padStart(3, '0')}.png`);

/** The private line a deferred modal submission ends with. */
async function privateAnswer(fake: FakeDiscord, interactionId: string): Promise<FakeMessage> {
  return fake.waitFor(
    (f) => {
      const interaction = f.interaction(interactionId);
      const id = interaction?.acknowledged ? interaction.originalMessageId : undefined;
      const message = id ? f.message(id) : undefined;
      return message && (message.flags & MessageFlag.Ephemeral) !== 0 && message.content !== '' ? message : undefined;
    },
    { description: 'the private answer to the modal' },
  );
}

/** Opens "Review by number" on `sheet` and submits it with `values`. */
async function byNumber(fake: FakeDiscord, jobId: string, sheet: FakeMessage, values: Record<string, string>) {
  const press = fake.pressButton({ customId: encodeAction({ kind: 'numbers', jobId }), messageId: sheet.id });
  const [shown] = await answerOf(fake, press.id);
  expect(shown?.type).toBe(9);
  return fake.submitModal({ interactionId: press.id, values });
}

describe('Discord contact sheets', () => {
  it('posts a 60-image job as 3 contact sheets (25, 25, 10 numbered tiles) and no per-image attachments', async () => {
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '20' } });
    const { jobId, sheets } = await bigJob(bot, 60, 3);

    const read = await Promise.all(sheets.map((m) => readContactSheet(bot.fake.attachmentBytes(m.attachments[0]!.id)!)));
    expect(read.map((r) => r.tiles)).toEqual([25, 25, 10]);
    expect(read.map((r) => r.numbers)).toEqual([range(1, 25), range(26, 50), range(51, 60)]);
    expect(sheets.map((m) => m.attachments.map((a) => [a.filename, a.content_type]))).toEqual([
      [['sheet-1.jpg', 'image/jpeg']],
      [['sheet-2.jpg', 'image/jpeg']],
      [['sheet-3.jpg', 'image/jpeg']],
    ]);
    expect(sheets.map((m) => m.content.split('\n')[0])).toEqual([
      '**Contact sheet 1/3 · images 1-25** · a catalog of chairs',
      '**Contact sheet 2/3 · images 26-50** · a catalog of chairs',
      '**Contact sheet 3/3 · images 51-60** · a catalog of chairs',
    ]);
    expect(sheets[2]!.content).toContain('✅ 0 approved · ❌ 0 rejected · ⏳ 10 pending');
    // Only the sheets carry files: nothing of the job was posted image by image.
    const uploads = bot.fake.messages().flatMap((m) => m.attachments);
    expect(uploads).toHaveLength(3);
    expect(bot.fake.messages().filter((m) => m.content.startsWith('**Gallery'))).toEqual([]);
    // Without PUBLIC_URL and REVIEW_SECRET there is no browser button.
    expect(customIds(sheets[0])).toEqual([
      encodeAction({ kind: 'bulk', jobId, status: 'approved', sheet: 1 }),
      encodeAction({ kind: 'bulk', jobId, status: 'rejected', sheet: 1 }),
      encodeAction({ kind: 'numbers', jobId }),
    ]);
    if (process.env.SCREENSHOTS === '1') {
      await mkdir('docs/images', { recursive: true });
      await writeFile('docs/images/contact-sheet.jpg', bot.fake.attachmentBytes(sheets[0]!.attachments[0]!.id)!);
    }
  });

  it('posts a sheet holding an image the provider flagged as a spoiler', async () => {
    class FlaggingProvider extends LocalProvider {
      override async result(requestId: string): Promise<OutputImage[]> {
        return (await super.result(requestId)).map((image, i) => ({ ...image, nsfw: i === 1 }));
      }
    }
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '2' }, providers: { local: new FlaggingProvider() } });
    const { sheets } = await bigJob(bot, 3, 1);
    expect(sheets[0]!.attachments.map((a) => a.filename)).toEqual(['SPOILER_sheet-1.jpg']);
  });

  it('"Approve all pending" on sheet 1 approves exactly images 1-25, moves their files and re-renders the sheet', async () => {
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '20' } });
    const { fake, app } = bot;
    const { jobId, progressId, sheets } = await bigJob(bot, 30, 2);

    const press = fake.pressButton({ customId: encodeAction({ kind: 'bulk', jobId, status: 'approved', sheet: 1 }), messageId: sheets[0]!.id });
    expect((await answerOf(fake, press.id))[0]?.type).toBe(6);
    const sheet1 = await waitForContent(fake, sheets[0]!.id, '✅ 25 approved · ❌ 0 rejected · ⏳ 0 pending');
    expect(sheet1.content).toContain('✅ 1-25');
    expect(sheet1.attachments.map((a) => a.filename)).toEqual(['sheet-1.jpg']);
    // Nothing left to approve on that sheet: its bulk buttons are greyed out.
    const row = sheet1.components[0]!['components'] as { disabled?: boolean }[];
    expect(row.map((button) => button.disabled ?? false)).toEqual([true, true, false]);

    expect(await filesIn(app, jobId, 'approved')).toEqual(files(range(1, 25)));
    expect(await filesIn(app, jobId, 'pending-review')).toEqual(files(range(26, 30)));
    const manifest = await readManifest(app, jobId);
    expect(manifest.images.filter((i) => i.review.status === 'approved').map((i) => i.index)).toEqual(range(1, 25));
    expect(manifest.images[0]!.review.reviewedBy).toBe('Tester');
    await waitForContent(fake, progressId, '✅ 25 approved · ❌ 0 rejected · ⏳ 5 pending');
    expect(fake.message(sheets[1]!.id)?.content).toContain('⏳ 5 pending');

    // Pressed again (a stale render): answered privately, nothing changes.
    const again = fake.pressButton({ customId: encodeAction({ kind: 'bulk', jobId, status: 'rejected', sheet: 1 }), messageId: sheets[0]!.id });
    expect((await answerOf(fake, again.id))[0]?.data).toMatchObject({ content: 'Every image on sheet 1 is reviewed already.', flags: PRIVATE });
    expect(await filesIn(app, jobId, 'rejected')).toEqual([]);
    // A sheet button pointing at another sheet than the message it is on is not ours.
    const crossed = fake.pressButton({ customId: encodeAction({ kind: 'bulk', jobId, status: 'rejected', sheet: 2 }), messageId: sheets[0]!.id });
    expect((await answerOf(fake, crossed.id))[0]?.data).toMatchObject({ content: GONE, flags: PRIVATE });
    expect(await filesIn(app, jobId, 'rejected')).toEqual([]);
  });

  it('refuses "Approve all pending" to a member without review rights', async () => {
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '2' } });
    const { jobId, sheets } = await bigJob(bot, 3, 1);
    const press = bot.fake.pressButton({
      customId: encodeAction({ kind: 'bulk', jobId, status: 'rejected', sheet: 1 }),
      messageId: sheets[0]!.id,
      user: STRANGER,
    });
    expect((await answerOf(bot.fake, press.id))[0]?.data).toMatchObject({ content: REFUSAL, flags: PRIVATE });
    expect(statuses(await bot.app.engine.get(jobId))).toEqual({ 1: 'pending', 2: 'pending', 3: 'pending' });
    expect(await bot.fake.waitFor((f) => f.message(sheets[0]!.id))).toMatchObject({ content: expect.stringContaining('⏳ 3 pending') });
  });

  it('"Review by number" approves exactly 1-5 and 8, re-renders the sheets, and refuses bad input changing nothing', async () => {
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '20' } });
    const { fake, app } = bot;
    const { jobId, progressId, sheets } = await bigJob(bot, 30, 2);

    const press = fake.pressButton({ customId: encodeAction({ kind: 'numbers', jobId }), messageId: sheets[0]!.id });
    const [shown] = await answerOf(fake, press.id);
    expect(shown?.type).toBe(9);
    expect(shown?.data).toMatchObject({ custom_id: encodeAction({ kind: 'numbers', jobId }), title: 'Review by number (images 1-30)' });
    const submit = fake.submitModal({ interactionId: press.id, values: { approve: '1-5, 8' } });
    expect((await privateAnswer(fake, submit.id)).content).toBe('Approved 6 images (1-5, 8).');
    expect(fake.interaction(submit.id)?.callbacks[0]).toMatchObject({ type: 5, data: { flags: MessageFlag.Ephemeral } });

    const approved = [1, 2, 3, 4, 5, 8];
    expect(await filesIn(app, jobId, 'approved')).toEqual(files(approved));
    const manifest = await readManifest(app, jobId);
    expect(manifest.images.filter((i) => i.review.status !== 'pending').map((i) => i.index)).toEqual(approved);
    // The sheet holding them is re-rendered (with the bot token: the review came from a modal, not its message).
    await waitForContent(fake, sheets[0]!.id, '✅ 6 approved · ❌ 0 rejected · ⏳ 19 pending');
    expect(fake.message(sheets[0]!.id)?.content).toContain('✅ 1-5, 8');
    await waitForContent(fake, progressId, '✅ 6 approved · ❌ 0 rejected · ⏳ 24 pending');

    const before = statuses(await app.engine.get(jobId));
    const refused: [Record<string, string>, string | RegExp][] = [
      [{ approve: '3-x' }, 'Approve: expected image numbers from 1 to 30 such as 1-5, 8, got "3-x"'],
      [{ reject: '31' }, 'Reject: expected image numbers from 1 to 30 such as 1-5, 8; this job has no image 31'],
      [{ approve: '9, 10', reject: '10-12' }, 'Image 10 is under both Approve and Reject: choose one.'],
      [{ approve: ' ', reject: '' }, NO_NUMBERS],
    ];
    for (const [values, line] of refused) {
      const bad = await byNumber(fake, jobId, sheets[0]!, values);
      const [answer] = await answerOf(fake, bad.id);
      expect(answer?.type, JSON.stringify(values)).toBe(4);
      expect(answer?.data, JSON.stringify(values)).toMatchObject({ content: line, flags: PRIVATE });
      expect(String(answer?.data?.['content'])).not.toContain('\n');
    }
    expect(statuses(await app.engine.get(jobId))).toEqual(before);
    expect(await filesIn(app, jobId, 'approved')).toEqual(files(approved));
    expect(await filesIn(app, jobId, 'rejected')).toEqual([]);

    // Both fields at once, across two sheets: each sheet holding one of them is re-rendered.
    const both = await byNumber(fake, jobId, sheets[1]!, { approve: '9', reject: '25-27' });
    expect((await privateAnswer(fake, both.id)).content).toBe('Approved 1 image (9). Rejected 3 images (25-27).');
    expect(await filesIn(app, jobId, 'rejected')).toEqual(files([25, 26, 27]));
    await waitForContent(fake, sheets[0]!.id, '✅ 7 approved · ❌ 1 rejected · ⏳ 17 pending');
    await waitForContent(fake, sheets[1]!.id, '✅ 0 approved · ❌ 2 rejected · ⏳ 3 pending');
  });

  it('checks review rights again when the modal is submitted, and never shows it to a stranger', async () => {
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '2' } });
    const { fake, app } = bot;
    const { jobId, sheets } = await bigJob(bot, 3, 1);

    const stranger = fake.pressButton({ customId: encodeAction({ kind: 'numbers', jobId }), messageId: sheets[0]!.id, user: STRANGER });
    const [refusal] = await answerOf(fake, stranger.id);
    expect(refusal?.type).toBe(4);
    expect(refusal?.data).toMatchObject({ content: REFUSAL, flags: PRIVATE });

    // A moderator opens it, then loses Manage Messages before submitting.
    const opened = fake.pressButton({
      customId: encodeAction({ kind: 'numbers', jobId }),
      messageId: sheets[0]!.id,
      user: MODERATOR,
      memberPermissions: MODERATOR_PERMISSIONS,
    });
    expect((await answerOf(fake, opened.id))[0]?.type).toBe(9);
    const submitted = fake.submitModal({ interactionId: opened.id, values: { reject: '1-3' }, memberPermissions: (1n << 10n).toString() });
    expect((await answerOf(fake, submitted.id))[0]?.data).toMatchObject({ content: REFUSAL, flags: PRIVATE });
    expect(statuses(await app.engine.get(jobId))).toEqual({ 1: 'pending', 2: 'pending', 3: 'pending' });
    expect(await filesIn(app, jobId, 'rejected')).toEqual([]);
  });

  it('re-renders the sheet when images are reviewed elsewhere (the review page, the CLI)', async () => {
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '20' } });
    const { fake, app } = bot;
    const { jobId, sheets } = await bigJob(bot, 30, 2);
    const from = fake.calls.length;

    await app.engine.reviewMany(jobId, [27, 29], 'rejected', { id: 'web', name: 'Page' });
    const edit = await fake.waitForCall(`PATCH /channels/:c/messages/${sheets[1]!.id}`, { from });
    expect(edit.status).toBe(200);
    const sheet2 = await waitForContent(fake, sheets[1]!.id, '✅ 0 approved · ❌ 2 rejected · ⏳ 3 pending');
    expect(sheet2.content).toContain('❌ 27, 29');
    // The sheet image stays; the other sheet holds none of those images and is left alone.
    expect(sheet2.attachments.map((a) => a.filename)).toEqual(['sheet-2.jpg']);
    expect(fake.callsTo(`PATCH /channels/:c/messages/${sheets[0]!.id}`).filter((c) => c.index >= from)).toEqual([]);
  });

  it('"Review in browser" gives the requester a private signed link that verifies, and a stranger only the refusal', async () => {
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '2', PUBLIC_URL: 'https://bot.example.test/', REVIEW_SECRET: SECRET } });
    const { fake } = bot;
    const { jobId, sheets } = await bigJob(bot, 3, 1);
    const browser = encodeAction({ kind: 'browser', jobId });
    expect(customIds(sheets[0])).toContain(browser);

    const linkOf = async (press: { id: string }) => {
      const [answer] = await answerOf(fake, press.id);
      expect(answer?.type).toBe(4);
      expect(answer?.data).toMatchObject({ flags: PRIVATE });
      return String(answer?.data?.['content']);
    };
    const before = Date.now();
    const mine = await linkOf(fake.pressButton({ customId: browser, messageId: sheets[0]!.id }));
    const url = /<(https:\/\/bot\.example\.test\/review\/[^>]+)>/.exec(mine)?.[1];
    expect(url, mine).toBeDefined();
    const parsed = new URL(url!);
    expect(parsed.pathname).toBe(`/review/${jobId}`);
    const claims = verifyReviewToken(SECRET, parsed.searchParams.get('t')!, jobId, Date.now());
    expect(claims).toMatchObject({ job: jobId, tenant: fake.defaultGuildId, userId: fake.defaultUser.id, moderator: false });
    const exp = (claims as { exp: number }).exp;
    expect(exp).toBeGreaterThanOrEqual(before + 24 * 3_600_000);
    expect(mine).toContain(`<t:${Math.floor(exp / 1000)}:f>`);
    // Signed with this secret only, for this job only.
    expect(verifyReviewToken(`${SECRET}x`, parsed.searchParams.get('t')!, jobId, Date.now())).toHaveProperty('refused');
    expect(verifyReviewToken(SECRET, parsed.searchParams.get('t')!, '20200101-deadbeef', Date.now())).toHaveProperty('refused');

    const refused = await linkOf(fake.pressButton({ customId: browser, messageId: sheets[0]!.id, user: STRANGER }));
    expect(refused).toBe(REFUSAL);
    expect(refused).not.toMatch(/https?:|review\//);

    const moderator = await linkOf(fake.pressButton({ customId: browser, messageId: sheets[0]!.id, user: MODERATOR, memberPermissions: MODERATOR_PERMISSIONS }));
    const token = new URL(/<([^>]+)>/.exec(moderator)![1]!).searchParams.get('t')!;
    expect(verifyReviewToken(SECRET, token, jobId, Date.now())).toMatchObject({ userId: MODERATOR.id, moderator: true });
  });

  it('answers a browser button without PUBLIC_URL and REVIEW_SECRET with one line and no link', async () => {
    const bot = await startBot({ env: { GALLERY_INLINE_MAX: '2' } });
    const { jobId, sheets } = await bigJob(bot, 3, 1);
    expect(customIds(sheets[0])).not.toContain(encodeAction({ kind: 'browser', jobId }));
    const press = bot.fake.pressButton({ customId: encodeAction({ kind: 'browser', jobId }), messageId: sheets[0]!.id });
    expect((await answerOf(bot.fake, press.id))[0]?.data).toMatchObject({ content: 'The review page is not available on this bot.', flags: PRIVATE });
  });
});

describe('fake Discord modals', () => {
  /** A bare discord.js client against the fake: nothing answers for it, the test does. */
  async function bareClient(): Promise<{ fake: FakeDiscord; client: Client }> {
    const fake = await startFakeDiscord({ token: TOKEN });
    onCleanup(() => fake.close());
    const client = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: fake.apiUrl } });
    onCleanup(() => client.destroy());
    const ready = once(client, Events.ClientReady);
    await client.login(TOKEN);
    await ready;
    return { fake, client };
  }
  const next = (client: Client) => once(client, Events.InteractionCreate).then(([interaction]) => interaction as Interaction);

  it('checks a modal as Discord does, and submits it as the client would (in labels and in action rows)', async () => {
    const { fake, client } = await bareClient();
    const command = next(client);
    const sent = fake.sendCommand({ name: 'anything' });
    const opener = await command;
    if (!opener.isChatInputCommand()) throw new Error('expected a command');

    const input = { type: 4, custom_id: 'a', style: 1 };
    const tooLong = { type: 9, data: { custom_id: 'm', title: 'x'.repeat(46), components: [{ type: 18, label: 'A', component: input }] } };
    await expect(client.rest.post(Routes.interactionCallback(opener.id, opener.token), { body: tooLong, auth: false })).rejects.toMatchObject({ code: 50035 });
    const unlabelled = { type: 9, data: { custom_id: 'm', title: 'M', components: [{ type: 1, components: [input] }] } };
    await expect(client.rest.post(Routes.interactionCallback(opener.id, opener.token), { body: unlabelled, auth: false })).rejects.toMatchObject({ code: 50035 });
    await opener.showModal(
      new ModalBuilder()
        .setCustomId('m')
        .setTitle('M')
        .addLabelComponents(new LabelBuilder().setLabel('A').setTextInputComponent(new TextInputBuilder().setCustomId('a').setStyle(TextInputStyle.Short)))
        .addActionRowComponents(
          new ActionRowBuilder<TextInputBuilder>().addComponents(
            new TextInputBuilder().setCustomId('b').setLabel('B').setStyle(TextInputStyle.Paragraph).setRequired(false).setMaxLength(5),
          ),
        ),
    );
    expect(fake.interaction(sent.id)?.callbacks.map((c) => c.status)).toEqual([400, 400, 204]);

    expect(() => fake.submitModal({ interactionId: sent.id, values: { b: 'x' } })).toThrow(/required field "a" empty/);
    expect(() => fake.submitModal({ interactionId: sent.id, values: { a: 'x', b: '123456' } })).toThrow(/6 characters/);
    expect(() => fake.submitModal({ interactionId: sent.id, values: { a: 'x', c: 'y' } })).toThrow(/no text input "c"/);
    const submission = next(client);
    const submitted = fake.submitModal({ interactionId: sent.id, values: { a: 'first' } });
    const modal = await submission;
    if (!modal.isModalSubmit()) throw new Error('expected a modal submission');
    expect([modal.customId, modal.fields.getTextInputValue('a'), modal.fields.getTextInputValue('b'), modal.isFromMessage()]).toEqual(['m', 'first', '', false]);
    // A submission is answered by a message, never by another modal, nor (opened from a command) by an update.
    const another = { type: 9, data: { custom_id: 'n', title: 'N', components: [{ type: 18, label: 'A', component: input }] } };
    await expect(client.rest.post(Routes.interactionCallback(modal.id, modal.token), { body: another, auth: false })).rejects.toMatchObject({ code: 50035 });
    await expect(modal.deferUpdate()).rejects.toMatchObject({ code: 50035 });
    await modal.reply({ content: 'thanks', flags: MessageFlags.Ephemeral });
    expect(fake.interaction(submitted.id)?.callbacks.map((c) => [c.type, c.status])).toEqual([
      [9, 400],
      [6, 400],
      [4, 204],
    ]);
  });
});
