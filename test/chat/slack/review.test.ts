import { describe, expect, it } from 'vitest';
import { encodeAction, GONE, REFUSAL } from '../../../src/core/actions.js';
import { filesIn, readManifest } from '../../helpers.js';
import { button, slackHarness, textOf, type Harness } from './harness.js';

/** A finished job with its gallery posted: the page message and the progress message. */
async function galleryOf(h: Harness, text = 'a red fox --count 3') {
  await h.imagine(text);
  const { ts, jobId } = await h.progressPost();
  const { facts } = await h.delivered(jobId);
  const pageTs = facts.pages[0]!.ts!;
  return { jobId, ts, pageTs, page: () => h.fake.message('C1', pageTs)! };
}

/** The next ephemeral answer to `user` (chat.postEphemeral) after `since`. */
async function ephemeralTo(h: Harness, user: string, since: number): Promise<string> {
  const call = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === user, { since });
  return String(call.args.text);
}

describe('reviewing a Slack gallery', () => {
  it('the requester approves with one click: ✅ in the gallery message, the file moves, the summary follows', async () => {
    const h = await slackHarness();
    const { jobId, ts, pageTs, page } = await galleryOf(h);
    const since = h.fake.lastSeq;
    const res = await h.click(page(), button(page(), 'Approve', 2), 'U1');
    expect(res.status).toBe(200);

    const update = await h.fake.waitFor((c) => c.method === 'chat.update' && c.args.ts === pageTs, { since });
    expect(update.ok).toBe(true);
    expect(textOf(page())).toContain('✅ *#2* approved by name-U1');
    expect(button(page(), 'Approve', 2).style).toBe('primary');
    expect(button(page(), 'Undo', 2)).toBeDefined();
    expect(await filesIn(h.app, jobId, 'approved')).toEqual(['002.png']);
    expect(await filesIn(h.app, jobId, 'pending-review')).toEqual(['001.png', '003.png']);
    // The folder tells who approved which image, and when, without the store.
    const manifest = await readManifest(h.app, jobId);
    expect(manifest.images[1]).toMatchObject({ index: 2, file: 'approved/002.png', review: { status: 'approved', reviewedBy: 'name-U1' } });
    expect(manifest.images[1]!.review.reviewedAt).toMatch(/^\d{4}-\d{2}-\d{2}T[\d:.]+Z$/);
    expect(manifest.images.map((i) => i.review.status)).toEqual(['pending', 'approved', 'pending']);
    expect(manifest.summary).toMatchObject({ approved: 1, rejected: 0, pending: 2 });

    await h.fake.waitFor((c) => c.method === 'chat.update' && c.args.ts === ts && textOf({ blocks: c.args.blocks as unknown[] }).includes('✅ 1 approved'), { since });
    expect(h.fake.ephemerals()).toEqual([]);

    // Reject, then undo: each click is shown, and the file follows.
    const pageShows = (text: string, after: number) =>
      h.fake.waitFor((c) => c.method === 'chat.update' && c.args.ts === pageTs && textOf({ blocks: c.args.blocks as unknown[] }).includes(text), { since: after });
    await h.click(page(), button(page(), 'Reject', 3), 'U1');
    await pageShows('❌ *#3*', since);
    expect(await filesIn(h.app, jobId, 'rejected')).toEqual(['003.png']);
    const beforeUndo = h.fake.lastSeq;
    await h.click(page(), button(page(), 'Undo', 3), 'U1');
    await pageShows('⏳ *#3*', beforeUndo);
    expect(await filesIn(h.app, jobId, 'rejected')).toEqual([]);
  });

  it('someone else is refused, privately, and nothing changes', async () => {
    const h = await slackHarness();
    const { jobId, pageTs, page } = await galleryOf(h);
    const since = h.fake.lastSeq;
    await h.click(page(), button(page(), 'Approve', 1), 'U2');
    expect(await ephemeralTo(h, 'U2', since)).toBe(REFUSAL);
    expect(h.fake.ephemerals('C1').at(-1)).toMatchObject({ user: 'U2', thread_ts: h.fake.message('C1', pageTs)?.thread_ts });
    expect(h.fake.calls().slice(since).filter((c) => c.method === 'chat.update')).toEqual([]);
    expect(await filesIn(h.app, jobId, 'approved')).toEqual([]);
    expect((await h.app.engine.get(jobId))?.images.map((i) => i.review.status)).toEqual(['pending', 'pending', 'pending']);
  });

  it('a workspace admin and a configured reviewer may review anyone’s images', async () => {
    const h = await slackHarness({ fakeOptions: { users: { UADMIN: { name: 'ada', is_admin: true } } }, env: { SLACK_REVIEWERS: 'UREV, UOTHER' } });
    const { jobId, pageTs, page } = await galleryOf(h);
    await h.click(page(), button(page(), 'Reject', 1), 'UADMIN');
    await h.fake.waitFor((c) => c.method === 'chat.update' && c.args.ts === pageTs && textOf({ blocks: c.args.blocks as unknown[] }).includes('❌ *#1* rejected by name-UADMIN'));
    expect(await filesIn(h.app, jobId, 'rejected')).toEqual(['001.png']);
    expect(h.fake.calls('users.info').map((c) => c.args.user)).toEqual(['UADMIN']);

    await h.click(page(), button(page(), 'Approve', 2), 'UREV');
    await h.fake.waitFor((c) => c.method === 'chat.update' && c.args.ts === pageTs && textOf({ blocks: c.args.blocks as unknown[] }).includes('✅ *#2* approved by name-UREV'));
    expect(await filesIn(h.app, jobId, 'approved')).toEqual(['002.png']);
    // Reviewers come from config: no users.info needed for them.
    expect(h.fake.calls('users.info').map((c) => c.args.user)).toEqual(['UADMIN']);
  });

  it('answers forged or unknown values, and refuses a button pointing at another team’s job', async () => {
    const h = await slackHarness();
    const { jobId, page } = await galleryOf(h, 'a fox --count 1');
    const forge = (value: string) => ({ action_id: value, value, text: { text: 'Approve' } });

    let since = h.fake.lastSeq;
    expect((await h.click(page(), forge('af:a:not-a-job:1'), 'U1')).status).toBe(200);
    expect(await ephemeralTo(h, 'U1', since)).toBe(GONE);

    since = h.fake.lastSeq;
    await h.click(page(), forge(encodeAction({ kind: 'review', jobId: '20990101-deadbeef', image: 1, status: 'approved' })), 'U1');
    expect(await ephemeralTo(h, 'U1', since)).toBe(GONE);

    since = h.fake.lastSeq;
    await h.click(page(), forge(encodeAction({ kind: 'review', jobId, image: 9, status: 'approved' })), 'U1');
    expect(await ephemeralTo(h, 'U1', since)).toBe(`Image 9 is not part of job ${jobId}.`);

    since = h.fake.lastSeq;
    await h.click(page(), button(page(), 'Approve', 1), 'U1', 'T2');
    expect(await ephemeralTo(h, 'U1', since)).toBe(REFUSAL);
    expect(await filesIn(h.app, jobId, 'approved')).toEqual([]);
  });

  it('the requester cancels a running job from its progress message; others may not', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '400' } });
    await h.imagine('a long fox --count 12');
    const { ts, jobId } = await h.progressPost();
    const progress = () => h.fake.message('C1', ts)!;
    const cancel = button(progress(), 'Cancel');

    const since = h.fake.lastSeq;
    await h.click(progress(), cancel, 'U2');
    expect(await ephemeralTo(h, 'U2', since)).toBe(REFUSAL);
    expect((await h.app.engine.get(jobId))?.canceledBy).toBeUndefined();

    await h.click(progress(), cancel, 'U1');
    const job = await h.app.engine.waitFor(jobId);
    await h.fake.waitFor((c) => c.method === 'chat.update' && c.args.ts === ts && String(c.args.text).startsWith('Canceled:'));
    expect(job.state).toBe('canceled');
    expect(job.canceledBy).toBe('name-U1');
    expect(textOf(progress())).toContain('Canceled:');
    expect(() => button(progress(), 'Cancel')).toThrow();
  });
});
