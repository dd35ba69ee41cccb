/**
 * The composition root's shared half: config → store → providers → engine. The bot (src/main.ts),
 * the command line (src/cli.ts) and the tests all assemble the core here, the same way.
 */
import type { ImagineLimits } from '../commands/imagine.js';
import { configuredProviders, DEFAULT_MODELS, type Config } from './config.js';
import type { LaneOptions } from './core/dispatch.js';
import { Engine } from './core/engine.js';
import { MemoryCallNotices, type CallNotices } from './core/notices.js';
import type { ContactSheets, FileFetcher, ImageReader, ImageStore, JobRepository, ReviewFeed } from './core/ports.js';
import type { Provider } from './core/provider.js';
import { TenantSettings } from './core/settings.js';
import { PROVIDER_NAMES, type Job, type ProviderName } from './core/types.js';
import { shownFile } from './core/views.js';
import { createLogger, type Logger } from './logger.js';
import { createProviders, type ProviderOverrides } from './providers/index.js';
import { createFileFetcher } from './providers/download.js';
import { renderContactSheet } from './store/contact-sheet.js';
import { ImageFiles } from './store/files.js';
import { openDistributed, type Distributed } from './distributed/index.js';
import { KeyvImageCache } from './store/cache.js';
import { JobStore } from './store/jobs.js';
import { openKeyv } from './store/keyv.js';
import type { Keyv } from 'keyv';

export interface App {
  config: Config;
  engine: Engine;
  jobs: JobRepository;
  /** the same store, for adapters' own small records */
  keyv: Keyv;
  /** images and manifests: the output folder, or an S3 bucket with the folder as this process's cache */
  files: ImageStore;
  providers: Partial<Record<ProviderName, Provider>>;
  limits: ImagineLimits;
  logger: Logger;
  /** ended calls told by webhook: in this process, or in Redis in distributed mode */
  notices: CallNotices;
  /** per-tenant settings (/settings), in the same store */
  settings: TenantSettings;
  /** small files a command brings (a Discord attachment), fetched under the download layer's rules */
  fetchFile: FileFetcher;
  /** contact sheets of big jobs' images (GALLERY_INLINE_MAX), read from image storage wherever it is */
  sheets: ContactSheets;
  /** distributed mode: reviews made in other processes, for live review pages; undefined in one process */
  reviewFeed?: ReviewFeed;
  /** distributed mode (REDIS_URL): the Redis connection and what is built on it; undefined in one process */
  shared?: Distributed;
  /** stops the engine (running calls stay persisted for the next start) and closes the store */
  close(): Promise<void>;
}

/** What /imagine accepts with this config: the image limit, the providers and their default models. */
export function imagineLimits(config: Config, providers: ProviderName[] = configuredProviders(config)): ImagineLimits {
  return {
    maxImagesPerJob: config.maxImagesPerJob,
    maxLoras: config.maxLoras,
    providers,
    defaultProvider: providers.includes(config.defaultProvider) ? config.defaultProvider : providers[0]!,
    defaultModels: Object.fromEntries(PROVIDER_NAMES.map((name) => [name, config[name]?.model ?? DEFAULT_MODELS[name]])),
    models: Object.fromEntries(PROVIDER_NAMES.map((name) => [name, config[name]?.models ?? [DEFAULT_MODELS[name]]])),
  };
}

export interface AppOverrides extends ProviderOverrides {
  logger?: Logger;
  /** replaces the providers built from config (tests and benchmarks) */
  providers?: Partial<Record<ProviderName, Provider>>;
  retryBaseMs?: number;
  retryMaxMs?: number;
  pollIntervalMs?: number;
  /** distributed mode: how long a dead process's tickets and job locks stay locked (tests shorten them) */
  queueLockMs?: number;
  jobLockMs?: number;
  /**
   * This process receives webhooks (it runs the public server: src/main.ts). With PUBLIC_URL, calls ask
   * for webhooks only where their end can reach the process watching them: here, or through Redis.
   * A process of its own without the server (the command line) watches the status stream and polls.
   */
  servesWebhooks?: boolean;
}

