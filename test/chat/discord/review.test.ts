import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { GENERIC_FAILURE } from '../../../src/chat/discord/interactions.js';
import { encodeAction, GONE, REFUSAL } from '../../../src/core/actions.js';
import type { OutputImage } from '../../../src/core/provider.js';
import { createLogger } from '../../../src/logger.js';
import { LocalProvider } from '../../../src/providers/local.js';
import { filesIn } from '../../helpers.js';
import { PRIVATE, MANAGE_MESSAGES, answerOf, jobIdOf, progressMessageOf, startBot, waitForContent, waitForGallery } from './harness.js';

const SLOW = { LOCAL_LATENCY_MS: '60' };

describe('Discord gallery buttons', () => {
  it('approve by the requester shows ✅ on that page at once, moves the file and updates the summary', async () => {
    const { fake, app } = await startBot({ env: SLOW });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a lighthouse', count: 12 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    const [page1] = await waitForGallery(fake, jobId, 12);
    // A click hours later is answered with update(), which carries a fresh token.
    fake.ageMessage(page1!.id, 3 * 3_600_000);

    const press = fake.pressButton({ customId: encodeAction({ kind: 'review', jobId, image: 3, status: 'approved' }), messageId: page1!.id });
    const [answer] = await answerOf(fake, press.id);
    expect(answer?.type).toBe(7);
    expect(fake.message(page1!.id)?.content).toContain('`#3` ✅');
    expect(fake.message(page1!.id)?.content).toContain('✅ 1 approved');
    expect(fake.message(page1!.id)?.attachments).toHaveLength(10);
    expect(await filesIn(app, jobId, 'approved')).toEqual(['003.png']);
    expect((await app.engine.get(jobId))?.images[2]?.review).toMatchObject({ status: 'approved', by: 'Tester' });
    await waitForContent(fake, progressId, '✅ 1 approved · ❌ 0 rejected · ⏳ 11 pending');
  });

  it('refuses a review by another member without Manage Messages, and accepts one by a moderator', async () => {
    const { fake, app } = await startBot();
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a cat', count: 2 } });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    const [page] = await waitForGallery(fake, jobId, 2);
    const reject2 = encodeAction({ kind: 'review', jobId, image: 2, status: 'rejected' });

    const stranger = fake.pressButton({ customId: reject2, messageId: page!.id, user: { id: '222222222222222222', username: 'stranger' } });
    const [refusal] = await answerOf(fake, stranger.id);
    expect(refusal?.type).toBe(4);
    expect(refusal?.data).toMatchObject({ content: REFUSAL, flags: PRIVATE });
    expect((await app.engine.get(jobId))?.images[1]?.review.status).toBe('pending');
    expect(await filesIn(app, jobId, 'rejected')).toEqual([]);
    expect(fake.message(page!.id)?.content).toContain('`#2` ⏳');

    const moderator = fake.pressButton({
      customId: reject2,
      messageId: page!.id,
      user: { id: '333333333333333333', username: 'mod' },
      memberPermissions: (BigInt(MANAGE_MESSAGES) | (1n << 10n)).toString(),
    });
    expect((await answerOf(fake, moderator.id))[0]?.type).toBe(7);
    expect(fake.message(page!.id)?.content).toContain('`#2` ❌');
    expect(await filesIn(app, jobId, 'rejected')).toEqual(['002.png']);
  });

  it('refuses a moderator of another server pressing a button that points at this server’s job', async () => {
    const { fake, app } = await startBot();
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a lamp', count: 1 } });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    const [page] = await waitForGallery(fake, jobId, 1);
    const elsewhere = fake.pressButton({
      customId: encodeAction({ kind: 'review', jobId, image: 1, status: 'approved' }),
      messageId: page!.id,
      guildId: '999999999999999999',
      user: { id: '444444444444444444', username: 'other-admin' },
      memberPermissions: (BigInt(MANAGE_MESSAGES) | (1n << 10n)).toString(),
    });
    const [answer] = await answerOf(fake, elsewhere.id);
    expect(answer?.data).toMatchObject({ content: REFUSAL, flags: PRIVATE });
    expect((await app.engine.get(jobId))?.images[0]?.review.status).toBe('pending');
    expect(await filesIn(app, jobId, 'approved')).toEqual([]);
  });

  it('answers forged, truncated and stale custom ids with an ephemeral GONE', async () => {
    const { fake } = await startBot();
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a boat', count: 1 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    const [page] = await waitForGallery(fake, jobId, 1);
    const forged = [
      'af:a:20200101-deadbeef:1', // a job that does not exist
      `af:a:${jobId}`, // truncated
      `af:a:${jobId}:7`, // an image the job does not have
      `af:p:${jobId}:1`, // a page button this adapter never posts
      'x'.repeat(100),
    ];
    for (const customId of forged) {
      const press = fake.pressButton({ customId, messageId: page!.id });
      const [answer] = await answerOf(fake, press.id);
      expect(answer?.data, customId).toMatchObject({ content: GONE, flags: PRIVATE });
    }
    // A real review id pressed on a message that is not the job's gallery.
    const elsewhere = fake.pressButton({ customId: encodeAction({ kind: 'review', jobId, image: 1, status: 'approved' }), messageId: progressId });
    expect((await answerOf(fake, elsewhere.id))[0]?.data).toMatchObject({ content: GONE, flags: PRIVATE });
    expect(fake.message(progressId)?.content).toContain('Done: 1 image');
    // Still serving: a real button works after the forged ones.
    const press = fake.pressButton({ customId: encodeAction({ kind: 'review', jobId, image: 1, status: 'approved' }), messageId: page!.id });
    expect((await answerOf(fake, press.id))[0]?.type).toBe(7);
  });

  it('posts images the provider flagged as spoilers', async () => {
    class FlaggingProvider extends LocalProvider {
      override async result(requestId: string): Promise<OutputImage[]> {
        return (await super.result(requestId)).map((image, i) => ({ ...image, nsfw: i === 0 }));
      }
    }
    const { fake } = await startBot({ providers: { local: new FlaggingProvider() } });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a statue', count: 2 } });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    const [page] = await waitForGallery(fake, jobId, 2);
    expect(page!.attachments.map((a) => a.filename)).toEqual(['SPOILER_001.png', '002.png']);
  });

  it('logs an unexpected failure without tokens and answers it with a short ephemeral line', async () => {
    const lines: string[] = [];
    const logger = createLogger('warn', { write: (line: string) => void lines.push(line) });
    const { fake, app } = await startBot({ logger });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a vase', count: 1 } });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    const [page] = await waitForGallery(fake, jobId, 1);
    // The file vanished from the output folder: the review cannot move it.
    await rm(path.join(app.files.jobDir(jobId), 'pending-review', '001.png'));

    const press = fake.pressButton({ customId: encodeAction({ kind: 'review', jobId, image: 1, status: 'approved' }), messageId: page!.id });
    const [answer] = await answerOf(fake, press.id);
    expect(answer?.data).toMatchObject({ content: GENERIC_FAILURE, flags: PRIVATE });
    const logged = lines.join('');
    expect(logged).toContain('discord interaction failed');
    expect(logged).toContain('ENOENT');
    expect(logged).not.toContain(press.token);
    expect(logged).not.toContain(sent.token);
    expect(logged).not.toContain('fake-bot-token');
  });
});
