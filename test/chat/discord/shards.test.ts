/**
 * Discord sharding across processes: each process runs the shards DISCORD_SHARD_IDS names (of
 * DISCORD_SHARDS), the fake gateway sends a guild's interactions only to the session of the shard
 * that owns it, and so each command is answered once, by the process that received it. Every bot
 * here has its own store: sharing one is distributed mode's part, not the gateway's.
 */
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { shardOptions } from '../../../src/chat/discord/index.js';
import { createLogger } from '../../../src/logger.js';
import { onCleanup } from '../../helpers.js';
import { shardOf, snowflakeOnShard, startFakeDiscord, type FakeDiscord, type FakeDiscordOptions } from '../../fakes/discord.js';
import { TOKEN, answerOf, galleryMessages, jobIdOf, progressMessageOf, startBot, waitForGallery, type Bot } from './harness.js';

const GUILD_ON_0 = snowflakeOnShard(0, 2);
const GUILD_ON_1 = snowflakeOnShard(1, 2);

/** Two guilds, one on each of two shards; both shards may IDENTIFY at once (no 5 s wait in between). */
async function twoShardFake(options: FakeDiscordOptions = {}): Promise<FakeDiscord> {
  const fake = await startFakeDiscord({ token: TOKEN, shards: 2, maxConcurrency: 2, guilds: [{ id: GUILD_ON_0 }, { id: GUILD_ON_1 }], ...options });
  onCleanup(() => fake.close());
  return fake;
}

/** A bot on `fake` whose 'discord adapter ready' log line is kept. */
async function shardedBot(fake: FakeDiscord, env: Record<string, string>): Promise<Bot & { ready: () => Record<string, unknown> | undefined }> {
  const lines: string[] = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(line) });
  const bot = await startBot({ fake, env, logger });
  const ready = () => lines.map((line) => JSON.parse(line) as Record<string, unknown>).find((entry) => entry['msg'] === 'discord adapter ready');
  return { ...bot, ready };
}

/** Runs /imagine count:1 in `guildId` and returns its interaction id and job id once the gallery is posted. */
async function imagineIn(fake: FakeDiscord, guildId: string, prompt: string): Promise<{ interactionId: string; jobId: string }> {
  const sent = fake.sendCommand({ name: 'imagine', options: { prompt, count: 1 }, guildId });
  const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
  await waitForGallery(fake, jobId, 1);
  return { interactionId: sent.id, jobId };
}

