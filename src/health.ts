/**
 * `GET /healthz` and `GET /metrics` (Prometheus text format, prom-client) on a loopback port.
 * Health: the store answers and every chat adapter is connected. Metrics: jobs by state, images
 * generated, provider calls and errors by code, 429s, and queue depth per provider.
 *
 * In distributed mode (REDIS_URL) health also PINGs Redis (down: 503) and counts each provider's
 * BullMQ queue, which metrics report as `art_factory_queue_jobs{provider,state}`: the queues are
 * shared, so every process reports the same counts. Neither names the Redis URL (it may hold a
 * password) nor passes on a Redis error's text.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { App } from './app.js';
import type { ChatAdapter } from './chat/types.js';
import type { CallRecord } from './core/engine.js';
import type { Job, ProviderName } from './core/types.js';
import { QUEUE_STATES, type QueueCounts } from './distributed/dispatch.js';

export interface HealthServer {
  url: string;
  port: number;
  registry: Registry;
  stop(): Promise<void>;
}

/** What health and metrics read of the app: the engine, the store, the providers, and Redis in distributed mode. */
export type Observed = Pick<App, 'engine' | 'keyv' | 'providers' | 'shared'>;

export interface HealthOptions {
  /**
   * How long Redis (and the store on it) may take to answer a probe before it counts as down; a
   * probe must answer while Redis does not, or the orchestrator asking would time out instead.
   * @default 1_000
   */
  redisTimeoutMs?: number;
}

const REDIS_TIMEOUT_MS = 1_000;

/** The promise's value if it settles within `ms`, else undefined; a late or failed answer is dropped, never thrown. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.catch(() => undefined),
    new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms))),
  ]).finally(() => clearTimeout(timer));
}

type Shared = NonNullable<Observed['shared']>;

/**
 * One PING. A connection that is not ready counts as down at once: a command sent then would wait
 * in ioredis's offline queue, and probes every few seconds would pile up there.
 */
async function redisUp(shared: Shared, ms: number): Promise<boolean> {
  if (shared.redis.status !== 'ready') return false;
  return (await within(shared.redis.ping(), ms)) === 'PONG';
}

/** Each provider queue's counts, or undefined when Redis is down or too slow to count them. */
async function queueCounts(shared: Shared, ms: number): Promise<QueueCounts[] | undefined> {
  if (shared.redis.status !== 'ready') return undefined;
  return within(shared.dispatcher.queueCounts(), ms);
}

export function createMetrics(app: Pick<Observed, 'engine' | 'providers' | 'shared'>, options: HealthOptions = {}): { registry: Registry; detach: () => void } {
  const redisTimeoutMs = options.redisTimeoutMs ?? REDIS_TIMEOUT_MS;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'art_factory_' });
  const providers = Object.keys(app.providers) as ProviderName[];
  new Gauge({
    name: 'art_factory_jobs_active',
    help: 'Unfinished jobs in this process, by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const counts: Record<string, number> = { queued: 0, running: 0 };
      for (const job of app.engine.activeJobs()) counts[job.state] = (counts[job.state] ?? 0) + 1;
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'art_factory_queue_depth',
    help: 'Provider calls waiting to start, per provider',
    labelNames: ['provider'],
    registers: [registry],
    collect() {
      for (const provider of providers) this.set({ provider }, app.engine.queueDepth(provider));
    },
  });
  const { shared } = app;
  if (shared) {
    new Gauge({
      name: 'art_factory_queue_jobs',
      help: 'Batch tickets in each provider queue (shared by every process), by state; absent while Redis is down',
      labelNames: ['provider', 'state'],
      registers: [registry],
      async collect() {
        // Old counts would look current: a scrape while Redis is down reports none.
        this.reset();
        for (const counts of (await queueCounts(shared, redisTimeoutMs)) ?? []) {
          for (const state of QUEUE_STATES) this.set({ provider: counts.provider, state }, counts[state]);
        }
      },
    });
  }
  const finished = new Counter({ name: 'art_factory_jobs_finished_total', help: 'Jobs finished, by final state', labelNames: ['state'], registers: [registry] });
  const images = new Counter({ name: 'art_factory_images_generated_total', help: 'Images saved, per provider', labelNames: ['provider'], registers: [registry] });
  const calls = new Counter({
    name: 'art_factory_provider_calls_total',
    help: 'Provider requests, by operation and outcome; code is the HTTP status or error kind of a failure',
    labelNames: ['provider', 'operation', 'outcome', 'code'],
    registers: [registry],
  });
  const throttled = new Counter({ name: 'art_factory_provider_429_total', help: 'Rate-limit answers (429) from providers', labelNames: ['provider'], registers: [registry] });

  const onCall = (call: CallRecord) => {
    calls.inc({ provider: call.provider, operation: call.operation, outcome: call.outcome, code: call.outcome === 'ok' ? '' : String(call.status ?? call.kind ?? '') });
    if (call.kind === 'rate_limited') throttled.inc({ provider: call.provider });
  };
  const onImages = (event: { provider: ProviderName; count: number }) => images.inc({ provider: event.provider }, event.count);
  const onFinished = (job: Job) => finished.inc({ state: job.state });
  app.engine.on('call', onCall);
  app.engine.on('images', onImages);
  app.engine.on('finished', onFinished);
  return {
    registry,
    detach() {
      app.engine.off('call', onCall);
      app.engine.off('images', onImages);
      app.engine.off('finished', onFinished);
    },
  };
}

export async function startHealthServer(app: Observed, adapters: () => ChatAdapter[], port: number, options: HealthOptions = {}): Promise<HealthServer> {
  const redisTimeoutMs = options.redisTimeoutMs ?? REDIS_TIMEOUT_MS;
  const { registry, detach } = createMetrics(app, options);
  const server: Server = createServer((req, res) => {
    void (async () => {
      if (req.method === 'GET' && req.url === '/metrics') {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(await registry.metrics());
        return;
      }
      if (req.method === 'GET' && req.url === '/healthz') {
        const { shared } = app;
        const probe = () => app.keyv.get('health:probe').then(() => true, () => false);
        // A SQLite read answers or fails; the store on Redis may do neither while Redis is gone, so it
        // is read only while our connection to the same Redis is up, and only for so long.
        const [store, redis, queues] = await Promise.all([
          shared ? (shared.redis.status === 'ready' ? within(probe(), redisTimeoutMs).then((answered) => answered === true) : false) : probe(),
          shared ? redisUp(shared, redisTimeoutMs) : undefined,
          shared ? queueCounts(shared, redisTimeoutMs) : undefined,
        ]);
        const chat = adapters().map((adapter) => ({ name: adapter.name, connected: adapter.healthy() }));
        // Ids and attempts only: the error text may name paths, and this answer is for probes.
        const unsaved = app.engine.unsavedJobs().map(({ jobId, attempts }) => ({ jobId, attempts }));
        const ok = store && redis !== false && chat.every((c) => c.connected) && unsaved.length === 0;
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            status: ok ? 'ok' : 'degraded',
            store: store ? 'reachable' : 'unreachable',
            adapters: chat,
            ...(unsaved.length > 0 ? { unsavedJobs: unsaved } : {}),
            // Counts only, never the URL or an error's text.
            ...(shared ? { redis: redis ? 'ok' : 'down', queues: queues ?? 'unknown' } : {}),
          }),
        );
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":"Not found"}');
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}`,
    port: bound,
    registry,
    async stop() {
      detach();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
