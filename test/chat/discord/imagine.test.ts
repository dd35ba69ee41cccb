import { describe, expect, it, vi } from 'vitest';
import { ProviderError } from '../../../src/core/provider.js';
import { encodeAction, decodeAction } from '../../../src/core/actions.js';
import { LocalProvider } from '../../../src/providers/local.js';
import { MessageFlag } from '../../fakes/discord.js';
import { PRIVATE, answerOf, customIds, galleryMessages, jobIdOf, messageCalls, progressMessageOf, startBot, waitForContent, waitForGallery } from './harness.js';

const SLOW = { LOCAL_LATENCY_MS: '60' };

describe('Discord /imagine', () => {
  it('defers publicly at once, edits progress batch by batch, then posts a paged gallery of exactly count images', async () => {
    const { fake, app } = await startBot({ env: SLOW });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a red fox in snow', count: 12 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    const final = await waitForContent(fake, progressId, 'Done: 12 images');

    const [defer] = fake.interaction(sent.id)!.callbacks;
    expect(defer?.type).toBe(5);
    // At once: the deferral is the first thing the bot sent about this interaction, and Discord (the
    // fake keeps its 3 s window) accepted it — an order of recorded calls, not a stopwatch.
    expect(fake.calls.find((call) => call.interactionId === sent.id)?.route).toBe('POST /interactions/:interaction/:token/callback');
    expect([200, 204]).toContain(defer?.status);
    expect((defer?.data?.['flags'] ?? 0) & MessageFlag.Ephemeral).toBe(0);

    const history = fake.messageHistory(progressId).map((v) => v.content);
    expect(history.some((c) => /Batch [1-3]\/3 · (generating|done)/.test(c))).toBe(true);
    expect(history.some((c) => c.includes('local · local') && c.includes('a red fox in snow'))).toBe(true);
    // While running the message carries a Cancel button; once done, the summary replaces it.
    expect(fake.messageHistory(progressId).some((v) => JSON.stringify(v.components).includes(encodeAction({ kind: 'cancel', jobId })))).toBe(true);
    expect(final.components).toEqual([]);
    expect(final.content).toContain('⏳ 12 pending');

    const pages = await waitForGallery(fake, jobId, 12);
    expect(pages.map((p) => p.attachments.length)).toEqual([10, 2]);
    expect(pages.flatMap((p) => p.attachments.map((a) => a.filename))).toEqual(
      Array.from({ length: 12 }, (_, i) => `${String(i + 1).padStart(3, '0')}.png`),
    );
    // Files came from the job folder, not from a URL: the fake received the bytes.
    expect(pages[0]!.attachments[0]!.width).toBe(768);
    const actions = pages.map((p) => customIds(p).map((id) => decodeAction(id)));
    expect(actions[0]).toHaveLength(20);
    expect(actions[1]).toEqual([
      { kind: 'review', jobId, image: 11, status: 'approved' },
      { kind: 'review', jobId, image: 11, status: 'rejected' },
      { kind: 'review', jobId, image: 12, status: 'approved' },
      { kind: 'review', jobId, image: 12, status: 'rejected' },
    ]);
    // What a restart needs is in the store; the interaction token is not.
    const facts = await vi.waitFor(async () => {
      const saved = (await app.engine.get(jobId))?.chat?.['discord'];
      expect(saved).toHaveProperty('delivered', true);
      return saved;
    });
    expect(facts).toMatchObject({ channelId: fake.defaultChannelId, messageId: progressId, guildId: fake.defaultGuildId });
    expect(facts).toMatchObject({ pages: pages.map((p, i) => ({ messageId: p.id, images: i === 0 ? [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] : [11, 12] })) });
    expect(JSON.stringify(facts)).not.toContain(sent.token);
  });

  it('answers a validation error ephemerally with the option, its range and the value, and starts no job', async () => {
    const { fake, app } = await startBot();
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox', count: 0 } });
    const callbacks = await answerOf(fake, sent.id);
    expect(callbacks.map((c) => c.type)).toEqual([4]);
    expect(callbacks[0]?.data).toMatchObject({
      content: 'Expected `count` to be an integer from 1 to 100, got `0`.',
      flags: PRIVATE,
      allowed_mentions: { parse: [] },
    });
    expect(app.engine.activeJobs()).toHaveLength(0);
  });

  it('echoes a prompt with @everyone and a role mention without pinging anyone', async () => {
    const { fake } = await startBot();
    const prompt = '@everyone look at <@&123> and <@456>, **now** @here';
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt, count: 1 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    await waitForContent(fake, progressId, 'Done: 1 image');
    await waitForGallery(fake, jobId, 1);

    const calls = messageCalls(fake);
    expect(calls.length).toBeGreaterThan(2);
    for (const call of calls) {
      const body = call.body as { data?: { allowed_mentions?: unknown }; allowed_mentions?: unknown };
      expect(body.data?.allowed_mentions ?? body.allowed_mentions, `${call.method} ${call.path}`).toEqual({ parse: [] });
    }
    for (const message of fake.messages()) {
      expect(message.allowed_mentions).toEqual({ parse: [] });
      expect(message.content).not.toMatch(/@everyone|@here|<@&123>|<@456>/);
    }
    expect(fake.message(progressId)?.content).toContain('\\*\\*now\\*\\*');
  });

  it('echoes a masked link and a bare URL as plain text, in messages that never unfurl a preview', async () => {
    const { fake } = await startBot();
    const prompt = 'free [Claim Nitro](https://evil.example) and https://evil.example/x_y_z <https://evil.example/z>';
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt, count: 2 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    await waitForContent(fake, progressId, 'Done: 2 images');
    const [page] = await waitForGallery(fake, jobId, 2);
    // A review re-renders the gallery through update(): it must keep the flag too.
    const press = fake.pressButton({ customId: encodeAction({ kind: 'review', jobId, image: 1, status: 'approved' }), messageId: page!.id });
    expect((await answerOf(fake, press.id))[0]?.type).toBe(7);

    const versions = [...fake.messageHistory(progressId), ...fake.messageHistory(page!.id)].filter((v) => v.content.includes('evil'));
    expect(versions.length).toBeGreaterThan(3);
    for (const version of versions) {
      expect(version.content).not.toMatch(/\[[^\]\\]*\]\(https?:/);
      expect(version.content).not.toMatch(/https?:\/\//);
      expect(version.content).not.toMatch(/<https?:/);
      expect(version.flags & MessageFlag.SuppressEmbeds, version.via).toBe(MessageFlag.SuppressEmbeds);
    }
    expect(fake.message(progressId)?.content).toContain('\\[Claim Nitro\\](https:\u200b//evil.example)');
    // Underscores inside what was a URL are escaped like any others.
    expect(fake.message(progressId)?.content).toContain('x\\_y\\_z');
    for (const call of messageCalls(fake)) {
      const body = call.body as { data?: { flags?: number }; flags?: number };
      expect((body.data?.flags ?? body.flags ?? 0) & MessageFlag.SuppressEmbeds, `${call.method} ${call.path}`).toBe(MessageFlag.SuppressEmbeds);
    }
  });

  it('shows a provider’s error with a link and newlines on one short line, as plain text', async () => {
    const error = `upstream said:\n[Claim Nitro](https://evil.example)\nsecond line ${'x'.repeat(400)}`;
    class ChattyProvider extends LocalProvider {
      override async submit(): Promise<string> {
        throw new ProviderError('invalid', error);
      }
    }
    const { fake } = await startBot({ providers: { local: new ChattyProvider() } });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox', count: 1 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const message = await waitForContent(fake, progressId, '**Failed: ');
    expect(message.content).not.toMatch(/\[[^\]\\]*\]\(https?:/);
    expect(message.content).not.toMatch(/https?:\/\//);
    expect(message.flags & MessageFlag.SuppressEmbeds).toBe(MessageFlag.SuppressEmbeds);
    const lines = message.content.split('\n');
    expect(lines.some((line) => line.startsWith('second line'))).toBe(false);
    // What a reader sees (escapes and zero-width spaces do not show) is one line of at most 200 characters.
    const shown = (line: string) => Array.from(line.replace(/\\(.)/g, '$1').replace(/\u200b/g, ''));
    const errorLines = lines.filter((line) => line.includes('upstream said'));
    expect(errorLines.length).toBeGreaterThan(0);
    for (const line of errorLines) {
      const text = line.replace(/^\*\*|\*\*$/g, '').replace(/^⚠️ /, '').replace(/^Batch \d+: \d+ images? not made \(|\)$/g, '');
      expect(shown(text).length, line).toBeLessThanOrEqual(200);
      expect(text.endsWith('…'), line).toBe(true);
    }
  });

  it('shows why a job failed in its progress message, and posts no gallery', async () => {
    class RefusingProvider extends LocalProvider {
      override async submit(): Promise<string> {
        throw new ProviderError('invalid', 'prompt refused by the _safety_ filter');
      }
    }
    const { fake } = await startBot({ providers: { local: new RefusingProvider() } });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a forbidden thing', count: 4 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    const message = await waitForContent(fake, progressId, '**Failed: ');
    expect(message.content).toContain('prompt refused by the \\_safety\\_ filter');
    expect(message.content).toMatch(/Batch 1: 4 images not made/);
    // no Cancel any more; the only button offers to ask for the failed images again
    expect(customIds(message)).toEqual([encodeAction({ kind: 'retry', jobId })]);
    expect(galleryMessages(fake, jobId)).toEqual([]);
  });

  it('/jobs lists the caller’s running jobs ephemerally; a DM job belongs to the user’s own tenant', async () => {
    // A slow provider keeps the job listed; the test ends before it would finish.
    const { fake, app } = await startBot({ env: { LOCAL_LATENCY_MS: '5000', DISCORD_DMS: 'on' } });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a slow snail', count: 4 }, guildId: null });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    expect((await app.engine.get(jobId))?.requester).toMatchObject({ tenant: `dm:${fake.defaultUser.id}`, platform: 'discord' });

    const list = fake.sendCommand({ name: 'jobs', guildId: null });
    const [answer] = await answerOf(fake, list.id);
    expect(answer?.type).toBe(4);
    expect(answer?.data?.['flags']).toBe(PRIVATE);
    expect(answer?.data?.['content']).toContain(jobId);
    expect(answer?.data?.['content']).toContain('a slow snail');
  });
});
