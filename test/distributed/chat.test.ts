/**
 * Chat delivery across processes (distributed mode): several complete apps on one Redis and one
 * output folder, each with its chat adapter, against one Slack or Discord fake. The engine tells only
 * the process that made a change, so any of them may edit a progress message or deliver a gallery;
 * these tests check that the result is still one job per command, one gallery per job, one review per
 * click, and edits of one message an interval apart whichever process sends them.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Keyv } from 'keyv';
import { expect, it } from 'vitest';
import { Edits } from '../../src/chat/delivery/edits.js';
import { Outbox } from '../../src/chat/delivery/outbox.js';
import { EditGate } from '../../src/chat/delivery/shared.js';
import { SeenCommands, type CommandDelivery } from '../../src/chat/slack/replays.js';
import { openKeyv } from '../../src/store/keyv.js';
import { RedisJobLocks } from '../../src/store/redis.js';
import { shardOf, snowflakeOnShard, startFakeDiscord, type FakeDiscord } from '../fakes/discord.js';
import { pollUntil } from '../fakes/http.js';
import { postBlockAction, startFakeSlack, type FakeSlack } from '../fakes/slack.js';
import { filesIn, onCleanup, readManifest } from '../helpers.js';
import type { Job } from '../../src/core/types.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';
import { button, SECRET, textOf } from '../chat/slack/harness.js';
import { answerOf, galleryMessages, jobIdOf, progressMessageOf, startBot, TOKEN, waitForContent, waitForGallery } from '../chat/discord/harness.js';
import { clusterEnv, delivered, eventsByApp, gapsOf, imagine, jobIdIn, LOCKS, slackProcess, topLevel, type SlackProcess } from './chat-cluster.js';

/** A Redis connection of the test's own, closed after it. */
function connection(): Redis {
  const redis = new Redis(redisUrl);
  onCleanup(() => redis.quit().then(() => undefined));
  return redis;
}

/** Files shared into a thread (a gallery's uploads), by file name. */
function uploadsIn(fake: FakeSlack, ts: string): string[] {
  return fake
    .files()
    .flatMap((file) => file.shares.filter((share) => share.thread_ts === ts).map(() => file.filename))
    .sort();
}

/** The thread messages holding review buttons (one per gallery page). */
const buttonPages = (fake: FakeSlack, ts: string) =>
  fake.thread('C1', ts).filter((message) => JSON.stringify(message.blocks).includes('"action_id"'));

