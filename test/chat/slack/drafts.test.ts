/**
 * Issue 14 on Slack, end to end: `--draft` then "Upscale N approved", a multi-line prompt list's gallery
 * grouped by prompt, and delivery links to an S3-compatible bucket in the summary. Bolt against the
 * fake Slack Web API, the local provider (half-size drafts, sharp upscaler ×2), s3rver on loopback.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it, vi } from 'vitest';
import { REFUSAL } from '../../../src/core/actions.js';
import { isJobFinished } from '../../../src/core/engine.js';
import type { FakeSlackFile } from '../../fakes/slack.js';
import { pollUntil } from '../../fakes/http.js';
import { startS3Server } from '../../fakes/s3-server.js';
import { filesIn, onCleanup } from '../../helpers.js';
import { button, buttonsOf, factsOf, slackHarness, textOf, textsOf, type Harness } from './harness.js';

/** Known prices, so the summary's cost line is exact: a local image $0.01, a local upscale $0.002. */
const PRICES = JSON.stringify({ local: 0.01, 'local-upscale': 0.002 });

/** The job's images uploaded to Slack so far, oldest first. */
const uploadsOf = (h: Harness, jobId: string): FakeSlackFile[] => h.fake.files().filter((file) => file.filename.startsWith(`${jobId}-`));

async function widthOf(file: FakeSlackFile): Promise<number | undefined> {
  return file.bytes ? (await sharp(file.bytes).metadata()).width : undefined;
}

/** Clicks Approve on image `index` of a gallery page, and waits until the store has it. */
async function approve(h: Harness, jobId: string, channel: string, pageTs: string, index: number): Promise<void> {
  const page = h.fake.message(channel, pageTs)!;
  await h.click(page, button(page, 'Approve', index), 'U1');
  await pollUntil(
    () => h.app.engine.get(jobId),
    (job) => job?.images.find((image) => image.index === index)?.review.status === 'approved',
    { timeoutMs: 5_000, intervalMs: 20 },
  );
}

describe('Slack drafts and Upscale approved', () => {
  it('offers "Upscale 2 approved" once two drafts are approved, refuses someone else, and upscales exactly those two into a new gallery', async () => {
    // Slow enough calls that the progress message is edited while the upscales run.
    const h = await slackHarness({ env: { MODEL_PRICES: PRICES, LOCAL_LATENCY_MS: '150', CACHE: 'off' } });
    await h.imagine('a red fox --count 4 --provider local --draft');
    const { ts, jobId } = await h.progressPost();
    const { facts } = await h.delivered(jobId);
    const progress = () => h.fake.message(facts.channel, ts)!;
    expect(await Promise.all(uploadsOf(h, jobId).map(widthOf))).toEqual([384, 384, 384, 384]);
    expect(() => button(progress(), 'Upscale 2 approved')).toThrow();

    const pageTs = facts.pages[0]!.ts!;
    await approve(h, jobId, facts.channel, pageTs, 1);
    await approve(h, jobId, facts.channel, pageTs, 3);
    await pollUntil(async () => progress(), (message) => buttonsOf(message).some((b) => b.text.text === 'Upscale 2 approved'), {
      timeoutMs: 5_000,
      intervalMs: 20,
    });
    const upscale = button(progress(), 'Upscale 2 approved');

    const since = h.fake.lastSeq;
    await h.click(progress(), upscale, 'U2');
    const refusal = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === 'U2', { since });
    expect(String(refusal.args.text)).toBe(REFUSAL);
    expect((await h.app.engine.get(jobId))?.batches.filter((b) => b.upscale)).toEqual([]);
    expect((await h.app.engine.get(jobId))?.state).toBe('completed');

    await h.click(progress(), upscale, 'U1');
    const { value: job } = await pollUntil(
      () => h.app.engine.get(jobId),
      (j) => j !== undefined && isJobFinished(j) && j.images.filter((image) => image.final).length === 2 && factsOf(j)?.delivered === true,
      { timeoutMs: 15_000, intervalMs: 20 },
    );
    const { value: done } = await pollUntil(async () => progress(), (message) => textOf(message).includes('review them in the thread'), {
      timeoutMs: 10_000,
      intervalMs: 20,
    });
    const said = textsOf(done).join('\n');
    expect(said).toContain('*Done: 4 images*');
    expect(said).toContain('✅ 2 approved · ❌ 0 rejected · ⏳ 2 pending · 2 upscaled · review them in the thread');
    expect(said).toContain('Drafts: drafts $0.040 + 2 upscales $0.004 = $0.044 vs $0.040 at full size (10% more)');
    expect(buttonsOf(done).map((b) => b.text.text)).toEqual([]);
    expect(h.fake.updatesOf(facts.channel, ts).some((version) => JSON.stringify(version.blocks).includes('*Upscaling 2 approved images*'))).toBe(true);

    // Exactly the approved two went to the upscaler; the new gallery uploads their final files.
    expect(job!.batches.filter((b) => b.upscale).map((b) => [b.upscale!.image, b.state])).toEqual([
      [1, 'done'],
      [3, 'done'],
    ]);
    expect(job!.images.map((image) => image.final?.file ?? null)).toEqual(['final/001.png', null, 'final/003.png', null]);
    expect(await filesIn(h.app, jobId, 'final')).toEqual(['001.png', '003.png']);
    expect(factsOf(job!)?.pages[0]?.ts).not.toBe(pageTs);
    const again = uploadsOf(h, jobId).slice(4);
    expect(again.map((file) => file.filename)).toEqual([1, 2, 3, 4].map((n) => `${jobId}-00${n}.png`));
    expect(await Promise.all(again.map(widthOf))).toEqual([768, 384, 768, 384]);
    const onDisk = await readFile(path.join(h.app.files.jobDir(jobId), 'final', '001.png'));
    expect(again[0]!.bytes?.equals(onDisk)).toBe(true);
  });
});

