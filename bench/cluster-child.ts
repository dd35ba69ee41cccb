/**
 * One process of the distributed scenario (bench/cluster.ts): the real app in distributed mode
 * (REDIS_URL) against the fake fal server run by the parent. Every process runs batches; the first
 * also takes the requests and reports when each job finished. Speaks over IPC: `ready` once its
 * queues take work; `submit` (first process only) → `result`; `stop` → exits.
 */
import { createApp, type App } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import type { Rate } from '../src/core/rate.js';
import { createLogger } from '../src/logger.js';
import { loopbackFetch } from '../test/fakes/http.js';
import { benchEnv } from './protocol.js';

export interface ClusterChildSpec {
  redisUrl: string;
  prefix: string;
  outputDir: string;
  falUrl: string;
  falKey: string;
  concurrency: number;
  rateLimit: Rate;
  pollIntervalMs: number;
  retryBaseMs: number;
}

export interface ClusterRequest {
  tenant: string;
  prompt: string;
  count: number;
}

export type ClusterParentMessage = { kind: 'start'; spec: ClusterChildSpec } | { kind: 'submit'; requests: ClusterRequest[] } | { kind: 'stop' };
export type ClusterChildMessage =
  | { kind: 'ready' }
  /** t0: just before the first submit; finishedAt: epoch ms of each job's end, as recorded */
  | { kind: 'result'; t0: number; finishedAt: number[]; images: number }
  | { kind: 'error'; message: string };

async function build(spec: ClusterChildSpec): Promise<App> {
  const config = loadConfig({
    REDIS_URL: spec.redisUrl,
    REDIS_PREFIX: spec.prefix,
    OUTPUT_DIR: spec.outputDir,
    ...benchEnv(spec),
    TENANT_DAILY_IMAGES: '0',
  });
  // Scaled rates (100 per 12 s) cannot be spelled N/s|min|h: set the parsed value directly.
  config.fal!.rateLimit = spec.rateLimit;
  return createApp(config, { logger: createLogger('silent'), fetch: loopbackFetch, retryBaseMs: spec.retryBaseMs, pollIntervalMs: spec.pollIntervalMs });
}

const send = (message: ClusterChildMessage) => new Promise<void>((resolve) => process.send!(message, () => resolve()));

let app: App | undefined;
process.on('message', (message: ClusterParentMessage) => {
  void (async () => {
    try {
      if (message.kind === 'start') {
        app = await build(message.spec);
        await send({ kind: 'ready' });
      } else if (message.kind === 'submit') {
        const t0 = Date.now();
        const jobs = await Promise.all(
          message.requests.map((r) =>
            app!.engine.submit(
              { provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1', prompt: r.prompt, count: r.count },
              { tenant: r.tenant, userId: `user-${r.tenant}`, platform: 'cli' },
            ),
          ),
        );
        const done = await Promise.all(jobs.map((job) => app!.engine.waitFor(job.id)));
        await send({
          kind: 'result',
          t0,
          finishedAt: done.map((job) => Date.parse(job.finishedAt ?? job.updatedAt)),
          images: done.reduce((sum, job) => sum + job.images.length, 0),
        });
      } else {
        await app?.close();
        process.exit(0);
      }
    } catch (error) {
      await send({ kind: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
      process.exit(1);
    }
  })();
});