describeRedis('what two processes share: the outbox, replay marks, the edit gate', () => {
  it('outbox changes from two processes at once keep every id (read-modify-write under a shared lock)', async () => {
    const prefix = testPrefix();
    const outboxes = await Promise.all(
      [0, 1].map(async () => {
        const keyv = await openKeyv(redisUrl, prefix);
        onCleanup(() => keyv.disconnect());
        return new Outbox(keyv, 'slack', new RedisJobLocks(connection(), prefix));
      }),
    );
    const ids = Array.from({ length: 20 }, (_, i) => `20250101-${String(i).padStart(8, '0')}`);
    await Promise.all(ids.map((id, i) => outboxes[i % 2]!.add(id)));
    expect((await outboxes[0]!.list()).sort()).toEqual(ids);
    await Promise.all(ids.filter((_, i) => i % 3 === 0).map((id, i) => outboxes[i % 2]!.remove(id)));
    expect((await outboxes[1]!.list()).sort()).toEqual(ids.filter((_, i) => i % 3 !== 0));
  });

  it('a Slack command delivered to two processes at once is taken by exactly one; the other then names its job', async () => {
    const prefix = testPrefix();
    const processes = [0, 1].map(() => new SeenCommands(new Keyv(), { shared: { redis: connection(), prefix } }));
    const delivery: CommandDelivery = { team_id: 'T1', user_id: 'U1', channel_id: 'C1', command: '/imagine', text: 'a fox', trigger_id: '1700000009.1.twice' };
    const answers = await Promise.all([0, 1, 0, 1, 0, 1].map((p) => processes[p]!.claim(delivery)));
    expect(answers.filter((answer) => answer === undefined)).toHaveLength(1);
    const first = processes[answers.indexOf(undefined) % 2]!;
    await first.started(delivery, '20250101-abcdef01');
    const other = processes.find((p) => p !== first)!;
    // A new SeenCommands has no memory of it: the answer comes from Redis.
    expect(await new SeenCommands(new Keyv(), { shared: { redis: connection(), prefix } }).claim(delivery)).toEqual({ jobId: '20250101-abcdef01' });
    expect(await other.claim({ ...delivery, trigger_id: '1700000009.2.fresh' })).toBeUndefined();
  });

  it('two processes editing one message: no edit starts sooner than the interval after the last one ended', async () => {
    const prefix = testPrefix();
    const intervalMs = 60;
    const sends: { by: number; start: number; end: number }[] = [];
    const processes = [0, 1].map(
      () =>
        new Edits({
          intervalMs,
          now: Date.now,
          onError: (key, error) => {
            throw new Error(`${key}: ${String(error)}`);
          },
          onGone: () => undefined,
          gate: new EditGate({ redis: connection(), prefix }, 'slack', intervalMs),
        }),
    );
    onCleanup(() => processes.forEach((edits) => edits.close()));
    for (let state = 1; state <= 40; state += 1) {
      const by = state % 2;
      processes[by]!.push('job-1', `state ${state}`, async () => {
        const start = Date.now();
        await sleep(5);
        sends.push({ by, start, end: Date.now() });
      });
      await sleep(8);
    }
    await Promise.all(processes.map((edits) => edits.flush('job-1')));
    expect(new Set(sends.map((send) => send.by))).toEqual(new Set([0, 1]));
    sends.sort((a, b) => a.start - b.start);
    // 2 ms: the two clocks read here (Redis's expiry and Date.now) tick in whole milliseconds.
    for (let i = 1; i < sends.length; i += 1) expect(sends[i]!.start - sends[i - 1]!.end).toBeGreaterThanOrEqual(intervalMs - 2);
  });
});

