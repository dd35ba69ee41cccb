/**
 * Issue 14 on Discord, end to end: drafts then "Upscale N approved", a prompt list's gallery grouped by
 * prompt, and delivery links to an S3-compatible bucket in the summary. discord.js against the fake
 * Discord, the local provider (half-size drafts, sharp upscaler ×2), s3rver on loopback for the bucket.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it, vi } from 'vitest';
import { encodeAction, REFUSAL } from '../../../src/core/actions.js';
import { startS3Server } from '../../fakes/s3-server.js';
import { filesIn, onCleanup } from '../../helpers.js';
import { PRIVATE, answerOf, customIds, galleryMessages, jobIdOf, progressMessageOf, startBot, waitForContent, waitForGallery, type Bot } from './harness.js';

/** Known prices, so the summary's cost line is exact: a local image $0.01, a local upscale $0.002. */
const PRICES = JSON.stringify({ local: 0.01, 'local-upscale': 0.002 });
const STRANGER = { id: '222222222222222222', username: 'stranger' };

/** The width of an uploaded image, decoded from the bytes the fake received. */
async function widthOf(fake: Bot['fake'], attachmentId: string): Promise<number | undefined> {
  const bytes = fake.attachmentBytes(attachmentId);
  return bytes ? (await sharp(bytes).metadata()).width : undefined;
}

async function approve(fake: Bot['fake'], jobId: string, messageId: string, image: number): Promise<void> {
  const press = fake.pressButton({ customId: encodeAction({ kind: 'review', jobId, image, status: 'approved' }), messageId });
  expect((await answerOf(fake, press.id))[0]?.type).toBe(7);
}

describe('Discord drafts and Upscale approved', () => {
  it('offers "Upscale 2 approved" once two drafts are approved, refuses a stranger, and upscales exactly those two into a new gallery', async () => {
    // Slow enough calls that the progress message is edited while the upscales run.
    const { fake, app } = await startBot({ env: { MODEL_PRICES: PRICES, LOCAL_LATENCY_MS: '150', CACHE: 'off' } });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a red fox', count: 4, provider: 'local', draft: true } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    const [drafts] = await waitForGallery(fake, jobId, 4);
    expect(await Promise.all(drafts!.attachments.map((a) => widthOf(fake, a.id)))).toEqual([384, 384, 384, 384]);
    const upscale = encodeAction({ kind: 'upscale', jobId });
    expect(customIds(fake.message(progressId))).not.toContain(upscale);

    await approve(fake, jobId, drafts!.id, 1);
    await approve(fake, jobId, drafts!.id, 3);
    // The summary follows each approval: wait for the one after the second (an edit after the first says 1).
    await fake.waitFor((f) => JSON.stringify(f.message(progressId)?.components).includes('"label":"Upscale 2 approved"') || undefined, {
      description: 'the upscale button for 2',
    });
    expect(customIds(fake.message(progressId))).toContain(upscale);

    const stranger = fake.pressButton({ customId: upscale, messageId: progressId, user: STRANGER });
    expect((await answerOf(fake, stranger.id))[0]?.data).toMatchObject({ content: REFUSAL, flags: PRIVATE });
    expect((await app.engine.get(jobId))?.batches.filter((b) => b.upscale)).toEqual([]);
    expect((await app.engine.get(jobId))?.state).toBe('completed');

    const press = fake.pressButton({ customId: upscale, messageId: progressId });
    expect((await answerOf(fake, press.id))[0]?.type).toBe(6);
    const [, finals] = await fake.waitFor(
      (f) => {
        const pages = galleryMessages(f, jobId);
        return pages.length === 2 && pages[1]!.attachments.length === 4 ? pages : undefined;
      },
      { timeoutMs: 15_000, description: 'a second gallery of 4' },
    );
    const done = await waitForContent(fake, progressId, 'Drafts: ');
    expect(done.content).toContain('**Done: 4 images**');
    expect(done.content).toContain('✅ 2 approved · ❌ 0 rejected · ⏳ 2 pending · 2 upscaled');
    expect(done.content).toContain('Drafts: drafts $0.040 + 2 upscales $0.004 = $0.044 vs $0.040 at full size (10% more)');
    expect(customIds(done)).not.toContain(upscale);
    expect(fake.messageHistory(progressId).some((version) => version.content.includes('**Upscaling 2 approved images**'))).toBe(true);

    // Exactly the approved two went to the upscaler; the new gallery shows their final files.
    const job = (await app.engine.get(jobId))!;
    expect(job.batches.filter((b) => b.upscale).map((b) => [b.upscale!.image, b.state])).toEqual([
      [1, 'done'],
      [3, 'done'],
    ]);
    expect(job.images.map((image) => image.final?.file ?? null)).toEqual(['final/001.png', null, 'final/003.png', null]);
    expect(await filesIn(app, jobId, 'final')).toEqual(['001.png', '003.png']);
    expect(finals!.attachments.map((a) => a.filename)).toEqual(['001.png', '002.png', '003.png', '004.png']);
    expect(await Promise.all(finals!.attachments.map((a) => widthOf(fake, a.id)))).toEqual([768, 384, 768, 384]);
    const onDisk = await readFile(path.join(app.files.jobDir(jobId), 'final', '001.png'));
    expect(fake.attachmentBytes(finals!.attachments[0]!.id)?.equals(onDisk)).toBe(true);
  });
});

