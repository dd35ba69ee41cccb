import { Keyv } from 'keyv';
import { describe, expect, it } from 'vitest';
import { deliveryKey, SeenCommands, type CommandDelivery } from '../../../src/chat/slack/replays.js';
import { pollUntil } from '../../fakes/http.js';
import { postSigned, postSlashCommand, signSlackRequest, slashCommandBody, startFakeSlack } from '../../fakes/slack.js';
import { onCleanup, tempDir } from '../../helpers.js';
import { SECRET, slackHarness, type Harness } from './harness.js';

/** Every job id the engine reported progress for: a second job would show up here at its submit. */
function jobsSeen(h: Harness): Set<string> {
  const ids = new Set<string>();
  h.app.engine.on('progress', (_, job) => void ids.add(job.id));
  return ids;
}

const topLevel = (h: Harness) => h.fake.messages('C1').filter((m) => m.thread_ts === undefined);

const ackOf = (res: { status: number; body: string }) => {
  expect(res.status).toBe(200);
  return res.body === '' ? undefined : (JSON.parse(res.body) as { response_type: string; text: string; unfurl_links?: boolean });
};

describe('a slash command delivered twice starts one job', () => {
  it('the same signed bytes posted again (a replay inside Bolt’s 5-minute window) are answered and start nothing', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '100' } });
    const jobs = jobsSeen(h);
    const body = slashCommandBody({ text: 'a replayed fox --count 2', trigger_id: '1700000001.1.replay' });
    const timestamp = Math.floor(Date.now() / 1000) - 60;
    // Identical bytes and timestamp, hence the identical signature: Bolt accepts both.
    expect(signSlackRequest(SECRET, body, timestamp)).toEqual(signSlackRequest(SECRET, body, timestamp));

    expect(ackOf(await postSigned(h.url, SECRET, body, { timestamp }))).toBeUndefined();
    const { jobId } = await h.progressPost();
    // Replays keep being refused; once the first delivery has its job, the answer names it.
    const { value: answer } = await pollUntil(
      async () => ackOf(await postSigned(h.url, SECRET, body, { timestamp })),
      (a) => a?.text.includes(jobId) === true,
      { timeoutMs: 5_000, intervalMs: 20 },
    );
    expect(answer).toEqual({
      response_type: 'ephemeral',
      text: `This command was already received; its job is \`${jobId}\`.`,
      unfurl_links: false,
      unfurl_media: false,
    });

    await h.delivered(jobId);
    expect([...jobs]).toEqual([jobId]);
    expect(topLevel(h)).toHaveLength(1);
  });

  it('two copies arriving at the same moment start one job', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '100' } });
    const jobs = jobsSeen(h);
    const body = slashCommandBody({ text: 'a twin fox --count 1', trigger_id: '1700000002.1.twins' });
    const timestamp = Math.floor(Date.now() / 1000);
    const answers = (await Promise.all([1, 2, 3].map(() => postSigned(h.url, SECRET, body, { timestamp })))).map(ackOf);
    // One bare ack (the one that started the job), the others told.
    expect(answers.filter((a) => a === undefined)).toHaveLength(1);
    expect(answers.filter((a) => a?.text.startsWith('This command was already received'))).toHaveLength(2);
    const { jobId } = await h.progressPost();
    await h.delivered(jobId);
    expect([...jobs]).toEqual([jobId]);
    expect(topLevel(h)).toHaveLength(1);
  });

  it('the same trigger_id with a new timestamp and signature starts nothing either', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '100' } });
    const jobs = jobsSeen(h);
    const params = { text: 'a resent fox --count 1', trigger_id: '1700000003.1.resent' };
    const now = Math.floor(Date.now() / 1000);
    expect(ackOf(await postSlashCommand(h.url, SECRET, params, { timestamp: now - 120 }))).toBeUndefined();
    const again = ackOf(await postSlashCommand(h.url, SECRET, params, { timestamp: now }));
    expect(again?.text).toMatch(/^This command was already received/);
    const { jobId } = await h.progressPost();
    await h.delivered(jobId);
    expect([...jobs]).toEqual([jobId]);
    // A new trigger_id is a new command, even with the same words: it gets its own job.
    expect(ackOf(await postSlashCommand(h.url, SECRET, { text: params.text }))).toBeUndefined();
    await pollUntil(async () => jobs.size, (size) => size === 2);
  });

  it('without a trigger_id, the signed timestamp and the fields tell a replay from a command typed again', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '50' } });
    const jobs = jobsSeen(h);
    const fields = new URLSearchParams(slashCommandBody({ text: 'a bare fox --count 1' }));
    fields.delete('trigger_id');
    const body = fields.toString();
    const timestamp = Math.floor(Date.now() / 1000) - 30;
    expect(ackOf(await postSigned(h.url, SECRET, body, { timestamp }))).toBeUndefined();
    expect(ackOf(await postSigned(h.url, SECRET, body, { timestamp }))?.text).toMatch(/^This command was already received/);
    await pollUntil(async () => jobs.size, (size) => size === 1);
    // The same words, signed at another second: typed again, so a second job.
    expect(ackOf(await postSigned(h.url, SECRET, body, { timestamp: timestamp + 1 }))).toBeUndefined();
    await pollUntil(async () => jobs.size, (size) => size === 2);
  });

  it('a replay after a restart is still refused: the marks are in the store', async () => {
    const dir = await tempDir();
    const fake = await startFakeSlack();
    onCleanup(() => fake.close());
    const body = slashCommandBody({ text: 'a persistent fox --count 2', trigger_id: '1700000004.1.restart' });
    const timestamp = Math.floor(Date.now() / 1000);

    const first = await slackHarness({ fake, dir, env: { LOCAL_LATENCY_MS: '50' } });
    await postSigned(first.url, SECRET, body, { timestamp });
    const { jobId } = await first.progressPost();
    await first.delivered(jobId);
    await first.adapter.stop();
    await first.app.close();

    const second = await slackHarness({ fake, dir, env: { LOCAL_LATENCY_MS: '50' } });
    const jobs = jobsSeen(second);
    const answer = ackOf(await postSigned(second.url, SECRET, body, { timestamp }));
    expect(answer?.text).toBe(`This command was already received; its job is \`${jobId}\`.`);
    // A command that is new to both processes still runs, and is the only other job.
    const since = fake.lastSeq;
    await second.imagine('a fresh fox --count 1');
    const fresh = await second.progressPost('C1', since);
    await second.delivered(fresh.jobId);
    expect([...jobs]).toEqual([fresh.jobId]);
    expect(fake.messages('C1').filter((m) => m.thread_ts === undefined)).toHaveLength(2);
  });

  it('help and refused commands are not remembered: asking again gets the same answer', async () => {
    const h = await slackHarness();
    const body = slashCommandBody({ text: 'a fox --count 0', trigger_id: '1700000005.1.bad' });
    const timestamp = Math.floor(Date.now() / 1000);
    const once = ackOf(await postSigned(h.url, SECRET, body, { timestamp }));
    const twice = ackOf(await postSigned(h.url, SECRET, body, { timestamp }));
    expect(once?.text).toBe('Expected `count` to be an integer from 1 to 100, got `0`.');
    expect(twice).toEqual(once);
    expect(await h.app.engine.listJobs('T1')).toEqual([]);
  });
});