describeRedis('Slack across processes', () => {
  it('commands and clicks alternate between two processes: one job per command, each review applied once, one gallery per job, edits an interval apart', async () => {
    // Each process calls Slack with a token of its own, so the fake tells who sent what.
    const fake = await startFakeSlack({ tokens: ['xoxb-a', 'xoxb-b'] });
    onCleanup(() => fake.close());
    const env = await clusterEnv();
    const processes = [await slackProcess(fake, env, { token: 'xoxb-a' }), await slackProcess(fake, env, { token: 'xoxb-b' })];

    for (let k = 0; k < 4; k += 1) expect(await imagine(processes[k % 2]!, `fox number ${k} --count 12`, { user_id: `U${k}` })).toBe(200);
    const { value: posts } = await pollUntil(async () => topLevel(fake), (messages) => messages.length >= 4, { timeoutMs: 10_000, intervalMs: 20 });
    const jobIds = posts.map((post) => jobIdIn(post)!);
    expect(new Set(jobIds).size).toBe(4);
    const jobs = await Promise.all(jobIds.map((id) => delivered(fake, processes[0]!.app, id)));
    // One job per command, each with its own prompt.
    expect(jobs.map(({ job }) => job.request.prompt).sort()).toEqual([0, 1, 2, 3].map((k) => `fox number ${k}`));
    expect(topLevel(fake)).toHaveLength(4);

    for (const { job, facts } of jobs) {
      // One gallery: 12 uploads (each image once) and 2 pages of buttons, whichever process delivered.
      expect(uploadsIn(fake, facts.ts)).toEqual(Array.from({ length: 12 }, (_, i) => `${job.id}-${String(i + 1).padStart(3, '0')}.png`));
      expect(buttonPages(fake, facts.ts)).toHaveLength(2);
      expect(facts.pages.map((page) => Boolean(page.ts && page.uploaded))).toEqual([true, true]);
      expect(job.state).toBe('completed');
    }
    // Edits of one message, from whichever process ran a batch of its job: never closer than the
    // interval (100 ms here). (2 ms: the clocks compared, Redis's expiry and the fake's Date.now,
    // tick in whole milliseconds.)
    for (const { facts } of jobs) {
      for (const gap of gapsOf(fake, 'chat.update', facts.ts)) expect(gap).toBeGreaterThanOrEqual(100 - 2);
    }

    // Clicks on one page, alternately on the two processes and at once (as several reviewers may):
    // each process edits the page and the progress message (its summary), in turns the gate decides,
    // each edit showing the job as stored when it goes out.
    const { job, facts } = jobs[0]!;
    const pageTs = facts.pages[0]!.ts!;
    const page = () => fake.message('C1', pageTs)!;
    const click = async (process: SlackProcess, label: string, index: number) => {
      const { action_id, value } = button(page(), label, index);
      const clicked = await postBlockAction(process.url!, SECRET, {
        user: { id: job.requester.userId, username: 'owner', team_id: 'T1' },
        team: 'T1',
        channel: 'C1',
        message: page(),
        actions: [{ action_id, value }],
      });
      expect(clicked.status).toBe(200);
    };
    const [a, b] = processes as [SlackProcess, SlackProcess];
    await Promise.all([click(a, 'Approve', 1), click(b, 'Approve', 2), click(a, 'Reject', 3), click(b, 'Approve', 4)]);
    const reviewed = (j: Job | undefined) => j?.images.slice(0, 4).map((image) => image.review.status).join();
    await pollUntil(() => a.app.engine.get(job.id), (j) => reviewed(j) === 'approved,approved,rejected,approved');
    // Each review once: the files moved once each, the manifest says so.
    expect(await filesIn(processes[0]!.app, job.id, 'approved')).toEqual(['001.png', '002.png', '004.png']);
    expect(await filesIn(processes[1]!.app, job.id, 'rejected')).toEqual(['003.png']);
    const manifest = await readManifest(processes[1]!.app, job.id);
    expect(manifest.summary).toMatchObject({ approved: 3, rejected: 1, pending: 8 });
    // The page ends showing every review, whichever process rendered last.
    await pollUntil(
      async () => textOf(page()),
      (text) => ['✅ *#1*', '✅ *#2*', '❌ *#3*', '✅ *#4*'].every((mark) => text.includes(mark)),
      { timeoutMs: 5_000, intervalMs: 20 },
    );
    await pollUntil(
      async () => textOf(fake.message('C1', facts.ts)),
      (text) => text.includes('✅ 3 approved'),
      { timeoutMs: 5_000, intervalMs: 20 },
    );
    const editorsOf = (ts: string) => new Set(fake.calls('chat.update').filter((call) => call.args.ts === ts).map((call) => call.token));
    expect(editorsOf(pageTs)).toEqual(new Set(['xoxb-a', 'xoxb-b']));
    // The summary: the gate spaces its edits across processes and each renders the job as stored when
    // its turn comes, so one process's edit may already show every review; either or both edit it.
    expect([...editorsOf(facts.ts)].filter((token) => token !== 'xoxb-a' && token !== 'xoxb-b')).toEqual([]);
    expect(editorsOf(facts.ts).size).toBeGreaterThan(0);
    for (const ts of [pageTs, facts.ts]) {
      for (const gap of gapsOf(fake, 'chat.update', ts)) expect(gap).toBeGreaterThanOrEqual(100 - 2);
    }
    expect(buttonPages(fake, facts.ts)).toHaveLength(2);
  }, 60_000);

  it('a process starting while another delivers a gallery waits for it, then posts nothing of it again', async () => {
    const fake = await startFakeSlack({ tokens: ['xoxb-test', 'xoxb-late'] });
    onCleanup(() => fake.close());
    const env = await clusterEnv();
    const processes = [await slackProcess(fake, env), await slackProcess(fake, env)];
    // The gallery's upload is held mid-way: its delivery holds the job's delivery lock meanwhile.
    const held = fake.delay('files.completeUploadExternal', 20_000, { times: 1 });
    expect(await imagine(processes[0]!, 'a fox in the middle --count 3')).toBe(200);
    await pollUntil(async () => held.held, (n) => n === 1, { timeoutMs: 10_000, intervalMs: 10 });
    const { value: post } = await pollUntil(async () => topLevel(fake), (m) => m.length === 1);
    const jobId = jobIdIn(post[0]!)!;

    // A third process starts: its delivery finds the job in the outbox, finished, and asks for the
    // job's delivery lock, which the first delivery holds.
    const asked: string[] = [];
    const late = await slackProcess(fake, env, {
      token: 'xoxb-late',
      beforeStart: (app) => {
        const locks = app.shared!.locks;
        const run = locks.run.bind(locks);
        locks.run = (name, work) => {
          asked.push(name);
          return run(name, work);
        };
      },
    });
    await pollUntil(async () => asked, (names) => names.includes(`delivery-slack-${jobId}`));
    held.release();

    const { facts } = await delivered(fake, late.app, jobId);
    // The late process got the lock after the first delivery and found every page recorded: its one
    // call about this job is the edit that shows the final state.
    await fake.waitFor((call) => call.token === 'xoxb-late' && call.method === 'chat.update' && call.args.ts === facts.ts, { timeoutMs: 10_000 });
    expect(fake.calls().filter((call) => call.token === 'xoxb-late' && !['auth.test', 'chat.update'].includes(call.method))).toEqual([]);
    expect(uploadsIn(fake, facts.ts)).toHaveLength(3);
    expect(buttonPages(fake, facts.ts)).toHaveLength(1);
    expect(await late.app.keyv.get('slack:outbox')).toEqual([]);
  }, 60_000);

  it('a worker takes no commands but delivers the gallery of a job an edge accepted', async () => {
    const fake = await startFakeSlack({ tokens: ['xoxb-edge', 'xoxb-worker'] });
    onCleanup(() => fake.close());
    const env = await clusterEnv();
    const edge = await slackProcess(fake, env, { token: 'xoxb-edge', env: { ROLE: 'edge' } });
    const worker = await slackProcess(fake, env, { token: 'xoxb-worker', env: { ROLE: 'worker' }, receive: false });
    expect(worker.adapter.port).toBeUndefined();
    expect(worker.adapter.healthy()).toBe(true);
    const finishedIn = eventsByApp([edge.app, worker.app], 'finished');

    expect(await imagine(edge, 'a fox for the worker --count 12')).toBe(200);
    const { value: post } = await pollUntil(async () => topLevel(fake), (m) => m.length === 1, { timeoutMs: 10_000, intervalMs: 20 });
    const jobId = jobIdIn(post[0]!)!;
    const { facts } = await delivered(fake, edge.app, jobId);

    // The edge posted the progress message; the worker ran the job, finished it and posted its gallery.
    expect(fake.calls('chat.postMessage').filter((call) => call.args.ts === undefined && call.args.thread_ts === undefined).map((call) => call.token)).toEqual(['xoxb-edge']);
    expect(finishedIn.get(jobId)).toEqual([1]);
    const galleryCalls = fake.calls().filter((call) => ['files.getUploadURLExternal', 'files.completeUploadExternal'].includes(call.method) || call.args.thread_ts === facts.ts);
    expect(galleryCalls.length).toBeGreaterThan(0);
    expect(new Set(galleryCalls.map((call) => call.token))).toEqual(new Set(['xoxb-worker']));
    expect(uploadsIn(fake, facts.ts)).toHaveLength(12);
    expect(buttonPages(fake, facts.ts)).toHaveLength(2);
    // The worker edited the progress message (its batches' progress, then the final state).
    expect(fake.calls('chat.update').filter((call) => call.args.ts === facts.ts && call.token === 'xoxb-worker').length).toBeGreaterThan(0);
  }, 60_000);
});