describe('Discord prompt lists', () => {
  it('runs a .txt of 3 prompts × 4 images as one job with one progress message and a gallery page per prompt', async () => {
    const { fake, app } = await startBot({ env: { CACHE: 'off' } });
    const list = ['a red fox in snow', 'a blue owl at dusk', 'a green frog on a leaf'].join('\n');
    const sent = fake.sendCommand({
      name: 'imagine',
      options: { count: 4, provider: 'local' },
      attachments: { prompts: { filename: 'storyboard.txt', bytes: Buffer.from(list) } },
    });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    const pages = await waitForGallery(fake, jobId, 12);
    await waitForContent(fake, progressId, 'Done: 12 images');

    // One progress message: every non-gallery message the bot made for this job is that one.
    expect(fake.messages().filter((m) => m.content.includes(`job ${jobId}`) && !m.content.startsWith('**Gallery')).map((m) => m.id)).toEqual([progressId]);
    expect(pages.map((m) => m.content.split('\n')[0])).toEqual([
      '**Gallery 1/3** · Prompt 1/3 · line 1: “a red fox in snow”',
      '**Gallery 2/3** · Prompt 2/3 · line 2: “a blue owl at dusk”',
      '**Gallery 3/3** · Prompt 3/3 · line 3: “a green frog on a leaf”',
    ]);
    // No page mixes two prompts: each page's images were made for its heading's prompt.
    const job = (await app.engine.get(jobId))!;
    for (const [i, page] of pages.entries()) {
      const numbers = page.attachments.map((a) => Number(a.filename.replace('.png', '')));
      expect(numbers).toHaveLength(4);
      expect(new Set(numbers.map((n) => job.images.find((image) => image.index === n)?.prompt))).toEqual(new Set([i]));
    }
  });
});

describe('Discord delivery to an S3-compatible bucket', () => {
  it('shows "Delivered to s3://…" with links once an image is approved, and the image link fetches the approved file', async () => {
    const s3 = await startS3Server();
    onCleanup(() => s3.close());
    // The AWS SDK reads credentials from its usual chain, the environment first.
    vi.stubEnv('AWS_ACCESS_KEY_ID', s3.credentials.accessKeyId);
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', s3.credentials.secretAccessKey);
    onCleanup(() => void vi.unstubAllEnvs());
    const { fake, app } = await startBot({
      env: { S3_BUCKET: s3.bucket, S3_ENDPOINT: s3.url, S3_REGION: s3.region, CACHE: 'off' },
    });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a lighthouse', count: 2, provider: 'local' } });
    const progressId = await progressMessageOf(fake, sent.id);
    const jobId = await jobIdOf(fake, progressId);
    const [page] = await waitForGallery(fake, jobId, 2);
    await approve(fake, jobId, page!.id, 1);

    const delivered = await waitForContent(fake, progressId, '[#1](');
    expect(delivered.content).toContain(`Delivered to s3://${s3.bucket}/${jobId}/ (links valid 7 days): [manifest](http://127.0.0.1:`);
    const link = /\[#1\]\((http[^)\s]+)\)/.exec(delivered.content)?.[1];
    expect(link).toContain(`/${s3.bucket}/${jobId}/approved/001.png?`);
    const response = await fetch(link!);
    expect(response.status).toBe(200);
    const approved = await readFile(path.join(app.files.jobDir(jobId), 'approved', '001.png'));
    expect(Buffer.from(await response.arrayBuffer()).equals(approved)).toBe(true);
    expect(delivered.content).not.toContain('[#2]');
  });
});
