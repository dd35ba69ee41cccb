import { describe, expect, it } from 'vitest';
import { isJobFinished } from '../../../src/core/engine.js';
import { pollUntil } from '../../fakes/http.js';
import { startFakeSlack } from '../../fakes/slack.js';
import { onCleanup, tempDir } from '../../helpers.js';
import { factsOf, slackHarness, textOf } from './harness.js';

describe('Slack adapter under trouble', () => {
  it('not_in_channel: tells the user how to invite the bot, once; the job runs and its gallery lands after the invite', async () => {
    const h = await slackHarness();
    const reopen = h.fake.notInChannel('C2');
    await h.imagine('a shy fox --count 2', { channel_id: 'C2', response_url: h.fake.responseUrl('nic') });

    await h.fake.waitFor((c) => c.method === 'response_url');
    const [hint] = h.fake.responses('nic');
    expect(hint?.body).toMatchObject({ response_type: 'ephemeral', text: expect.stringContaining('`/invite @Art Factory`') });
    const jobId = /Job `(\d{8}-[0-9a-f]{8})`/.exec(JSON.stringify(hint?.body))?.[1];
    expect(jobId).toBeDefined();

    // The job still runs; at its end the bot tries again, and is still refused.
    expect((await h.app.engine.waitFor(jobId!)).state).toBe('completed');
    await pollUntil(
      async () => h.fake.calls('chat.postMessage').filter((c) => c.error === 'not_in_channel').length,
      (refused) => refused >= 2,
    );
    expect(h.fake.messages('C2')).toEqual([]);

    // Invited: member_joined_channel releases the final message and the gallery.
    reopen();
    expect((await h.botJoined('C2')).status).toBe(200);
    const { facts } = await h.delivered(jobId!);
    expect(facts.channel).toBe('C2');
    expect(textOf(h.fake.message('C2', facts.ts))).toContain('Done: 2 images');
    expect(h.fake.files().filter((f) => f.shares.some((s) => s.channel_id === 'C2' && s.thread_ts === facts.ts))).toHaveLength(2);
    // response_url was used exactly once for this command.
    expect(h.fake.responses('nic')).toHaveLength(1);
  });

  it('survives chat.update rate limits: that message waits Retry-After, and the final state still lands', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '150' } });
    h.fake.rateLimit('chat.update', { retryAfterSeconds: 1, times: 2 });
    await h.imagine('a busy fox --count 6');
    const { ts, jobId } = await h.progressPost();
    await h.delivered(jobId);
    const statuses = h.fake.calls('chat.update').filter((c) => c.args.ts === ts).map((c) => c.status);
    expect(statuses.slice(0, 2)).toEqual([429, 429]);
    expect(statuses.at(-1)).toBe(200);
    expect(textOf(h.fake.message('C1', ts))).toContain('Done: 6 images');
    expect(h.fake.thread('C1', ts)).toHaveLength(1);
  });

  it('edits one message at most once per 2 s: a burst of progress events becomes a few edits', async () => {
    const h = await slackHarness({ updateIntervalMs: 2000, env: { LOCAL_LATENCY_MS: '20' } });
    let events = 0;
    h.app.engine.on('progress', (_, job) => void (job.requester.platform === 'slack' && (events += 1)));
    await h.imagine('a quick fox --count 8');
    const { ts, jobId } = await h.progressPost();
    // The gallery follows the final state, which waited for the interval after the post.
    await h.delivered(jobId, h.app, { waitForNote: false });
    const edits = h.fake.calls('chat.update').filter((c) => c.args.ts === ts);
    expect(events).toBeGreaterThanOrEqual(12);
    // Every intermediate state was superseded: one edit, the final one.
    expect(edits.length).toBeLessThanOrEqual(2);
    expect(textOf(h.fake.message('C1', ts))).toContain('Done: 8 images');
  });

  it('a restart mid-job finishes the same message', async () => {
    const dir = await tempDir();
    const fake = await startFakeSlack();
    onCleanup(() => fake.close());
    const env = { LOCAL_LATENCY_MS: '300' };

    const first = await slackHarness({ fake, dir, env });
    await first.imagine('a patient fox --count 8');
    const { ts, jobId } = await first.progressPost();
    await pollUntil(
      () => first.app.engine.get(jobId),
      (job) => (job?.images.length ?? 0) >= 1 && factsOf(job!)?.ts === ts,
      { timeoutMs: 10_000 },
    );
    const running = await first.app.engine.get(jobId);
    expect(running && isJobFinished(running)).toBe(false);
    await first.adapter.stop();
    await first.app.close();

    const restartedAt = fake.lastSeq;
    const second = await slackHarness({ fake, dir, env });
    const { job, facts } = await second.delivered(jobId);
    expect(job.state).toBe('completed');
    expect(facts.ts).toBe(ts);
    expect(fake.messages('C1').filter((m) => m.thread_ts === undefined).map((m) => m.ts)).toEqual([ts]);
    expect(textOf(fake.message('C1', ts))).toContain('Done: 8 images');
    // The new process edited the old message (its ts came from job.chat.slack, not from memory).
    expect(fake.calls('chat.update').filter((c) => c.seq > restartedAt && c.args.ts === ts && c.ok).length).toBeGreaterThan(0);
    expect(fake.files().filter((f) => f.shares.some((s) => s.thread_ts === ts))).toHaveLength(8);
  });
});
