/**
 * The notice board in Redis: what one process learns by webhook, every process knows. Two boards on
 * one prefix stand for two processes; then two complete apps, an edge that receives the webhook and a
 * worker that runs the call, against the fal fake.
 */
import path from 'node:path';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import type { CallNotice } from '../../src/core/notices.js';
import { RedisCallNotices } from '../../src/distributed/notices.js';
import { createWebhookReceiver } from '../../src/providers/webhooks.js';
import { startWebServer } from '../../src/web/server.js';
import { webhookRoutes } from '../../src/web/webhooks.js';
import { startFakeFal } from '../fakes/fal.js';
import { loopbackFetch } from '../fakes/http.js';
import { buildApp, onCleanup, requester, tempDir } from '../helpers.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';

const ended = (requestId: string): CallNotice => ({ provider: 'fal', requestId, status: { state: 'succeeded' }, output: { images: [{ url: 'https://fal.media/x.png' }] } });

/** A board on its own connection, as one process has it. */
async function board(prefix: string): Promise<RedisCallNotices> {
  const redis = new Redis(redisUrl);
  const notices = new RedisCallNotices(redis, prefix);
  await notices.start();
  onCleanup(async () => {
    await notices.close();
    await redis.quit();
  });
  return notices;
}

describeRedis('notices in Redis', () => {
  it('a notice published by one process wakes a waiter in another, and is kept for one that comes later', async () => {
    const prefix = testPrefix();
    const [a, b] = [await board(prefix), await board(prefix)];
    const waiting = b.wait('fal', 'r1', new AbortController().signal);
    await a.publish(ended('r1'));
    await expect(waiting).resolves.toEqual(ended('r1'));
    await expect(b.wait('fal', 'r1', new AbortController().signal)).resolves.toEqual(ended('r1'));
    // another prefix is another bot
    expect(await (await board(testPrefix())).get('fal', 'r1')).toBeUndefined();
  });

  it('expected calls and claimed deliveries are shared: a replay is refused whichever process gets it', async () => {
    const prefix = testPrefix();
    const [a, b] = [await board(prefix), await board(prefix)];
    expect(await b.isExpected('replicate', 'p1')).toBe(false);
    expect(await a.expect('replicate', 'p1')).toBe(false);
    expect(await b.isExpected('replicate', 'p1')).toBe(true);
    expect(await b.expect('replicate', 'p1')).toBe(true);
    expect(await a.claim('replicate:msg_1')).toBe(true);
    expect(await b.claim('replicate:msg_1')).toBe(false);
    await a.release('replicate:msg_1');
    expect(await b.claim('replicate:msg_1')).toBe(true);
  });

  it('a webhook received by the edge process ends the call the worker process is watching, with no status poll', async () => {
    const fal = await startFakeFal({ key: 'fal-test-key', latencyMs: 300 });
    onCleanup(() => fal.close());
    const server = await startWebServer({ port: 0, host: '127.0.0.1', log: { debug() {}, info() {}, warn() {}, error() {} } });
    onCleanup(() => server.stop());
    const shared = await tempDir();
    const env = {
      REDIS_URL: redisUrl,
      REDIS_PREFIX: testPrefix(),
      FAL_KEY: 'fal-test-key',
      FAL_BASE_URL: fal.url,
      FAL_JWKS_URL: fal.jwksUrl,
      PUBLIC_URL: server.url,
      OUTPUT_DIR: path.join(shared, 'output'),
    };
    const locks = { queueLockMs: 5_000, jobLockMs: 5_000, webhookSafetyPollMs: 600_000 };
    const edge = await buildApp({ env: { ...env, ROLE: 'edge' }, ...locks });
    const worker = await buildApp({ env: { ...env, ROLE: 'worker' }, ...locks });
    // Only the edge receives webhooks: the worker learns of the end through Redis.
    server.add(...webhookRoutes(createWebhookReceiver(edge.config, edge.notices, edge.logger, { fetch: loopbackFetch })));
    const submitsBy = { edge: 0, worker: 0 };
    edge.engine.on('call', (call) => void (call.operation === 'submit' && (submitsBy.edge += 1)));
    worker.engine.on('call', (call) => void (call.operation === 'submit' && (submitsBy.worker += 1)));

    const job = await edge.engine.submit({ prompt: 'a heron', count: 4, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' }, requester());
    const done = await edge.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    expect(submitsBy).toEqual({ edge: 0, worker: 1 });
    expect(fal.webhookDeliveries().map((d) => d.status)).toEqual([200]);
    expect(fal.statusPolls()).toBe(0);
    expect(fal.statusStreams()).toBe(0);
  }, 60_000);
});
