/**
 * /healthz and /metrics in distributed mode: Redis answers a PING or is reported down (503), and each
 * provider's BullMQ queue is counted, in the health answer and as `art_factory_queue_jobs` gauges.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { startHealthServer } from '../../src/health.js';
import { buildApp, onCleanup, requester, tempDir } from '../helpers.js';
import { describeRedis, redisUrl, testPrefix } from '../redis/redis.js';
import { startRedisServer } from '../redis/server.js';

const LOCAL = { provider: 'local' as const, model: 'local', aspectRatio: '1:1' as const };

async function distributedApp(url: string, extra: Record<string, string> = {}) {
  const shared = await tempDir();
  return buildApp({
    env: { REDIS_URL: url, REDIS_PREFIX: testPrefix(), OUTPUT_DIR: path.join(shared, 'output'), ...extra },
    queueLockMs: 2_000,
    jobLockMs: 2_000,
  });
}

/**
 * A redis-server on a given port (where a stopped one was), so that the app's connections find Redis
 * again: closing an app whose Redis is gone would wait on its reconnects. Resolves with its stop,
 * which the caller runs after closing the app.
 */
async function redisOn(port: string, dir: string): Promise<() => Promise<void>> {
  const child = spawn(
    process.env.REDIS_SERVER ?? 'redis-server',
    ['--port', port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxmemory-policy', 'noeviction'],
    { stdio: 'ignore' },
  );
  const stop = async () => {
    if (child.exitCode !== null) return;
    child.kill('SIGTERM');
    await once(child, 'exit');
  };
  for (let tried = 0; ; tried += 1) {
    const probe = new Redis(Number(port), '127.0.0.1', { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    probe.on('error', () => {});
    const up = await probe.connect().then(
      () => probe.ping(),
      () => undefined,
    );
    probe.disconnect();
    if (up === 'PONG') return stop;
    if (tried >= 100 || child.exitCode !== null) {
      await stop();
      throw new Error(`redis-server did not start again on port ${port}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Every sample of one metric, as `{labels} value` lines keyed by their labels. */
function samples(text: string, name: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`).exec(line);
    if (match) found.set(match[1]!, Number(match[2]));
  }
  return found;
}

describeRedis('health and metrics in distributed mode', () => {
  it('reports Redis ok and counts the tickets waiting in each provider queue, on /healthz and /metrics', async () => {
    // An edge process runs no tickets: what it queues stays queued, so the counts are exact.
    const app = await distributedApp(redisUrl, { ROLE: 'edge' });
    const health = await startHealthServer(app, () => [], 0);
    onCleanup(() => health.stop());
    const job = await app.engine.submit({ ...LOCAL, prompt: 'a counted fox', count: 10 }, requester());
    expect(job.batches).toHaveLength(3);

    const answer = await fetch(`${health.url}/healthz`);
    const body = (await answer.json()) as { status: string; redis: string; queues: Record<string, unknown>[] };
    expect(answer.status).toBe(200);
    expect(body.status).toBe('ok');
    expect(body.redis).toBe('ok');
    const local = body.queues.find((queue) => queue.provider === 'local');
    expect(local).toMatchObject({ active: 0, delayed: 0 });
    expect(Number(local!.waiting) + Number(local!.prioritized)).toBe(3);

    const text = await (await fetch(`${health.url}/metrics`)).text();
    const gauges = samples(text, 'art_factory_queue_jobs');
    expect(gauges.get('provider="local",state="active"')).toBe(0);
    expect(gauges.get('provider="local",state="delayed"')).toBe(0);
    expect((gauges.get('provider="local",state="waiting"') ?? NaN) + (gauges.get('provider="local",state="prioritized"') ?? NaN)).toBe(3);
    // Neither answer names where Redis is.
    const { host } = new URL(redisUrl);
    for (const reply of [JSON.stringify(body), text]) {
      expect(reply).not.toContain(host);
      expect(reply).not.toContain('redis://');
    }
  });

  it('answers 503 with Redis down while it is stopped (/metrics leaves the queue gauges out), and ok again once it is back', async () => {
    const server = await startRedisServer();
    onCleanup(() => server.stop());
    const { port } = new URL(server.url);
    // Cleanups run last first: the Redis started again below must outlive the app's close.
    const dir = await tempDir('af-redis-again-');
    let stopAgain = async () => {};
    onCleanup(() => stopAgain());
    const app = await distributedApp(server.url);
    const health = await startHealthServer(app, () => [], 0, { redisTimeoutMs: 300 });
    onCleanup(() => health.stop());
    const before = await fetch(`${health.url}/healthz`);
    expect(before.status).toBe(200);
    expect(samples(await (await fetch(`${health.url}/metrics`)).text(), 'art_factory_queue_jobs').size).toBeGreaterThan(0);

    await server.stop();
    const answer = await fetch(`${health.url}/healthz`);
    expect(answer.status).toBe(503);
    const body = (await answer.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ status: 'degraded', redis: 'down', store: 'unreachable', queues: 'unknown' });
    expect(JSON.stringify(body)).not.toContain(port);

    const metrics = await fetch(`${health.url}/metrics`);
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(samples(text, 'art_factory_queue_jobs').size).toBe(0);
    expect(text).toContain('art_factory_jobs_active');

    // Redis back on its port: the same probe is answered ok again, with the queues counted.
    stopAgain = await redisOn(port, dir);
    let again: Response | undefined;
    for (let tried = 0; tried < 100 && again?.status !== 200; tried += 1) {
      again = await fetch(`${health.url}/healthz`);
      if (again.status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(again!.status).toBe(200);
    expect(await again!.json()).toMatchObject({ status: 'ok', redis: 'ok', store: 'reachable' });
    // Closed here, within this test's time: its connections reconnecting after the outage can make
    // closing take longer than a cleanup hook's 30 s on a loaded machine.
    await health.stop();
    await app.close();
  }, 120_000);

  it('leaves Redis and queues out of the answer of a process on SQLite', async () => {
    const app = await buildApp();
    const health = await startHealthServer(app, () => [], 0);
    onCleanup(() => health.stop());
    const body = (await (await fetch(`${health.url}/healthz`)).json()) as Record<string, unknown>;
    expect(body.status).toBe('ok');
    expect(Object.keys(body).sort()).toEqual(['adapters', 'status', 'store']);
    expect(await (await fetch(`${health.url}/metrics`)).text()).not.toContain('art_factory_queue_jobs');
  });
});
