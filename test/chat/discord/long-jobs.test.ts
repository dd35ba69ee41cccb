import { until } from '../../bot-process.js';
import { describe, expect, it } from 'vitest';
import { encodeAction, REFUSAL } from '../../../src/core/actions.js';
import { untilProgress } from '../../helpers.js';
import { PRIVATE, answerOf, galleryMessages, jobIdOf, progressMessageOf, startBot, waitForContent, waitForGallery } from './harness.js';

describe('Discord long jobs', () => {
  it('Cancel by the requester stops the remaining batches; a stranger may not cancel', async () => {
    // Batches of a second each: the job is surely mid-way when Cancel is pressed.
    const { fake, app } = await startBot({ env: { LOCAL_LATENCY_MS: '1000' } });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a long parade', count: 12 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    const cancel = encodeAction({ kind: 'cancel', jobId });
    await waitForContent(fake, progressId, /Batch 1\/3 · generating/);
    expect(fake.message(progressId)?.components[0]?.['components'][0]?.custom_id).toBe(cancel);

    const stranger = fake.pressButton({ customId: cancel, messageId: progressId, user: { id: '222222222222222222' } });
    expect((await answerOf(fake, stranger.id))[0]?.data).toMatchObject({ content: REFUSAL, flags: PRIVATE });
    expect((await app.engine.get(jobId))?.state).toBe('running');

    const finished = app.engine.waitFor(jobId);
    const press = fake.pressButton({ customId: cancel, messageId: progressId });
    expect((await answerOf(fake, press.id))[0]?.type).toBe(6);
    const job = await finished;
    expect(job.state).toBe('canceled');
    expect(job.batches.map((b) => b.state)).toEqual(['canceled', 'canceled', 'canceled']);
    expect(job.images).toEqual([]);
    const message = await waitForContent(fake, progressId, 'Canceled:');
    expect(message.components).toEqual([]);
    expect(message.content).toMatch(/not made/);
  });

  it('a job that outlives its interaction token switches to the bot token at the first 50027 and never retries the dead token', async () => {
    const { fake, app } = await startBot({ env: { LOCAL_LATENCY_MS: '200' } });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a night sky', count: 12 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    expect((await fake.waitForCall('PATCH /webhooks/:app/:token/messages/:m')).status).toBe(200);
    // From now on every token is dead, as after 15 minutes; the job has batches left.
    fake.expireTokensAfter(1);
    expect((await app.engine.get(jobId))?.state).not.toMatch(/completed|failed|canceled/);
    await waitForContent(fake, progressId, 'Done: 12 images');
    const pages = await waitForGallery(fake, jobId, 12);

    const webhookCalls = fake.callsTo('/webhooks/*');
    const dead = webhookCalls.filter((c) => c.status === 401);
    expect(dead).toHaveLength(1);
    expect(dead[0]?.response).toMatchObject({ code: 50027 });
    expect(webhookCalls.filter((c) => c.index > dead[0]!.index)).toEqual([]);
    // After the switch: edits and the gallery through the bot token's channel routes.
    const botEdits = fake.callsTo('PATCH /channels/:c/messages/:m').filter((c) => c.path.endsWith(`/${progressId}`));
    expect(botEdits.length).toBeGreaterThan(0);
    expect(botEdits.every((c) => c.authOk === true && c.index > dead[0]!.index)).toBe(true);
    expect(fake.callsTo('POST /channels/:c/messages').map((c) => c.status)).toEqual(pages.map(() => 200));
    expect(fake.invalidRequestCount).toBe(1);
  });

  it('stops using the interaction token after 14 minutes without waiting for a 401', async () => {
    let skewMs = 0;
    const { fake, app } = await startBot({ env: { LOCAL_LATENCY_MS: '200' }, adapter: { now: () => Date.now() + skewMs } });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a river', count: 8 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    await fake.waitForCall('PATCH /webhooks/:app/:token/messages/:m');
    skewMs = 14 * 60_000;
    expect((await app.engine.get(jobId))?.state).not.toMatch(/completed|failed|canceled/);
    await waitForContent(fake, progressId, 'Done: 8 images');
    await waitForGallery(fake, jobId, 8);

    const lastWebhook = fake.callsTo('/webhooks/*').at(-1)!;
    const botCalls = fake.callsTo(/^(PATCH|POST) \/channels\//);
    expect(botCalls.length).toBeGreaterThan(1);
    expect(botCalls.every((c) => c.index > lastWebhook.index)).toBe(true);
    expect(fake.invalidRequestCount).toBe(0);
  });

  it('waits out 429s on progress edits and still ends on the final state', async () => {
    const { fake } = await startBot({ env: { LOCAL_LATENCY_MS: '100' }, adapter: { tokenLifetimeMs: 0 } });
    fake.rateLimitNext({ route: 'PATCH /channels/:c/messages/:m', retryAfterSeconds: 0.1, times: 3 });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a storm', count: 8 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    await waitForContent(fake, progressId, 'Done: 8 images');
    await waitForGallery(fake, jobId, 8);
    const edits = fake.callsTo('PATCH /channels/:c/messages/:m');
    expect(edits.filter((c) => c.status === 429)).toHaveLength(3);
    expect(edits.at(-1)?.status).toBe(200);
    expect(fake.callsTo('/webhooks/*')).toEqual([]);
  });

  it('a restarted process (new client, same store) finishes the same progress message and posts the gallery', async () => {
    const env = { LOCAL_LATENCY_MS: '200' };
    const first = await startBot({ env });
    const { fake } = first;
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a harbour at dawn', count: 8 } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    await untilProgress(first.app, (job) => job.id === jobId && job.images.length >= 4 && job.state === 'running');
    await first.adapter.stop();
    await first.app.close();
    expect(first.adapter.healthy()).toBe(false);
    const before = fake.calls.length;

    const second = await startBot({ env, fake, dir: first.app.dir });
    expect(second.adapter.healthy()).toBe(true);
    expect(await second.app.engine.resume()).toBe(1);
    await waitForContent(fake, progressId, 'Done: 8 images');
    const pages = await waitForGallery(fake, jobId, 8);

    const after = fake.calls.filter((c) => c.index >= before);
    expect(after.some((c) => c.method === 'PATCH' && c.path.endsWith(`/messages/${progressId}`) && c.authOk === true)).toBe(true);
    expect(pages).toHaveLength(1);
    // One progress message for the job: the restart did not post a second one.
    expect(fake.messages().filter((m) => m.content.includes(`job ${jobId}`) && !m.content.startsWith('**Gallery'))).toHaveLength(1);
    expect(galleryMessages(fake, jobId)[0]?.attachments.map((a) => a.filename)).toHaveLength(8);
    expect(fake.identifies).toHaveLength(2);
  });

  it('posts the gallery of a job that finished while no Discord client was there to post it', async () => {
    const env = { LOCAL_LATENCY_MS: '150' };
    const first = await startBot({ env });
    const { fake } = first;
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a lighthouse in fog', count: 6 } });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    // The chat side goes away; the engine goes on and finishes the job with nobody to post the gallery.
    await first.adapter.stop();
    const done = await first.app.engine.waitFor(jobId);
    expect(done.state).toBe('completed');
    expect(galleryMessages(fake, jobId)).toHaveLength(0);
    await first.app.close();

    const second = await startBot({ env, fake, dir: first.app.dir });
    await second.app.engine.resume();
    const pages = await waitForGallery(fake, jobId, 6);
    expect(pages).toHaveLength(1);
    // delivered: nothing is left for the next start to post
    await until(async () => ((await second.app.keyv.get<string[]>('discord:outbox')) ?? ['?']).length === 0, 'an empty outbox');
  });
});