describe('Slack prompt lists', () => {
  it('runs a /imagine of 3 prompt lines × 4 images as one job with one progress message and a gallery page per prompt', async () => {
    const h = await slackHarness({ env: { CACHE: 'off' } });
    await h.imagine('--count 4 --provider local\na red fox in snow\na blue owl at dusk\na green frog on a leaf');
    const { ts, jobId } = await h.progressPost();
    const { job, facts } = await h.delivered(jobId);
    expect(job.images).toHaveLength(12);

    // One progress message; everything else went into its thread.
    expect(h.fake.messages(facts.channel).filter((m) => m.thread_ts === undefined).map((m) => m.ts)).toEqual([ts]);
    // The first line holds the job's flags: the prompts are lines 2 to 4.
    const headings = [
      'Prompt 1/3 · line 2: “a red fox in snow”',
      'Prompt 2/3 · line 3: “a blue owl at dusk”',
      'Prompt 3/3 · line 4: “a green frog on a leaf”',
    ];
    expect(facts.pages).toHaveLength(3);
    for (const [i, page] of facts.pages.entries()) {
      const said = textsOf(h.fake.message(facts.channel, page.ts!)!);
      expect(said).toContain(`*${headings[i]}*`);
      expect(headings.filter((heading) => said.some((text) => text.includes(heading)))).toEqual([headings[i]]);
    }
    // Each upload message holds one prompt's four images (a file's alt text is its prompt).
    const uploads = h.fake.calls('files.completeUploadExternal').filter((c) => c.ok);
    const prompts = uploads.map((call) => [...new Set((call.args.files as { id: string }[]).map((f) => h.fake.file(f.id)?.alt_text))]);
    expect(prompts).toEqual([['a red fox in snow'], ['a blue owl at dusk'], ['a green frog on a leaf']]);
    expect(uploads.map((call) => (call.args.files as unknown[]).length)).toEqual([4, 4, 4]);
  });
});

describe('Slack delivery to an S3-compatible bucket', () => {
  it('shows "Delivered to s3://…" with links once an image is approved, and the image link fetches the approved file', async () => {
    const s3 = await startS3Server();
    onCleanup(() => s3.close());
    // The AWS SDK reads credentials from its usual chain, the environment first.
    vi.stubEnv('AWS_ACCESS_KEY_ID', s3.credentials.accessKeyId);
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', s3.credentials.secretAccessKey);
    onCleanup(() => void vi.unstubAllEnvs());
    const h = await slackHarness({ env: { S3_BUCKET: s3.bucket, S3_ENDPOINT: s3.url, S3_REGION: s3.region, CACHE: 'off' } });
    await h.imagine('a lighthouse --count 2 --provider local');
    const { ts, jobId } = await h.progressPost();
    const { facts } = await h.delivered(jobId);
    await approve(h, jobId, facts.channel, facts.pages[0]!.ts!, 1);

    const { value: message } = await pollUntil(
      async () => h.fake.message(facts.channel, ts),
      (m) => textsOf(m ?? {}).some((text) => text.includes('|#1>')),
      { timeoutMs: 10_000, intervalMs: 20 },
    );
    const line = textsOf(message!).find((text) => text.startsWith('Delivered to '))!;
    expect(line).toMatch(new RegExp(`^Delivered to s3://${s3.bucket}/${jobId}/ \\(links valid 7 days\\): <http://127\\.0\\.0\\.1:\\d+/[^|>]+\\|manifest> · <`));
    expect(line).not.toContain('|#2>');
    const link = /<(http[^|>]+)\|#1>/.exec(line)?.[1];
    expect(link).toContain(`/${s3.bucket}/${jobId}/approved/001.png?`);
    const response = await fetch(link!);
    expect(response.status).toBe(200);
    const approved = await readFile(path.join(h.app.files.jobDir(jobId), 'approved', '001.png'));
    expect(Buffer.from(await response.arrayBuffer()).equals(approved)).toBe(true);
  });
});
