// Calls that end by webhook (PUBLIC_URL): the real @fal-ai/client and replicate SDK through our
// providers against the fakes, which POST signed deliveries to the bot's own public server. Counted at
// the fakes: a call that ends by webhook needs no status poll, no status stream and no result GET.
import { describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Job } from '../../src/core/types.js';
import { createWebhookReceiver, type WebhookReceiver } from '../../src/providers/webhooks.js';
import { startWebServer, type WebServer } from '../../src/web/server.js';
import { webhookRoutes } from '../../src/web/webhooks.js';
import { startFakeFal, type FakeFal } from '../fakes/fal.js';
import { loopbackFetch, pollUntil, type WebhookDelivery, type WebhookFault } from '../fakes/http.js';
import { startFakeReplicate, type FakeReplicate } from '../fakes/replicate.js';
import { buildApp, onCleanup, requester, untilProgress } from '../helpers.js';

/** Long enough that a safety poll never happens in a test that does not wait for one. */
const NO_POLL_MS = 600_000;

async function publicServer(): Promise<WebServer> {
  const server = await startWebServer({ port: 0, host: '127.0.0.1', log: { debug() {}, info() {}, warn() {}, error() {} } });
  onCleanup(() => server.stop());
  return server;
}

/** An app whose calls end by webhook, and its public server with the webhook routes on it. */
async function webhookApp(env: Record<string, string>, safetyPollMs = NO_POLL_MS): Promise<App & { dir: string }> {
  const server = await publicServer();
  const app = await buildApp({ env: { ...env, PUBLIC_URL: server.url }, webhookSafetyPollMs: safetyPollMs, servesWebhooks: true });
  server.add(...webhookRoutes(createWebhookReceiver(app.config, app.notices, app.logger, { fetch: loopbackFetch })));
  return app;
}

async function fakeFal(latencyMs: number): Promise<FakeFal> {
  const fake = await startFakeFal({ key: 'fal-test-key', latencyMs });
  onCleanup(() => fake.close());
  return fake;
}

async function fakeReplicate(latencyMs: number): Promise<FakeReplicate> {
  const fake = await startFakeReplicate({ key: 'r8-test-token', latencyMs });
  onCleanup(() => fake.close());
  return fake;
}

const falEnv = (fake: FakeFal) => ({ FAL_KEY: 'fal-test-key', FAL_BASE_URL: fake.url, FAL_JWKS_URL: fake.jwksUrl });
const replicateEnv = (fake: FakeReplicate) => ({ REPLICATE_API_TOKEN: 'r8-test-token', REPLICATE_BASE_URL: fake.url });

const falRequest = { prompt: 'a heron at dawn', count: 4, provider: 'fal' as const, model: 'fal-ai/flux/schnell', aspectRatio: '1:1' as const };
const replicateRequest = { prompt: 'a lighthouse', count: 4, provider: 'replicate' as const, model: 'black-forest-labs/flux-schnell', aspectRatio: '1:1' as const };

/** The first delivery that got an answer (the receiver's status). */
async function answered(fake: { webhookDeliveries(): WebhookDelivery[] }, count = 1): Promise<WebhookDelivery[]> {
  const { value } = await pollUntil(
    async () => fake.webhookDeliveries().filter((d) => d.status !== undefined),
    (list) => list.length >= count,
    { timeoutMs: 10_000 },
  );
  return value;
}

