/**
 * /settings on Slack, through Bolt and the fake Web API: workspace admins and owners (users.info) may
 * change, everyone may look, and the next /imagine takes the workspace's defaults.
 */
import { describe, expect, it } from 'vitest';
import { slackHarness } from './harness.js';

const USERS = { UADMIN: { name: 'ada', is_admin: true }, UOWNER: { name: 'olga', is_owner: true }, UMEMBER: { name: 'bob' } };

function ackText(res: { body: string }): string {
  return (JSON.parse(res.body) as { text: string }).text;
}

describe('Slack /settings', () => {
  it('refuses a member who is no admin in the ack, changes nothing, and still shows the settings', async () => {
    const h = await slackHarness({ fakeOptions: { users: USERS } });
    const res = await h.settings('count 8', { user_id: 'UMEMBER' });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({
      response_type: 'ephemeral',
      text: 'Only workspace admins and owners may change these settings; everyone may view them with /settings.',
    });
    expect((await h.app.settings.read('T1')).values).toEqual({});
    expect(h.fake.calls('users.info').map((c) => c.args.user)).toEqual(['UMEMBER']);

    const look = ackText(await h.settings('', { user_id: 'UMEMBER' }));
    expect(look).toContain('count: 4 (default)');
    expect(look).toContain('plan: business (default)');
  });

  it('an admin sets count 8 ar 16:9 provider local, and the next /imagine without options makes 8 images at 16:9', async () => {
    const h = await slackHarness({ fakeOptions: { users: USERS } });
    const answer = ackText(await h.settings('count 8 ar 16:9 provider local', { user_id: 'UADMIN' }));
    expect(answer).toMatch(/^Changed: provider default → local, ar default → 16:9, count default → 8\./);
    expect((await h.app.settings.read('T1')).history.map((c) => [c.key, c.by])).toEqual([
      ['provider', 'UADMIN'],
      ['ar', 'UADMIN'],
      ['count', 'UADMIN'],
    ]);

    // `/imagine help` shows the workspace's defaults.
    const help = ackText(await h.imagine('help'));
    expect(help).toContain('How many images (default 8)');
    expect(help).toContain('Aspect ratio (default 16:9)');

    await h.imagine('a heron in reeds');
    const { jobId } = await h.progressPost();
    const { job } = await h.delivered(jobId, h.app, { waitForNote: false });
    expect(job.request).toMatchObject({ count: 8, aspectRatio: '16:9', provider: 'local' });
    expect(job.images).toHaveLength(8);
    expect(job.images.every((image) => image.width > image.height)).toBe(true);
  });

  it('an owner’s bad value is answered with the setting, the allowed values and what was given; nothing changes', async () => {
    const h = await slackHarness({ fakeOptions: { users: USERS } });
    expect(ackText(await h.settings('count 8 ar 5:4', { user_id: 'UOWNER' }))).toBe(
      '`ar`: expected one of 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3, 21:9 (or default), got `5:4`. Nothing was changed.',
    );
    expect(ackText(await h.settings('colour red', { user_id: 'UOWNER' }))).toBe(
      'Unknown setting `colour`. Settings: provider, model, ar, count, format, daily, plan, drafts.',
    );
    expect((await h.app.settings.read('T1')).values).toEqual({});
  });
});
