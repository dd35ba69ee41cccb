/**
 * Nothing the bot sends may ping anyone: Discord parses mentions in every message it creates or
 * edits, with its defaults (everyone, roles, users) unless that very request says otherwise — an
 * earlier edit's `allowed_mentions` does not carry over. So every create, edit and interaction
 * response must carry `allowed_mentions: { parse: [] }`, the review re-render included.
 */
import { describe, expect, it } from 'vitest';
import { encodeAction } from '../../../src/core/actions.js';
import type { RecordedCall } from '../../fakes/discord.js';
import { answerOf, jobIdOf, messageCalls, progressMessageOf, startBot, waitForContent, waitForGallery } from './harness.js';

const NO_MENTIONS = { parse: [] };
/** Pings of every kind, so a dropped allowed_mentions would notify someone. */
const PROMPT = '@everyone @here <@&123456789012345678> <@123456789012345678> look';
const STRANGER = { id: '222222222222222222', username: 'stranger' };

/** The message fields of a create, edit or interaction response (the callback's `data`). */
function messageBody(call: RecordedCall): Record<string, unknown> {
  const body = (call.body ?? {}) as Record<string, unknown>;
  return /\/callback$/.test(call.path) ? ((body['data'] as Record<string, unknown> | undefined) ?? {}) : body;
}

describe('Discord allowed_mentions', () => {
  it('goes with every message the bot creates or edits and every interaction response, the review re-render included', async () => {
    const { fake } = await startBot();
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: PROMPT, count: 2 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    await waitForContent(fake, progressId, 'Done: 2 images');
    const [page] = await waitForGallery(fake, jobId, 2);

    // The review re-render: interaction.update(), an interaction response of type 7.
    const review = fake.pressButton({ customId: encodeAction({ kind: 'review', jobId, image: 1, status: 'approved' }), messageId: page!.id });
    const [update] = await answerOf(fake, review.id);
    expect(update?.type).toBe(7);
    expect([200, 204]).toContain(update?.status);
    expect(update?.data?.['allowed_mentions']).toEqual(NO_MENTIONS);
    await waitForContent(fake, progressId, '✅ 1 approved');
    // A private refusal (type 4) and a private answer to a command.
    const refused = fake.pressButton({
      customId: encodeAction({ kind: 'review', jobId, image: 2, status: 'rejected' }),
      messageId: page!.id,
      user: STRANGER,
    });
    expect((await answerOf(fake, refused.id))[0]?.data?.['allowed_mentions']).toEqual(NO_MENTIONS);
    const invalid = fake.sendCommand({ name: 'imagine', options: { prompt: PROMPT, count: 0 } });
    expect((await answerOf(fake, invalid.id))[0]?.data?.['allowed_mentions']).toEqual(NO_MENTIONS);

    const calls = messageCalls(fake).filter((call) => {
      const body = messageBody(call);
      return 'content' in body || 'components' in body || 'embeds' in body;
    });
    // Progress edits, the gallery post, the summary edit and the three interaction responses at least.
    expect(calls.length).toBeGreaterThanOrEqual(6);
    for (const call of calls) expect(messageBody(call)['allowed_mentions'], `${call.method} ${call.path}`).toEqual(NO_MENTIONS);
    expect(calls.every((call) => call.status !== undefined && call.status < 300)).toBe(true);

    // What Discord holds: the last create or edit of each message (its own request's allowed_mentions).
    for (const message of fake.messages()) {
      if (message.content !== '') expect(message.allowed_mentions, message.id).toEqual(NO_MENTIONS);
    }
    const versions = [...fake.messageHistory(progressId), ...fake.messageHistory(page!.id)].filter((v) => v.content !== '');
    expect(versions.some((v) => v.via === 'callback 7')).toBe(true);
    for (const version of versions) expect(version.allowed_mentions, version.via).toEqual(NO_MENTIONS);
  });
});