// This file loads the Slack adapter (and with it undici 7) before discord.js: the galleries below are
// also what shows Discord's uploads work in such a process (src/chat/discord/index.ts, restOptions).
describeRedis('Discord shards across processes', () => {
  const GUILD_ON_0 = snowflakeOnShard(0, 2);
  const GUILD_ON_1 = snowflakeOnShard(1, 2);

  async function twoShardFake(): Promise<FakeDiscord> {
    const fake = await startFakeDiscord({ token: TOKEN, shards: 2, maxConcurrency: 2, guilds: [{ id: GUILD_ON_0 }, { id: GUILD_ON_1 }] });
    onCleanup(() => fake.close());
    return fake;
  }

  it('shard 0 (an edge) and shard 1: each command answered by its shard, each gallery posted once by the process that finished the job', async () => {
    expect([shardOf(GUILD_ON_0, 2), shardOf(GUILD_ON_1, 2)]).toEqual([0, 1]);
    const fake = await twoShardFake();
    const env = await clusterEnv();
    // Shard 0's process runs no batches: its jobs are always finished by the other process.
    const zero = await startBot({ fake, env: { ...env, DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '0', ROLE: 'edge' }, ...LOCKS });
    const one = await startBot({ fake, env: { ...env, DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '1' }, ...LOCKS });
    const finishedIn = eventsByApp([zero.app, one.app], 'finished');

    const sent = [
      fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox on shard zero', count: 6 }, guildId: GUILD_ON_0 }),
      fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox on shard one', count: 6 }, guildId: GUILD_ON_1 }),
      fake.sendCommand({ name: 'imagine', options: { prompt: 'another fox on shard zero', count: 5 }, guildId: GUILD_ON_0 }),
    ];
    const jobIds = await Promise.all(sent.map(async (interaction) => jobIdOf(fake, await progressMessageOf(fake, interaction.id))));
    const [sessionZero, sessionOne] = fake.sessions();
    expect(sent.map((interaction) => interaction.deliveries)).toEqual([[sessionZero], [sessionOne], [sessionZero]]);
    for (const interaction of sent) expect((await answerOf(fake, interaction.id)).map((callback) => callback.type)).toEqual([5]);

    const counts = [6, 6, 5];
    for (const [i, jobId] of jobIds.entries()) {
      await waitForGallery(fake, jobId, counts[i]!);
      await waitForContent(fake, await progressMessageOf(fake, sent[i]!.id), '100%');
    }
    // Every job was finished by shard 1's process, the one running batches.
    expect(jobIds.map((id) => finishedIn.get(id))).toEqual([[1], [1], [1]]);
    for (const [i, jobId] of jobIds.entries()) {
      const pages = galleryMessages(fake, jobId);
      expect(pages).toHaveLength(1);
      expect(pages[0]!.attachments).toHaveLength(counts[i]!);
    }
    // Shard 0's galleries went out with the bot token (the finishing process holds no interaction token).
    const galleryPosts = fake.calls.filter((call) => call.method === 'POST' && JSON.stringify(call.body).includes('**Gallery'));
    expect(galleryPosts).toHaveLength(3);
    for (const jobId of [jobIds[0]!, jobIds[2]!]) {
      const post = galleryPosts.find((call) => JSON.stringify(call.body).includes(jobId));
      expect(post?.route).toBe('POST /channels/:channel/messages');
    }
  }, 60_000);

  it('two shard processes that both run batches: every gallery posted once, whoever finished it', async () => {
    const fake = await twoShardFake();
    const env = await clusterEnv();
    const zero = await startBot({ fake, env: { ...env, DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '0' }, ...LOCKS });
    const one = await startBot({ fake, env: { ...env, DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '1' }, ...LOCKS });
    const finishedIn = eventsByApp([zero.app, one.app], 'finished');
    const guilds = [GUILD_ON_0, GUILD_ON_1, GUILD_ON_0, GUILD_ON_1, GUILD_ON_0, GUILD_ON_1];
    const sent = guilds.map((guildId, k) =>
      fake.sendCommand({ name: 'imagine', options: { prompt: `fox ${k}`, count: 8 }, guildId }),
    );
    const jobIds = await Promise.all(sent.map(async (interaction) => jobIdOf(fake, await progressMessageOf(fake, interaction.id))));
    for (const jobId of jobIds) await waitForGallery(fake, jobId, 8);
    for (const jobId of jobIds) {
      expect(finishedIn.get(jobId)).toHaveLength(1);
      expect(galleryMessages(fake, jobId)).toHaveLength(1);
    }
    expect(fake.calls.filter((call) => call.method === 'POST' && JSON.stringify(call.body).includes('**Gallery'))).toHaveLength(6);
  }, 60_000);
});
