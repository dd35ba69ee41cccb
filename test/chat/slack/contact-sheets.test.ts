import { describe, expect, it } from 'vitest';
import { REFUSAL } from '../../../src/core/actions.js';
import { pageLayouts, sheetMessage } from '../../../src/chat/slack/sheets.js';
import type { ImageRecord, Job, ReviewStatus } from '../../../src/core/types.js';
import { verifyReviewToken } from '../../../src/web/review-token.js';
import { postBlockAction, postViewSubmission, type FakeSlackMessage } from '../../fakes/slack.js';
import { readContactSheet } from '../../sheet-reader.js';
import { filesIn, readManifest } from '../../helpers.js';
import { button, buttonsOf, SECRET, slackHarness, textOf, textsOf, unescapeMrkdwn, type Harness } from './harness.js';

const SHEETS = { GALLERY_INLINE_MAX: '20', LOCAL_LATENCY_MS: '5', LOCAL_CONCURRENCY: '4' };
const REVIEW_SECRET = 'r'.repeat(40);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A finished job shown as contact sheets: its sheet messages (under each sheet's upload) by number. */
async function sheetsOf(h: Harness, text = 'a red fox --count 60') {
  await h.imagine(text);
  const { ts, jobId } = await h.progressPost();
  const { facts } = await h.delivered(jobId);
  const sheetTs = facts.pages.map((page) => page.ts!);
  return { jobId, ts, sheetTs, sheet: (n: number): FakeSlackMessage => h.fake.message('C1', sheetTs[n - 1]!)! };
}

const statuses = async (h: Harness, jobId: string) => (await h.app.engine.get(jobId))!.images.map((image) => image.review.status);
const numbersWith = (list: string[], status: string) => list.flatMap((s, i) => (s === status ? [i + 1] : []));

/** The next chat.update of message `ts` whose text says `needle`. */
const updateSaying = (h: Harness, ts: string, needle: string, since: number) =>
  h.fake.waitFor((c) => c.method === 'chat.update' && c.args.ts === ts && textOf({ text: String(c.args.text), blocks: c.args.blocks as unknown[] }).includes(needle), {
    since,
    timeoutMs: 10_000,
  });

/** Clicks "Review by number" on a sheet and returns the modal Slack opened. */
async function openNumbers(h: Harness, sheet: FakeSlackMessage, user = 'U1') {
  const before = h.fake.views().length;
  const since = h.fake.lastSeq;
  const trigger = `${Date.now()}.1.${'b'.repeat(8)}${before}`;
  const numbers = button(sheet, 'Review by number');
  await postBlockAction(h.url, SECRET, {
    user: { id: user, username: `name-${user}`, team_id: 'T1' },
    team: 'T1',
    channel: sheet.channel,
    message: sheet,
    actions: [{ action_id: numbers.action_id, value: numbers.value }],
    trigger_id: trigger,
  });
  const call = await h.fake.waitFor((c) => c.method === 'views.open', { since });
  // Opened with the click's own trigger_id (Slack accepts each once, within 3 s of the click).
  expect(call.args.trigger_id).toBe(trigger);
  expect(call.ok).toBe(true);
  const opened = h.fake.views();
  expect(opened).toHaveLength(before + 1);
  return opened.at(-1)!.view;
}

function submit(h: Harness, view: Record<string, unknown>, values: { approve?: string; reject?: string }, user = 'U1') {
  return postViewSubmission(h.url, SECRET, {
    view,
    user: { id: user, username: `name-${user}` },
    values: { approve: { numbers: values.approve ?? null }, reject: { numbers: values.reject ?? null } },
  });
}

describe('contact sheets on Slack', () => {
  it('a 60-image job posts 3 sheets (25/25/10 tiles, numbered on the image) and no per-image uploads', async () => {
    const h = await slackHarness({ env: SHEETS });
    const { jobId, ts, sheetTs, sheet } = await sheetsOf(h);
    expect(sheetTs).toHaveLength(3);

    const files = h.fake.files();
    expect(files.map((f) => f.filename)).toEqual(['sheet-1.jpg', 'sheet-2.jpg', 'sheet-3.jpg']);
    expect(files.every((f) => f.shares.length === 1 && f.shares[0]!.thread_ts === ts && f.shares[0]!.channel_id === 'C1')).toBe(true);
    expect(files.map((f) => f.title)).toEqual(['Contact sheet 1/3 · images 1-25', 'Contact sheet 2/3 · images 26-50', 'Contact sheet 3/3 · images 51-60']);
    const read = await Promise.all(files.map((f) => readContactSheet(f.bytes!)));
    expect(read.map((r) => r.tiles)).toEqual([25, 25, 10]);
    expect(read.map((r) => r.numbers)).toEqual([range(1, 25), range(26, 50), range(51, 60)]);

    // Each sheet's message sits in the thread under its upload, with its counts and quick actions.
    expect(h.fake.thread('C1', ts).map((m) => m.ts)).toEqual(sheetTs);
    expect(textOf(sheet(2))).toContain('Contact sheet 2/3 · images 26-50');
    expect(textOf(sheet(2))).toContain('✅ 0 approved · ❌ 0 rejected · ⏳ 25 pending');
    expect(textOf(sheet(3))).toContain('⏳ 10 pending');
    expect(buttonsOf(sheet(1)).map((b) => b.text.text)).toEqual(['Approve all pending', 'Reject all pending', 'Review by number']);
    expect(await filesIn(h.app, jobId, 'pending-review')).toHaveLength(60);
  });

  it('“Approve all pending” on sheet 1 approves exactly images 1-25; the sheet is re-rendered, the others are not', async () => {
    const h = await slackHarness({ env: SHEETS });
    const { jobId, ts, sheetTs, sheet } = await sheetsOf(h);
    const since = h.fake.lastSeq;
    expect((await h.click(sheet(1), button(sheet(1), 'Approve all pending'), 'U1')).status).toBe(200);

    await updateSaying(h, sheetTs[0]!, '✅ 25 approved · ❌ 0 rejected · ⏳ 0 pending', since);
    expect(numbersWith(await statuses(h, jobId), 'approved')).toEqual(range(1, 25));
    expect(await filesIn(h.app, jobId, 'approved')).toEqual(range(1, 25).map((n) => `${String(n).padStart(3, '0')}.png`));
    expect(await filesIn(h.app, jobId, 'pending-review')).toHaveLength(35);
    const manifest = await readManifest(h.app, jobId);
    expect(manifest.images.filter((i) => i.review.status === 'approved').map((i) => i.index)).toEqual(range(1, 25));
    expect(manifest.images[0]).toMatchObject({ file: 'approved/001.png', review: { status: 'approved', reviewedBy: 'name-U1' } });
    expect(manifest.summary).toMatchObject({ approved: 25, rejected: 0, pending: 35 });

    // Nothing left pending on sheet 1: no bulk buttons there; sheets 2 and 3 were not touched.
    expect(textOf(sheet(1))).toContain('✅ 1-25');
    expect(buttonsOf(sheet(1)).map((b) => b.text.text)).toEqual(['Review by number']);
    await updateSaying(h, ts, '✅ 25 approved', since);
    expect(h.fake.calls('chat.update').filter((c) => c.seq > since && (c.args.ts === sheetTs[1] || c.args.ts === sheetTs[2]))).toEqual([]);
    expect(h.fake.ephemerals()).toEqual([]);
  });

  it('a stranger’s “Reject all pending” is refused privately and changes nothing', async () => {
    const h = await slackHarness({ env: SHEETS, fakeOptions: { users: { U2: { name: 'bob' } } } });
    const { jobId, sheet } = await sheetsOf(h, 'a red fox --count 21');
    const since = h.fake.lastSeq;
    await h.click(sheet(1), button(sheet(1), 'Reject all pending'), 'U2');
    const call = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === 'U2', { since });
    expect(call.args.text).toBe(REFUSAL);
    expect(new Set(await statuses(h, jobId))).toEqual(new Set(['pending']));
    expect(await filesIn(h.app, jobId, 'rejected')).toEqual([]);
  });

  it('“Review by number” opens a dialog; `1-5, 8` approved applies exactly those, confirmed privately', async () => {
    const h = await slackHarness({ env: SHEETS });
    const { jobId, sheetTs, sheet } = await sheetsOf(h, 'a red fox --count 30');
    const view = await openNumbers(h, sheet(1));
    expect(view).toMatchObject({ type: 'modal', callback_id: expect.any(String), title: { text: 'Review by number' } });
    expect((view.blocks as { type: string; block_id?: string }[]).filter((b) => b.type === 'input').map((b) => b.block_id)).toEqual(['approve', 'reject']);

    const since = h.fake.lastSeq;
    const res = await submit(h, view, { approve: '1-5, 8', reject: '  ' });
    expect(res.status).toBe(200);
    expect(res.body).toBe(''); // closes the dialog
    const confirmation = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === 'U1', { since });
    expect(confirmation.args.text).toBe('Approved 6 images (1-5, 8).');
    expect(confirmation.args.thread_ts).toBe(sheet(1).thread_ts);

    expect(numbersWith(await statuses(h, jobId), 'approved')).toEqual([1, 2, 3, 4, 5, 8]);
    expect(await filesIn(h.app, jobId, 'approved')).toEqual(['001.png', '002.png', '003.png', '004.png', '005.png', '008.png']);
    const manifest = await readManifest(h.app, jobId);
    expect(manifest.images.filter((i) => i.review.status === 'approved').map((i) => i.index)).toEqual([1, 2, 3, 4, 5, 8]);
    await updateSaying(h, sheetTs[0]!, '✅ 6 approved · ❌ 0 rejected · ⏳ 19 pending', since);
    expect(textOf(sheet(1))).toContain('✅ 1-5, 8');

    // Both fields at once: each applied.
    const again = await openNumbers(h, sheet(2));
    const before = h.fake.lastSeq;
    await submit(h, again, { approve: '26', reject: '27-28' });
    const both = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === 'U1', { since: before });
    expect(both.args.text).toBe('Approved 1 image (26). Rejected 2 images (27-28).');
    expect(await filesIn(h.app, jobId, 'rejected')).toEqual(['027.png', '028.png']);
  });

  it('bad numbers are answered on their field in one line, and nothing changes', async () => {
    const h = await slackHarness({ env: SHEETS });
    const { jobId, sheet } = await sheetsOf(h, 'a red fox --count 30');
    const view = await openNumbers(h, sheet(1));
    const errorsOf = async (values: { approve?: string; reject?: string }, user = 'U1') => {
      const res = await submit(h, view, values, user);
      expect(res.status).toBe(200);
      const body = JSON.parse(res.body) as { response_action: string; errors: Record<string, string> };
      expect(body.response_action).toBe('errors');
      return body.errors;
    };

    expect(await errorsOf({ approve: '1-5, x' })).toEqual({ approve: 'Approve: expected image numbers from 1 to 30 such as 1-5, 8, got "x" in "1-5, x"' });
    expect(await errorsOf({ reject: '31' })).toEqual({ reject: 'Reject: expected image numbers from 1 to 30 such as 1-5, 8; this job has no image 31' });
    expect(await errorsOf({})).toEqual({ approve: 'Give the numbers of images to approve or to reject, such as 1-5, 8.' });
    expect(await errorsOf({ approve: '1-8', reject: '8, 9' })).toEqual({ reject: 'Image 8 is under both Approve and Reject: choose one.' });
    // Who submits is checked again: a stranger is refused on the form.
    expect(await errorsOf({ approve: '1' }, 'U2')).toEqual({ approve: REFUSAL });
    const forged = await postViewSubmission(h.url, SECRET, { view: { ...view, private_metadata: '{"job":"not a job"}' }, user: 'U1', values: { approve: { numbers: '1' } } });
    expect(JSON.parse(forged.body)).toMatchObject({ response_action: 'errors', errors: { approve: 'This gallery is no longer available.' } });

    expect(new Set(await statuses(h, jobId))).toEqual(new Set(['pending']));
    expect(await filesIn(h.app, jobId, 'approved')).toEqual([]);
    expect(await filesIn(h.app, jobId, 'rejected')).toEqual([]);
    expect(h.fake.ephemerals()).toEqual([]);
  });

  it('a review made elsewhere (the review page, the CLI: engine.reviewMany) re-renders the sheet message', async () => {
    const h = await slackHarness({ env: SHEETS });
    const { jobId, sheetTs } = await sheetsOf(h, 'a red fox --count 30');
    const since = h.fake.lastSeq;
    await h.app.engine.reviewMany(jobId, [27, 29], 'rejected', { id: 'web', name: 'ada' });
    await updateSaying(h, sheetTs[1]!, '✅ 0 approved · ❌ 2 rejected · ⏳ 3 pending', since);
    expect(h.fake.calls('chat.update').filter((c) => c.seq > since && c.args.ts === sheetTs[0])).toEqual([]);
  });

  it('with PUBLIC_URL and REVIEW_SECRET the requester gets a private signed link; a stranger gets the refusal and no link', async () => {
    const h = await slackHarness({ env: { ...SHEETS, PUBLIC_URL: 'https://bot.example.com', REVIEW_SECRET } });
    const { jobId, sheet } = await sheetsOf(h, 'a red fox --count 21');
    const browser = button(sheet(1), 'Review in browser');

    let since = h.fake.lastSeq;
    await h.click(sheet(1), browser, 'U1');
    const call = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === 'U1', { since });
    expect(call.args.unfurl_links).toBe('false');
    const url = /<(https:\/\/bot\.example\.com\/review\/[^|>]+)\|/.exec(String(call.args.text))?.[1];
    expect(url).toBeDefined();
    const link = new URL(url!);
    expect(link.pathname).toBe(`/review/${jobId}`);
    const claims = verifyReviewToken(REVIEW_SECRET, link.searchParams.get('t')!, jobId, Date.now());
    expect(claims).toMatchObject({ job: jobId, tenant: 'T1', userId: 'U1', moderator: false });
    expect(verifyReviewToken(REVIEW_SECRET, link.searchParams.get('t')!, jobId, Date.now() + 25 * 3_600_000)).toMatchObject({ refused: expect.stringContaining('expired') });
    expect(String(call.args.text)).toMatch(/works until <!date\^\d+\^/);

    since = h.fake.lastSeq;
    await h.click(sheet(1), browser, 'U2');
    const refusal = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === 'U2', { since });
    expect(refusal.args.text).toBe(REFUSAL);
    expect(h.fake.ephemerals().filter((e) => e.user === 'U2' && JSON.stringify(e).includes('/review/'))).toEqual([]);
  });

  it('without PUBLIC_URL and REVIEW_SECRET no sheet offers the browser, and small jobs keep the per-image gallery', async () => {
    const h = await slackHarness({ env: SHEETS });
    const { sheet } = await sheetsOf(h, 'a red fox --count 21');
    expect(buttonsOf(sheet(1)).map((b) => b.text.text)).not.toContain('Review in browser');
    expect(h.fake.files().map((f) => f.filename)).toEqual(['sheet-1.jpg']);

    await h.imagine('a small fox --count 3');
    const { jobId } = await h.progressPost('C1', h.fake.lastSeq);
    const { facts } = await h.delivered(jobId);
    const page = h.fake.message('C1', facts.pages[0]!.ts!)!;
    expect(button(page, 'Approve', 2)).toBeDefined();
    expect(h.fake.files().filter((f) => f.filename.startsWith(`${jobId}-`))).toHaveLength(3);
  });
});

