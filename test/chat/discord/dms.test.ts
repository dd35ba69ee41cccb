import { describe, expect, it } from 'vitest';
import { DMS_OFF } from '../../../src/chat/discord/interactions.js';
import { encodeAction } from '../../../src/core/actions.js';
import { MessageFlag } from '../../fakes/discord.js';
import { PRIVATE, answerOf, jobIdOf, progressMessageOf, startBot, waitForGallery } from './harness.js';

describe('Discord DMs', () => {
  it('with DISCORD_DMS off, answers a DM /imagine with one ephemeral line naming DISCORD_DMS and starts nothing', async () => {
    const { fake, app } = await startBot();
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox in my DMs', count: 4 }, guildId: null });
    const callbacks = await answerOf(fake, sent.id);
    // Answered at once, not deferred: no public "thinking…" message, no job.
    expect(callbacks.map((c) => c.type)).toEqual([4]);
    expect(callbacks[0]?.data).toMatchObject({ content: DMS_OFF, flags: PRIVATE, allowed_mentions: { parse: [] } });
    expect(DMS_OFF).toContain('DISCORD_DMS=off');
    expect(DMS_OFF).not.toContain('\n');
    expect(app.engine.activeJobs()).toHaveLength(0);
    expect(await app.engine.listJobs(`dm:${fake.defaultUser.id}`)).toHaveLength(0);
    expect(fake.messages(sent.channelId).filter((m) => (m.flags & MessageFlag.Ephemeral) === 0)).toEqual([]);
  });

  it('with DISCORD_DMS off, refuses /jobs from a DM and a button pressed outside a server', async () => {
    const { fake, app } = await startBot();
    const list = fake.sendCommand({ name: 'jobs', guildId: null });
    expect((await answerOf(fake, list.id))[0]?.data).toMatchObject({ content: DMS_OFF, flags: PRIVATE });

    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a server fox', count: 1 } });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    const [page] = await waitForGallery(fake, jobId, 1);
    const press = fake.pressButton({ customId: encodeAction({ kind: 'review', jobId, image: 1, status: 'approved' }), messageId: page!.id, guildId: null });
    const [answer] = await answerOf(fake, press.id);
    expect(answer?.type).toBe(4);
    expect(answer?.data).toMatchObject({ content: DMS_OFF, flags: PRIVATE });
    expect((await app.engine.get(jobId))?.images[0]?.review.status).toBe('pending');
    expect(fake.message(page!.id)?.content).toContain('`#1` ⏳');
  });

  it('with DISCORD_DMS=on, runs a DM /imagine as the user’s own dm: tenant', async () => {
    const { fake, app } = await startBot({ env: { DISCORD_DMS: 'on' } });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox in my DMs', count: 1 }, guildId: null });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    const job = await app.engine.get(jobId);
    expect(job?.requester).toMatchObject({ tenant: `dm:${fake.defaultUser.id}`, userId: fake.defaultUser.id, platform: 'discord' });
    expect(fake.interaction(sent.id)?.callbacks[0]?.type).toBe(5);
    await waitForGallery(fake, jobId, 1);
  });
});