describe('Discord sharding', () => {
  it('the test guilds sit on different shards of two', () => {
    expect([shardOf(GUILD_ON_0, 2), shardOf(GUILD_ON_1, 2)]).toEqual([0, 1]);
  });

  it('two processes running shard 0 and shard 1 of 2: each guild’s /imagine is answered once, by the process running its shard', async () => {
    const fake = await twoShardFake();
    const first = await shardedBot(fake, { DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '0' });
    const second = await shardedBot(fake, { DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '1' });
    expect(fake.identifies.map((identify) => identify['shard'])).toEqual([
      [0, 2],
      [1, 2],
    ]);
    expect(first.ready()).toMatchObject({ shards: [0], shardCount: 2 });
    expect(second.ready()).toMatchObject({ shards: [1], shardCount: 2 });

    const onZero = await imagineIn(fake, GUILD_ON_0, 'a fox on shard zero');
    const onOne = await imagineIn(fake, GUILD_ON_1, 'a fox on shard one');
    const [sessionZero, sessionOne] = fake.sessions();

    // The gateway sent each interaction on its shard's session only ...
    expect(fake.interaction(onZero.interactionId)?.deliveries).toEqual([sessionZero]);
    expect(fake.interaction(onOne.interactionId)?.deliveries).toEqual([sessionOne]);
    expect(sessionZero?.shard).toEqual([0, 2]);
    expect(sessionOne?.shard).toEqual([1, 2]);
    // ... so the job lives in the store of the process running that shard, and nowhere else.
    expect((await first.app.engine.get(onZero.jobId))?.requester).toMatchObject({ tenant: GUILD_ON_0 });
    expect(await second.app.engine.get(onZero.jobId)).toBeUndefined();
    expect((await second.app.engine.get(onOne.jobId))?.requester).toMatchObject({ tenant: GUILD_ON_1 });
    expect(await first.app.engine.get(onOne.jobId)).toBeUndefined();
    // One answer each: a second process answering would have left a refused (40060) callback and a
    // second gallery here.
    for (const { interactionId, jobId } of [onZero, onOne]) {
      expect((await answerOf(fake, interactionId)).map((callback) => callback.type)).toEqual([5]);
      expect(fake.calls.filter((call) => call.interactionId === interactionId && (call.status ?? 0) >= 400)).toEqual([]);
      expect(galleryMessages(fake, jobId)).toHaveLength(1);
    }
  });

  it('a DM goes to the process running shard 0', async () => {
    const fake = await twoShardFake();
    const first = await shardedBot(fake, { DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '0', DISCORD_DMS: 'on' });
    const second = await shardedBot(fake, { DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '1', DISCORD_DMS: 'on' });
    const sent = fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox in my DMs', count: 1 }, guildId: null });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    expect(sent.deliveries.map((delivery) => delivery.shard)).toEqual([[0, 2]]);
    expect((await first.app.engine.get(jobId))?.requester).toMatchObject({ tenant: `dm:${fake.defaultUser.id}` });
    expect(await second.app.engine.get(jobId)).toBeUndefined();
    await waitForGallery(fake, jobId, 1);
  });

  it('DISCORD_SHARDS=2 without ids: one process runs both shards and answers in both guilds', async () => {
    const fake = await twoShardFake();
    const bot = await shardedBot(fake, { DISCORD_SHARDS: '2' });
    expect(bot.ready()).toMatchObject({ shards: [0, 1], shardCount: 2 });
    expect(fake.sessions().map((session) => session.shard)).toEqual([
      [0, 2],
      [1, 2],
    ]);
    const onZero = await imagineIn(fake, GUILD_ON_0, 'a fox on shard zero');
    const onOne = await imagineIn(fake, GUILD_ON_1, 'a fox on shard one');
    expect(fake.interaction(onZero.interactionId)?.deliveries.map((delivery) => delivery.shard)).toEqual([[0, 2]]);
    expect(fake.interaction(onOne.interactionId)?.deliveries.map((delivery) => delivery.shard)).toEqual([[1, 2]]);
    for (const { interactionId, jobId } of [onZero, onOne]) {
      expect(await bot.app.engine.get(jobId)).toBeDefined();
      expect((await answerOf(fake, interactionId)).map((callback) => callback.type)).toEqual([5]);
    }
  });

  it('DISCORD_SHARDS=auto runs as many shards as GET /gateway/bot recommends', async () => {
    const fake = await twoShardFake();
    const bot = await shardedBot(fake, { DISCORD_SHARDS: 'auto' });
    expect(bot.ready()).toMatchObject({ shards: [0, 1], shardCount: 2 });
    expect(fake.sessions().map((session) => session.shard)).toEqual([
      [0, 2],
      [1, 2],
    ]);
  });

  it('without DISCORD_SHARDS: one session, shard 0 of 1, receiving every guild', async () => {
    const fake = await twoShardFake({ shards: 1 });
    const bot = await shardedBot(fake, {});
    expect(bot.ready()).toMatchObject({ shards: [0], shardCount: 1 });
    expect(fake.identifies.map((identify) => identify['shard'])).toEqual([[0, 1]]);
    const onOne = await imagineIn(fake, GUILD_ON_1, 'a fox on the only shard');
    expect(await bot.app.engine.get(onOne.jobId)).toBeDefined();
  });
});

describe('shardOptions', () => {
  it('passes nothing without DISCORD_SHARDS, so discord.js keeps its default', () => {
    expect(shardOptions(undefined)).toEqual({});
  });

  it('passes auto alone, every id of a count, or the ids with the total count', () => {
    expect(shardOptions({ count: 'auto' })).toEqual({ shards: 'auto' });
    expect(shardOptions({ count: 3 })).toEqual({ shards: [0, 1, 2], shardCount: 3 });
    expect(shardOptions({ count: 4, ids: [1, 3] })).toEqual({ shards: [1, 3], shardCount: 4 });
  });
});

describe('fake Discord gateway shards', () => {
  it('closes an IDENTIFY for a shard outside its count with 4010 Invalid shard', async () => {
    const fake = await startFakeDiscord({ token: TOKEN });
    onCleanup(() => fake.close());
    const ws = new WebSocket(fake.gatewayUrl);
    onCleanup(() => ws.terminate());
    await once(ws, 'message');
    const closed = once(ws, 'close') as Promise<[number, Buffer]>;
    ws.send(JSON.stringify({ op: 2, d: { token: TOKEN, intents: 1, properties: {}, shard: [2, 2] } }));
    const [code, reason] = await closed;
    expect([code, reason.toString()]).toEqual([4010, 'Invalid shard.']);
    expect(fake.hasSession()).toBe(false);
  });

  it('refuses to send an interaction no running shard owns, naming the shards that run', async () => {
    const fake = await twoShardFake();
    await shardedBot(fake, { DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '1' });
    expect(fake.hasSession(1)).toBe(true);
    expect(fake.hasSession(0)).toBe(false);
    expect(() => fake.sendCommand({ name: 'imagine', options: { prompt: 'nobody runs shard 0' }, guildId: GUILD_ON_0 })).toThrow(/guild .*running shards: 1\/2/);
  });
});