describe('webhooks end calls', () => {
  it('fal: a signed webhook finishes the call: no status poll, no status stream, no result GET', async () => {
    const fake = await fakeFal(200);
    const app = await webhookApp(falEnv(fake));
    const done = await app.engine.waitFor((await app.engine.submit(falRequest, requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    expect(fake.submits()).toHaveLength(1);
    expect(fake.submits()[0]!.query.fal_webhook).toBe(`${app.config.publicUrl}/webhooks/fal`);
    expect(fake.statusPolls()).toBe(0);
    expect(fake.statusStreams()).toBe(0);
    const [requestId] = fake.requests.keys();
    expect(fake.calls.filter((c) => c.method === 'GET' && c.path.endsWith(`/requests/${requestId}`))).toEqual([]);
    expect(fake.webhookDeliveries().map((d) => [d.requestId, d.status])).toEqual([[requestId, 200]]);
    expect(done.batches[0]).toMatchObject({ attempts: 1, failures: 0, state: 'done' });
  });

  it('Replicate: a signed webhook finishes the prediction with zero GETs; the secret is fetched once from the API', async () => {
    const fake = await fakeReplicate(200);
    const app = await webhookApp(replicateEnv(fake));
    const done = await app.engine.waitFor((await app.engine.submit(replicateRequest, requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    expect(fake.submits()[0]!.body).toMatchObject({ webhook: `${app.config.publicUrl}/webhooks/replicate`, webhook_events_filter: ['completed'] });
    expect(fake.gets()).toEqual([]);
    expect(fake.webhookDeliveries().map((d) => d.status)).toEqual([200]);
    expect(fake.calls.filter((c) => c.path === '/v1/webhooks/default/secret')).toHaveLength(1);
  });

  it('Replicate: REPLICATE_WEBHOOK_SECRET is used as given, without asking the API', async () => {
    const fake = await fakeReplicate(100);
    const app = await webhookApp({ ...replicateEnv(fake), REPLICATE_WEBHOOK_SECRET: fake.webhookSecret });
    const done = await app.engine.waitFor((await app.engine.submit(replicateRequest, requester())).id);
    expect(done.state).toBe('completed');
    expect(fake.gets()).toEqual([]);
    expect(fake.calls.filter((c) => c.path === '/v1/webhooks/default/secret')).toEqual([]);
  });

  it('fal: a webhook that never comes is caught by the safety poll, which finishes the call', async () => {
    const fake = await fakeFal(100);
    fake.injectWebhook({ kind: 'drop' });
    const app = await webhookApp(falEnv(fake), 150);
    const done = await app.engine.waitFor((await app.engine.submit(falRequest, requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    expect(fake.statusPolls()).toBeGreaterThanOrEqual(1);
    expect(fake.statusStreams()).toBe(0);
    expect(fake.webhookDeliveries().map((d) => [d.fault, d.status])).toEqual([['drop', undefined]]);
  });

  it('fal: a call resumed after a restart is polled once at once (its webhook may have come while down), then ends by webhook', async () => {
    const fake = await fakeFal(600);
    const server = await publicServer();
    // the route hands each delivery to whichever process is up
    let receiver: WebhookReceiver | undefined;
    server.add({ method: 'POST', path: '/webhooks/fal', handle: async ({ body, headers }) => receiver!.receive('fal', { body, headers }) });
    const env = { ...falEnv(fake), PUBLIC_URL: server.url };
    const first = await buildApp({ env, webhookSafetyPollMs: NO_POLL_MS, servesWebhooks: true });
    receiver = createWebhookReceiver(first.config, first.notices, first.logger, { fetch: loopbackFetch });
    const job = await first.engine.submit(falRequest, requester());
    await untilProgress(first, (j) => j.id === job.id && j.batches[0]!.requestId !== undefined);
    await first.close();

    const second = await buildApp({ env, webhookSafetyPollMs: NO_POLL_MS, servesWebhooks: true, dir: first.dir });
    receiver = createWebhookReceiver(second.config, second.notices, second.logger, { fetch: loopbackFetch });
    expect(await second.engine.resume()).toBe(1);
    const done = await second.engine.waitFor(job.id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    expect(fake.submits()).toHaveLength(1);
    // the one poll at the resume: it saw the end, or the webhook came after it
    expect(fake.statusPolls()).toBe(1);
  });

  it('a process of its own that serves no webhooks (the command line) does not ask for them: the status stream ends its call', async () => {
    const fake = await fakeFal(100);
    const app = await buildApp({ env: { ...falEnv(fake), PUBLIC_URL: 'https://bot.example.com' } });
    const done = await app.engine.waitFor((await app.engine.submit(falRequest, requester())).id);
    expect(done.state).toBe('completed');
    expect(fake.submits()[0]!.query.fal_webhook).toBeUndefined();
    expect(fake.statusStreams()).toBe(1);
    expect(fake.webhookDeliveries()).toEqual([]);
  });

  it('Replicate: a webhook that never comes is caught by the safety poll', async () => {
    const fake = await fakeReplicate(100);
    fake.injectWebhook({ kind: 'drop' });
    const app = await webhookApp(replicateEnv(fake), 150);
    const done = await app.engine.waitFor((await app.engine.submit(replicateRequest, requester())).id);
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    expect(fake.gets().length).toBeGreaterThanOrEqual(1);
  });
});

const refusals: [WebhookFault['kind'], WebhookFault, number, string][] = [
  ['bad-signature', { kind: 'bad-signature' }, 401, 'signature does not match'],
  ['old-timestamp', { kind: 'old-timestamp', seconds: 600 }, 401, 'timestamp outside the 5-minute window'],
  ['unknown-id', { kind: 'unknown-id' }, 404, 'not a call we are waiting on'],
];

describe.each([
  ['fal', 'fal' as const],
  ['Replicate', 'replicate' as const],
])('%s webhooks refused, nothing changed', (_name, provider) => {
  async function setUp() {
    if (provider === 'fal') {
      const fake = await fakeFal(100);
      return { fake, app: await webhookApp(falEnv(fake)), request: falRequest, ids: () => [...fake.requests.keys()], polls: () => fake.statusPolls() };
    }
    const fake = await fakeReplicate(100);
    return { fake, app: await webhookApp(replicateEnv(fake)), request: replicateRequest, ids: () => [...fake.predictions.keys()], polls: () => fake.gets().length };
  }

  /** The job as it stands, with what a refusal must not have changed. */
  async function unchanged(app: App, job: Job, requestId: string) {
    const now = (await app.jobs.get(job.id))!;
    expect(now.state).not.toBe('completed');
    expect(now.images).toEqual([]);
    expect(now.batches[0]).toMatchObject({ state: 'submitted', requestId });
    expect(await app.notices.get(provider, requestId)).toBeUndefined();
  }

  it.each(refusals)('%s: refused, the call is not ended by it', async (_kind, fault, status, reason) => {
    const { fake, app, request, ids, polls } = await setUp();
    fake.injectWebhook(fault);
    const job = await app.engine.submit(request, requester());
    const [delivery] = await answered(fake);
    expect(delivery!.status).toBe(status);
    expect(JSON.parse(delivery!.answer!)).toEqual({ error: reason });
    const [requestId] = ids();
    await unchanged(app, job, requestId!);
    // an unknown id leaves no notice under the id it named either
    expect(await app.notices.get(provider, delivery!.requestId)).toBeUndefined();
    expect(polls()).toBe(0);
  });

  it('replay: the same delivery a second time is refused with 409; the call ended once', async () => {
    const { fake, app, request, ids } = await setUp();
    fake.injectWebhook({ kind: 'replay' });
    const done = await app.engine.waitFor((await app.engine.submit(request, requester())).id);
    const deliveries = await answered(fake, 2);
    expect(deliveries.map((d) => d.status)).toEqual([200, 409]);
    expect(deliveries[1]!.headers).toEqual(deliveries[0]!.headers);
    expect(JSON.parse(deliveries[1]!.answer!)).toEqual({ error: 'delivery seen before' });
    expect(done.state).toBe('completed');
    expect(done.images).toHaveLength(4);
    const [requestId] = ids();
    expect(await app.notices.get(provider, requestId!)).toMatchObject({ requestId, status: { state: 'succeeded' } });
  });
});
