import { describe, expect, it } from 'vitest';
import type { ChatAdapter } from '../../src/chat/types.js';
import { startHealthServer } from '../../src/health.js';
import { startFakeFal } from '../fakes/fal.js';
import { buildApp, onCleanup, requester } from '../helpers.js';

describe('health and metrics', () => {
  it('reports the store and adapters on /healthz, 503 when an adapter is down', async () => {
    const app = await buildApp();
    let connected = true;
    const adapter: ChatAdapter = { name: 'playground', healthy: () => connected, stop: async () => {} };
    const health = await startHealthServer(app, () => [adapter], 0);
    onCleanup(() => health.stop());
    const ok = await fetch(`${health.url}/healthz`);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ status: 'ok', store: 'reachable', adapters: [{ name: 'playground', connected: true }] });
    connected = false;
    const down = await fetch(`${health.url}/healthz`);
    expect(down.status).toBe(503);
    expect(await down.json()).toMatchObject({ status: 'degraded' });
  });

  it('counts jobs, images, provider calls, errors by code and 429s in Prometheus format', async () => {
    const fake = await startFakeFal({ key: 'k' });
    onCleanup(() => fake.close());
    fake.inject({ on: 'submit', fault: { kind: 'rate-limit', retryAfterSeconds: 0.05 } });
    fake.inject({ on: 'file', fault: { kind: 'server-error', status: 502 } });
    const app = await buildApp({ env: { FAL_KEY: 'k', FAL_BASE_URL: fake.url, FAL_CONCURRENCY: '1' } });
    const health = await startHealthServer(app, () => [], 0);
    onCleanup(() => health.stop());
    const job = await app.engine.submit({ prompt: 'fox', count: 6, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' }, requester());
    await app.engine.waitFor(job.id);
    const text = await (await fetch(`${health.url}/metrics`)).text();
    expect(text).toContain('art_factory_jobs_finished_total{state="completed"} 1');
    expect(text).toContain('art_factory_images_generated_total{provider="fal"} 6');
    expect(text).toContain('art_factory_provider_calls_total{provider="fal",operation="submit",outcome="ok",code=""} 2');
    expect(text).toContain('art_factory_provider_calls_total{provider="fal",operation="submit",outcome="error",code="429"} 1');
    expect(text).toContain('art_factory_provider_calls_total{provider="fal",operation="download",outcome="error",code="502"} 1');
    expect(text).toContain('art_factory_provider_429_total{provider="fal"} 1');
    expect(text).toContain('art_factory_queue_depth{provider="fal"} 0');
    expect(text).toMatch(/art_factory_jobs_active\{state="running"\} 0/);
  });
});
