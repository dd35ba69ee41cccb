import { describe, expect, it } from 'vitest';
import { parseImagine } from '../../../commands/imagine.js';
import { decodeAction } from '../../../src/core/actions.js';
import { ProviderError, type BatchCall } from '../../../src/core/provider.js';
import { LocalProvider } from '../../../src/providers/local.js';
import { postSlashCommand } from '../../fakes/slack.js';
import { filesIn } from '../../helpers.js';
import { buttonsOf, SECRET, slackHarness, textOf } from './harness.js';

describe('/imagine on Slack', () => {
  it('acks at once, edits one channel message with batch progress, then posts a gallery of exactly `count` images', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '150' } });
    const res = await h.imagine('a red fox --count 6', { channel_id: 'C1', response_url: h.fake.responseUrl('r1') });
    expect(res).toMatchObject({ status: 200, body: '' });

    const { ts, jobId } = await h.progressPost('C1');
    const { job, facts } = await h.delivered(jobId);

    expect(job.requester).toEqual({ tenant: 'T1', userId: 'U1', userName: 'alice', platform: 'slack', channelId: 'C1' });
    expect(facts).toMatchObject({ channel: 'C1', ts, delivered: true });
    // Progress went through chat.update of that one message, with "Batch i/n", ending in the summary.
    const updates = h.fake.updatesOf('C1', ts);
    expect(updates.some((u) => /Batch [12]\/2/.test(textOf(u)))).toBe(true);
    expect(updates.every((u) => u.via === 'chat.update')).toBe(true);
    const final = textOf(h.fake.message('C1', ts));
    expect(final).toContain('Done: 6 images');
    expect(final).toContain('⏳ 6 pending');
    expect(final).toContain('local · local');
    expect(buttonsOf(h.fake.message('C1', ts))).toEqual([]); // no Cancel once done

    // The images are uploaded into the message's thread, and each one has its review buttons.
    const uploaded = h.fake.files().filter((f) => f.shares.some((s) => s.channel_id === 'C1' && s.thread_ts === ts));
    expect(uploaded).toHaveLength(6);
    expect(uploaded.every((f) => f.bytes?.subarray(1, 4).toString() === 'PNG')).toBe(true);
    expect(uploaded.map((f) => f.title).sort()).toEqual(job.images.map((i) => `#${i.index} · seed ${i.seed}`).sort());
    const gallery = h.fake.thread('C1', ts);
    expect(gallery).toHaveLength(1);
    const actions = buttonsOf(gallery[0]).map((b) => decodeAction(b.value));
    expect(actions.filter((a) => a?.kind === 'review' && a.status === 'approved').map((a) => a?.kind === 'review' && a.image)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(actions.filter((a) => a?.kind === 'review' && a.status === 'rejected')).toHaveLength(6);
    expect(await filesIn(h.app, jobId, 'pending-review')).toHaveLength(6);
    // Nothing went through response_url.
    expect(h.fake.responses('r1')).toEqual([]);
  });

  it('pages a large gallery within Block Kit limits', async () => {
    // Per-image pages (21 images would be contact sheets at the default GALLERY_INLINE_MAX of 20).
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '0', LOCAL_CONCURRENCY: '4', GALLERY_INLINE_MAX: '30' } });
    await h.imagine('a lighthouse --count 21');
    const { ts, jobId } = await h.progressPost();
    const { facts } = await h.delivered(jobId);
    const pages = h.fake.thread('C1', ts);
    expect(pages).toHaveLength(3);
    expect(facts.pages?.map((p) => p.ts)).toEqual(pages.map((p) => p.ts));
    expect(pages.map((p) => buttonsOf(p).filter((b) => b.text.text === 'Approve').length)).toEqual([10, 10, 1]);
    expect(pages.every((p) => (p.blocks?.length ?? 0) <= 50)).toBe(true);
    expect(h.fake.calls('files.completeUploadExternal').map((c) => (c.args.files as unknown[]).length)).toEqual([10, 10, 1]);
  });

  it('a finished job with a failed batch says which images were not made, and why', async () => {
    // A provider that refuses the last (2-image) call of a 6-image job, for good.
    class RefusingProvider extends LocalProvider {
      override async submit(call: BatchCall): Promise<string> {
        if (call.count === 2) throw new ProviderError('invalid', 'the prompt was refused <by policy>');
        return super.submit(call);
      }
    }
    const h = await slackHarness({ providers: { local: new RefusingProvider({ latencyMs: 20 }) } });
    await h.imagine('a fox --count 6');
    const { ts, jobId } = await h.progressPost();
    const { job } = await h.delivered(jobId);
    expect(job.images).toHaveLength(4);
    const final = textOf(h.fake.message('C1', ts));
    expect(final).toContain('Done, with failures: 4 of 6 images');
    expect(final).toContain('⏳ 4 pending · 2 of 6 not made');
    expect(final).toContain('Batch 2: 2 images not made (the prompt was refused &lt;by policy&gt;)');
    expect(buttonsOf(h.fake.thread('C1', ts)[0]).filter((b) => b.text.text === 'Approve')).toHaveLength(4);
  });

  it('escapes the prompt for mrkdwn, so it cannot ping a channel or forge a link', async () => {
    const h = await slackHarness();
    await h.imagine('a <!channel> & <https://evil.example|fox> --count 1');
    const { call, jobId } = await h.progressPost();
    const text = textOf({ text: String(call.args.text), blocks: call.args.blocks as unknown[] });
    expect(text).toContain('a &lt;!channel&gt; &amp; &lt;https://evil.example|fox&gt;');
    expect(text).not.toContain('<!channel>');
    expect((await h.app.engine.get(jobId))?.request.prompt).toBe('a <!channel> & <https://evil.example|fox>');
  });

  it('inline flags reach the core exactly as typed options do on Discord', async () => {
    const h = await slackHarness();
    await h.imagine('a red fox --count 6 --ar 16:9 --seed 42');
    const { jobId } = await h.progressPost();
    const job = await h.app.engine.get(jobId);
    expect(job?.request).toEqual({ ...parseImagine({ prompt: 'a red fox', count: 6, ar: '16:9', seed: 42 }, h.app.limits), seed: 42 });
    expect(job?.batches.map((b) => b.size)).toEqual([4, 2]);
  });

  it('answers `/imagine help` in the ack, ephemerally, with every option and its range', async () => {
    const h = await slackHarness();
    const res = await h.imagine('help', { response_url: h.fake.responseUrl('help') });
    expect(res.status).toBe(200);
    const body = JSON.parse(res.body) as { response_type: string; text: string };
    expect(body.response_type).toBe('ephemeral');
    for (const part of ['--count', '(1–100)', '--ar', '--seed', '--provider', '--no']) expect(body.text).toContain(part);
    expect(h.fake.responses('help')).toEqual([]);
    expect(h.fake.calls().map((c) => c.method)).toEqual(['auth.test']);
  });

  it('answers a bad option in the ack with its name, range and value, and starts nothing', async () => {
    const h = await slackHarness();
    const res = await h.imagine('a fox --count 0', { response_url: h.fake.responseUrl('bad') });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ response_type: 'ephemeral', text: 'Expected `count` to be an integer from 1 to 100, got `0`.', unfurl_links: false, unfurl_media: false });
    const unknown = JSON.parse((await h.imagine('a fox --colour red')).body) as { text: string };
    expect(unknown.text).toMatch(/^Unknown option `--colour`/);
    expect(await h.app.engine.listJobs('T1')).toEqual([]);
    expect(h.fake.calls('chat.postMessage')).toEqual([]);
    expect(h.fake.responses('bad')).toEqual([]);
  });

  it('answers a refusal after the ack (quota) once, through response_url', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '1000', USER_MAX_ACTIVE_JOBS: '1' } });
    await h.imagine('a slow fox --count 1');
    await h.progressPost();
    await h.imagine('another fox --count 1', { response_url: h.fake.responseUrl('second') });
    await h.fake.waitFor((c) => c.method === 'response_url');
    const responses = h.fake.responses('second');
    expect(responses).toHaveLength(1);
    expect(responses[0]?.body).toMatchObject({ response_type: 'ephemeral', text: expect.stringContaining('You already have 1 job') });
    expect(await h.app.engine.listJobs('T1')).toHaveLength(1);
  });

  it('/jobs lists the caller’s running jobs, ephemerally, in the ack', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '1000' } });
    expect(JSON.parse((await h.jobs()).body)).toEqual({ response_type: 'ephemeral', text: 'You have no queued or running jobs here.', unfurl_links: false, unfurl_media: false });
    await h.imagine('a slow fox --count 2');
    const { jobId } = await h.progressPost();
    const body = JSON.parse((await h.jobs()).body) as { response_type: string; text: string };
    expect(body.response_type).toBe('ephemeral');
    expect(body.text).toContain(jobId);
    expect(JSON.parse((await h.jobs({ user_id: 'U2' })).body).text).toBe('You have no queued or running jobs here.');
  });

  it('refuses a bad signature and a timestamp older than 5 minutes with 401, and starts no job', async () => {
    const h = await slackHarness();
    const stale = Math.floor(Date.now() / 1000) - 5 * 60 - 10;
    const bad = await postSlashCommand(h.url, SECRET, { text: 'an evil fox' }, { badSignature: true });
    const old = await postSlashCommand(h.url, SECRET, { text: 'a stale fox' }, { timestamp: stale });
    expect([bad.status, old.status]).toEqual([401, 401]);
    expect(await h.app.engine.listJobs('T1')).toEqual([]);
    expect(h.fake.calls().map((c) => c.method)).toEqual(['auth.test']);
    // The same request, signed properly and on time, is taken.
    expect((await postSlashCommand(h.url, SECRET, { text: 'a fair fox --count 1' })).status).toBe(200);
    await h.progressPost();
    expect((await h.app.engine.listJobs('T1')).map((j) => j.job.request.prompt)).toEqual(['a fair fox']);
  });
});