describe('a sheet message', () => {
  const HOSTILE = '<!channel> <https://evil.example|click> & *bold*';
  const image = (index: number, prompt: number, status: ReviewStatus = 'pending'): ImageRecord => ({
    index,
    batchIndex: 0,
    file: `pending-review/${String(index).padStart(3, '0')}.png`,
    width: 64,
    height: 64,
    nsfw: false,
    contentType: 'image/png',
    review: { status },
    prompt,
  });
  const job: Job = {
    id: '20250101-0123abcd',
    createdAt: '2025-01-01T00:00:00.000Z',
    updatedAt: '2025-01-01T00:00:00.000Z',
    requester: { tenant: 'T1', userId: 'U1', platform: 'slack', channelId: 'C1' },
    request: {
      prompt: 'a fox',
      count: 30,
      provider: 'local',
      model: 'local',
      aspectRatio: '1:1',
      seed: 1,
      prompts: [
        { prompt: 'a fox', count: 25, lines: [{ line: 1, count: 25 }] },
        { prompt: HOSTILE, count: 5, lines: [{ line: 2, count: 5 }] },
      ],
    },
    state: 'completed',
    batches: [],
    images: [...range(1, 25).map((n) => image(n, 0)), image(26, 1, 'approved'), ...range(27, 30).map((n) => image(n, 1))],
  };

  it('never mixes prompts, and escapes the prompt heading so it cannot mention or link', () => {
    const layouts = pageLayouts(job, 20);
    expect(layouts.map((l) => l.images)).toEqual([range(1, 25), range(26, 30)]);
    const message = sheetMessage(job, layouts[1]!, { browser: false });
    const texts = textsOf(message);
    expect(texts.join('\n')).not.toMatch(/<[!h]/);
    expect(texts.some((t) => unescapeMrkdwn(t).includes(`“${HOSTILE}”`))).toBe(true);
    expect(texts.join('\n')).toContain('✅ 1 approved · ❌ 0 rejected · ⏳ 4 pending');
    expect(texts.join('\n')).toContain('✅ 26');
  });
});