export async function createApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const logger = overrides.logger ?? createLogger(config.logLevel);
  const lane = (p: { concurrency: number; rateLimit?: Config['tenantRateLimit'] } | undefined): LaneOptions | undefined =>
    p ? { concurrency: p.concurrency, ...(p.rateLimit ? { rateLimit: p.rateLimit } : {}) } : undefined;
  const lanes = Object.fromEntries(configuredProviders(config).map((name) => [name, lane(config[name])])) as Partial<Record<ProviderName, LaneOptions | undefined>>;
  // Images first: a bucket that cannot be used stops start-up before anything else is opened. The
  // AWS SDK is loaded only when a bucket is configured.
  const files: ImageStore = config.s3
    ? await (await import('./store/s3.js')).openS3ImageStore(config.s3, config.outputDir, { maxBytes: config.maxImageBytes, logger: logger.child({ component: 's3' }) })
    : new ImageFiles(config.outputDir, { maxBytes: config.maxImageBytes });
  const { redisUrl } = config;
  const shared = redisUrl
    ? await openDistributed(
        { ...config, redisUrl },
        {
          lanes,
          logger,
          queueLockMs: overrides.queueLockMs ?? config.queueLockMs,
          jobLockMs: overrides.jobLockMs ?? Math.round(config.queueLockMs / 2),
          // `settings` is made once the store is open, below; tickets start (and ask) only after that.
          tenantConcurrency: async (tenant: string): Promise<number> => (await settings.limits(tenant)).calls,
        },
      )
    : undefined;
  const keyv = shared?.keyv ?? (await openKeyv(config.storeUrl));
  const jobs: JobRepository & { close(): Promise<void> } = shared?.jobs ?? new JobStore(keyv);
  const settings: TenantSettings = new TenantSettings({
    store: keyv,
    log: logger,
    policy: {
      plans: config.plans,
      defaultPlan: config.defaultPlan,
      maxImagesPerJob: config.maxImagesPerJob,
      ...(config.tenantDailyImages !== undefined ? { tenantDailyImages: config.tenantDailyImages } : {}),
      ...(config.globalDailyImages !== undefined ? { globalDailyImages: config.globalDailyImages } : {}),
    },
  });
  for (const name of ['fal', 'replicate'] as const) {
    if (config[name]?.models === '*') {
      logger.warn({ provider: name }, `${name.toUpperCase()}_MODELS=*: users may pick any ${name} model, including ones with no known price`);
    }
  }
  const notices: CallNotices = overrides.notices ?? shared?.notices ?? new MemoryCallNotices();
  const webhooks = config.webhooks && (shared || overrides.servesWebhooks) ? config.webhooks : undefined;
  const providers = overrides.providers ?? createProviders({ ...config, webhooks }, { ...overrides, notices });
  const engine = new Engine({
    jobs,
    files,
    providers,
    logger: logger,
    ...(shared ? { dispatcher: shared.dispatcher, locks: shared.locks, book: shared.book } : {}),
    // CACHE=off: no index is read or written.
    ...(config.cache ? { cache: new KeyvImageCache(keyv, files) } : {}),
    tenantSettings: settings,
    settings: {
      lanes,
      tenantRate: config.tenantRateLimit,
      maxAttempts: config.maxAttempts,
      callTimeoutMs: config.callTimeoutMs,
      tenantMaxRunningJobs: config.tenantMaxRunningJobs,
      tenantMaxQueuedJobs: config.tenantMaxQueuedJobs,
      tenantDailyImages: config.tenantDailyImages,
      globalDailyImages: config.globalDailyImages,
      userMaxActiveJobs: config.userMaxActiveJobs,
      prices: config.prices,
      ...(overrides.retryBaseMs !== undefined ? { retryBaseMs: overrides.retryBaseMs } : {}),
      ...(overrides.retryMaxMs !== undefined ? { retryMaxMs: overrides.retryMaxMs } : {}),
      ...(overrides.pollIntervalMs !== undefined ? { pollIntervalMs: overrides.pollIntervalMs } : {}),
    },
  });
  await engine.ready();
  if (shared) {
    // The engine tells its own process of a review; the others' review pages hear it from here.
    engine.on('reviewed', (job) => void shared.reviews.publish(job.id).catch((error: Error) => logger.warn({ job: job.id, err: error.message }, 'review feed: could not publish')));
  }
  const limits = imagineLimits(config, Object.keys(providers) as ProviderName[]);
  return {
    config,
    engine,
    jobs,
    keyv,
    files,
    providers,
    limits,
    logger,
    notices,
    settings,
    fetchFile: createFileFetcher(),
    sheets: contactSheets(files),
    ...(shared ? { shared, reviewFeed: shared.reviews } : {}),
    async close() {
      await engine.stop();
      await files.close?.();
      if (shared) await shared.close();
      else await jobs.close();
    },
  };
}

/**
 * Contact sheets from image storage: each tile's bytes are read where the image is kept (the folder,
 * or the bucket through this process's cache), so any process can render any job's sheet. An image
 * that cannot be read becomes a grey numbered tile, not a missing sheet.
 */
function contactSheets(files: ImageReader): ContactSheets {
  return {
    async render(job: Readonly<Job>, images: readonly number[]) {
      const tiles = await Promise.all(
        job.images
          .filter((image) => images.includes(image.index))
          .map(async (image) => ({
            number: image.index,
            nsfw: image.nsfw,
            path: await files.read(job.id, shownFile(image)).catch(() => Buffer.alloc(0)),
          })),
      );
      const sheet = await renderContactSheet(tiles);
      return { data: sheet.data, contentType: sheet.contentType, width: sheet.width, height: sheet.height };
    },
  };
}
