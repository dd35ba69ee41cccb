/**
 * The composition root's shared half: config → store → providers → engine. The bot (src/main.ts),
 * the command line (src/cli.ts) and the tests all assemble the core here, the same way.
 */
import type { ImagineLimits } from '../commands/imagine.js';
import { configuredProviders, DEFAULT_MODELS, type Config } from './config.js';
import { Engine } from './core/engine.js';
import type { Provider } from './core/provider.js';
import type { ProviderName } from './core/types.js';
import { createLogger, type Logger } from './logger.js';
import { createProviders, type ProviderOverrides } from './providers/index.js';
import { ImageFiles } from './store/files.js';
import { JobStore } from './store/jobs.js';
import { openKeyv } from './store/keyv.js';
import type { Keyv } from 'keyv';

export interface App {
  config: Config;
  engine: Engine;
  jobs: JobStore;
  /** the same store, for adapters' own small records */
  keyv: Keyv;
  files: ImageFiles;
  providers: Partial<Record<ProviderName, Provider>>;
  limits: ImagineLimits;
  logger: Logger;
  /** stops the engine (running calls stay persisted for the next start) and closes the store */
  close(): Promise<void>;
}

/** What /imagine accepts with this config: the image limit, the providers and their default models. */
export function imagineLimits(config: Config, providers: ProviderName[] = configuredProviders(config)): ImagineLimits {
  return {
    maxImagesPerJob: config.maxImagesPerJob,
    providers,
    defaultProvider: providers.includes(config.defaultProvider) ? config.defaultProvider : providers[0]!,
    defaultModels: {
      fal: config.fal?.model ?? DEFAULT_MODELS.fal,
      replicate: config.replicate?.model ?? DEFAULT_MODELS.replicate,
      local: DEFAULT_MODELS.local,
    },
    models: {
      fal: config.fal?.models ?? [DEFAULT_MODELS.fal],
      replicate: config.replicate?.models ?? [DEFAULT_MODELS.replicate],
      local: config.local.models,
    },
  };
}

export interface AppOverrides extends ProviderOverrides {
  logger?: Logger;
  /** replaces the providers built from config (tests and benchmarks) */
  providers?: Partial<Record<ProviderName, Provider>>;
  retryBaseMs?: number;
  retryMaxMs?: number;
  pollIntervalMs?: number;
}

export async function createApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const logger = overrides.logger ?? createLogger(config.logLevel);
  const keyv = await openKeyv(config.storeUrl);
  const jobs = new JobStore(keyv);
  const files = new ImageFiles(config.outputDir, { maxBytes: config.maxImageBytes });
  for (const name of ['fal', 'replicate'] as const) {
    if (config[name]?.models === '*') {
      logger.warn({ provider: name }, `${name.toUpperCase()}_MODELS=*: users may pick any ${name} model, including ones with no known price`);
    }
  }
  const providers = overrides.providers ?? createProviders(config, overrides);
  const lane = (p: { concurrency: number; rateLimit?: Config['tenantRateLimit'] } | undefined) =>
    p ? { concurrency: p.concurrency, ...(p.rateLimit ? { rateLimit: p.rateLimit } : {}) } : undefined;
  const engine = new Engine({
    jobs,
    files,
    providers,
    logger: logger,
    settings: {
      lanes: {
        ...(config.fal ? { fal: lane(config.fal) } : {}),
        ...(config.replicate ? { replicate: lane(config.replicate) } : {}),
        local: lane(config.local),
      },
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
    async close() {
      await engine.stop();
      await jobs.close();
    },
  };
}