describe('SeenCommands', () => {
  const delivery = (trigger: string, extra: Partial<CommandDelivery> = {}): CommandDelivery => ({
    team_id: 'T1',
    user_id: 'U1',
    channel_id: 'C1',
    command: '/imagine',
    text: 'a fox',
    trigger_id: trigger,
    ...extra,
  });

  it('answers the first claim with undefined and later ones with the mark, naming the job once started', async () => {
    const seen = new SeenCommands(new Keyv());
    expect(await seen.claim(delivery('a'))).toBeUndefined();
    expect(await seen.claim(delivery('a'))).toEqual({});
    await seen.started(delivery('a'), 'job-1');
    expect(await seen.claim(delivery('a'))).toEqual({ jobId: 'job-1' });
    expect(await seen.claim(delivery('b'))).toBeUndefined();
  });

  it('a trigger_id is the key when there is one; without it the fields and the timestamp are', () => {
    expect(deliveryKey(delivery('a'))).toBe(deliveryKey(delivery('a', { text: 'other words', timestamp: 5 })));
    expect(deliveryKey(delivery('a'))).not.toBe(deliveryKey(delivery('a', { team_id: 'T2' })));
    const bare = { ...delivery(''), trigger_id: undefined, timestamp: 1_700_000_000 };
    expect(deliveryKey(bare)).toMatch(/^slack:seen:[0-9a-f]{64}$/);
    expect(deliveryKey(bare)).not.toBe(deliveryKey({ ...bare, timestamp: 1_700_000_001 }));
    expect(deliveryKey(bare)).not.toBe(deliveryKey({ ...bare, text: 'a fox!' }));
    // Nothing to tell two deliveries apart: never refused.
    expect(deliveryKey({ ...bare, timestamp: undefined })).toBeUndefined();
  });

  it('keeps at most maxEntries marks in memory; the store still refuses the older ones', async () => {
    const keyv = new Keyv();
    const seen = new SeenCommands(keyv, { maxEntries: 3 });
    for (const t of ['a', 'b', 'c', 'd', 'e']) expect(await seen.claim(delivery(t))).toBeUndefined();
    expect(seen.size).toBe(3);
    expect(await seen.claim(delivery('a'))).toEqual({});
    // A second process over the same store (a restart) refuses them too.
    expect(await new SeenCommands(keyv).claim(delivery('e'))).toEqual({});
  });

  it('forgets a mark once the signature window is over, in memory and in the store', async () => {
    let now = 1_700_000_000_000;
    const keyv = new Keyv();
    const seen = new SeenCommands(keyv, { now: () => now });
    await seen.claim(delivery('a', { timestamp: now / 1000 }));
    now += 5 * 60_000;
    expect(await seen.claim(delivery('a', { timestamp: now / 1000 }))).toEqual({}); // still inside
    now += 2 * 60_000;
    expect(await seen.claim(delivery('z'))).toBeUndefined(); // sweeps what expired
    expect(seen.size).toBe(1);
    expect(await keyv.get(deliveryKey(delivery('a'))!)).toBeUndefined();
  });

  it('a timestamp ahead of our clock is remembered until Bolt would call it stale', async () => {
    let now = 1_700_000_000_000;
    const seen = new SeenCommands(new Keyv(), { now: () => now });
    await seen.claim(delivery('a', { timestamp: now / 1000 + 10 * 60 }));
    now += 14 * 60_000;
    expect(await seen.claim(delivery('a'))).toEqual({});
  });
});
