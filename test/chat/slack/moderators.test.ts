/**
 * Who may review someone else's images in Slack: a workspace admin or owner, as users.info says. A
 * lookup that fails says nothing about the clicker, so it must refuse — never grant the right.
 */
import { describe, expect, it } from 'vitest';
import { REFUSAL } from '../../../src/core/actions.js';
import { filesIn } from '../../helpers.js';
import { button, slackHarness, textOf, type Harness } from './harness.js';

/** U1's finished job of 2 images, its gallery page posted. */
async function galleryOf(h: Harness) {
  await h.imagine('a fox --count 2');
  const { jobId } = await h.progressPost();
  const { facts } = await h.delivered(jobId);
  const pageTs = facts.pages[0]!.ts!;
  return { jobId, pageTs, page: () => h.fake.message('C1', pageTs)! };
}

/** How users.info fails: Slack's error answer, an HTTP 500, a rate limit. */
const FAILURES: [string, (h: Harness) => void][] = [
  ['an error answer', (h) => h.fake.failNext('users.info', 'internal_error')],
  ['an HTTP 500', (h) => h.fake.serverError('users.info', { status: 500 })],
  ['a 429', (h) => h.fake.rateLimit('users.info', { retryAfterSeconds: 30 })],
];

describe('Slack moderators', () => {
  for (const [failure, inject] of FAILURES) {
    it(`a workspace admin whose users.info lookup fails with ${failure} is refused, privately, and nothing changes`, async () => {
      const h = await slackHarness({ fakeOptions: { users: { UADMIN: { name: 'ada', is_admin: true } } } });
      const { jobId, pageTs, page } = await galleryOf(h);
      const since = h.fake.lastSeq;
      inject(h);

      expect((await h.click(page(), button(page(), 'Approve', 1), 'UADMIN')).status).toBe(200);
      const answer = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === 'UADMIN', { since });
      expect(answer.args.text).toBe(REFUSAL);
      const lookups = h.fake.calls('users.info').filter((c) => c.seq > since);
      expect(lookups.map((c) => [c.args.user, c.ok])).toEqual([['UADMIN', false]]);
      expect(h.fake.calls('chat.update').filter((c) => c.seq > since && c.args.ts === pageTs)).toEqual([]);
      expect(await filesIn(h.app, jobId, 'approved')).toEqual([]);
      expect((await h.app.engine.get(jobId))?.images.map((i) => i.review.status)).toEqual(['pending', 'pending']);

      // The failure was not remembered as an answer: once users.info works, the admin may review.
      const retry = h.fake.lastSeq;
      await h.click(page(), button(page(), 'Approve', 1), 'UADMIN');
      await h.fake.waitFor(
        (c) => c.method === 'chat.update' && c.args.ts === pageTs && textOf({ blocks: c.args.blocks as unknown[] }).includes('✅ *#1* approved by name-UADMIN'),
        { since: retry },
      );
      expect(await filesIn(h.app, jobId, 'approved')).toEqual(['001.png']);
      expect(h.fake.calls('users.info').filter((c) => c.seq > retry).map((c) => [c.args.user, c.ok])).toEqual([['UADMIN', true]]);
    });
  }

  it('a member users.info says is no admin is refused, and that answer is cached', async () => {
    const h = await slackHarness({ fakeOptions: { users: { UMEMBER: { name: 'bob' } } } });
    const { jobId, page } = await galleryOf(h);
    for (let i = 0; i < 2; i++) {
      const since = h.fake.lastSeq;
      await h.click(page(), button(page(), 'Reject', 2), 'UMEMBER');
      const answer = await h.fake.waitFor((c) => c.method === 'chat.postEphemeral' && c.args.user === 'UMEMBER', { since });
      expect(answer.args.text).toBe(REFUSAL);
    }
    expect(h.fake.calls('users.info').map((c) => [c.args.user, c.ok])).toEqual([['UMEMBER', true]]);
    expect(await filesIn(h.app, jobId, 'rejected')).toEqual([]);
  });
});
