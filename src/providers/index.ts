/** Builds the configured providers. `local` is always there: it needs nothing. */
import path from 'node:path';
import type { Config } from '../config.js';
import type { CallNotices, CallWebhook } from '../core/notices.js';
import type { Provider } from '../core/provider.js';
import type { ProviderName } from '../core/types.js';
import { FalProvider } from './fal.js';
import { CIVITAI_MEDIA_HOSTS, CivitaiProvider, DEFAULT_CIVITAI_BASE_URL } from './civitai.js';
import { createDownloader, FAL_MEDIA_HOSTS, REPLICATE_MEDIA_HOSTS, type Downloader } from './download.js';
import type { Fetch } from './http.js';
import { LocalProvider } from './local.js';
import { OpenAIProvider } from './openai.js';
import { DEFAULT_REPLICATE_BASE_URL, ReplicateProvider } from './replicate.js';
import { StabilityProvider } from './stability.js';

export interface ProviderOverrides {
  /** the fetch the hosted providers use (tests pass one that only reaches loopback) */
  fetch?: Fetch;
  requestTimeoutMs?: number;
  /** the notice board webhooks end calls through (required for webhooks: PUBLIC_URL) */
  notices?: CallNotices;
  /** time between a webhook-watched call's own status polls (tests shorten it) @default WEBHOOK_SAFETY_POLL_SECONDS */
  webhookSafetyPollMs?: number;
  /** waits before each reconnect of fal's status stream (tests shorten them) @default [250, 500, 1000] */
  falStreamRetryMs?: readonly number[];
}

/**
 * Where a provider's images may come from: its own media hosts, the origin of its configured base URL
 * (a proxy or a fake, allowed explicitly), and DOWNLOAD_HOSTS.
 */
function downloaderFor(config: Config, mediaHosts: readonly string[], baseUrl: string | undefined): Downloader {
  return createDownloader({
    mediaHosts,
    trustedOrigins: baseUrl ? [new URL(baseUrl).origin] : [],
    extraHosts: config.downloadHosts,
    maxBytes: config.maxImageBytes,
  });
}

export function createProviders(config: Config, overrides: ProviderOverrides = {}): Partial<Record<ProviderName, Provider>> {
  const http = { ...(overrides.fetch ? { fetch: overrides.fetch } : {}), ...(overrides.requestTimeoutMs ? { requestTimeoutMs: overrides.requestTimeoutMs } : {}) };
  const { webhooks } = config;
  const { notices } = overrides;
  if (webhooks && !notices) throw new Error('createProviders: PUBLIC_URL turns webhooks on, and they need a notice board (overrides.notices)');
  const webhook = (url: string): { webhook?: CallWebhook } =>
    webhooks && notices ? { webhook: { url, notices, safetyPollMs: overrides.webhookSafetyPollMs ?? webhooks.safetyPollMs } } : {};
  return {
    ...(config.fal
      ? {
          fal: new FalProvider({
            key: config.fal.key,
            baseUrl: config.fal.baseUrl,
            upscaleModel: config.fal.upscaleModel,
            download: downloaderFor(config, FAL_MEDIA_HOSTS, config.fal.baseUrl),
            ...(overrides.falStreamRetryMs ? { streamRetryMs: overrides.falStreamRetryMs } : {}),
            ...webhook(webhooks?.falUrl ?? ''),
            ...http,
          }),
        }
      : {}),
    ...(config.replicate
      ? {
          replicate: new ReplicateProvider({
            token: config.replicate.token,
            baseUrl: config.replicate.baseUrl,
            upscaleModel: config.replicate.upscaleModel,
            // The default API host is Replicate's own; only a configured one is trusted for images.
            download: downloaderFor(
              config,
              REPLICATE_MEDIA_HOSTS,
              config.replicate.baseUrl === DEFAULT_REPLICATE_BASE_URL ? undefined : config.replicate.baseUrl,
            ),
            ...webhook(webhooks?.replicateUrl ?? ''),
            ...(config.replicate.preferWaitSeconds > 0 ? { preferWaitSeconds: config.replicate.preferWaitSeconds } : {}),
            ...http,
          }),
        }
      : {}),
    ...(config.stability
      ? {
          stability: new StabilityProvider({
            key: config.stability.key,
            baseUrl: config.stability.baseUrl,
            heldDir: path.join(config.outputDir, '.held'),
            maxImageBytes: config.maxImageBytes,
            ...http,
          }),
        }
      : {}),
    ...(config.openai
      ? {
          openai: new OpenAIProvider({
            key: config.openai.key,
            baseUrl: config.openai.baseUrl,
            heldDir: path.join(config.outputDir, '.held'),
            ...http,
          }),
        }
      : {}),
    ...(config.civitai
      ? {
          civitai: new CivitaiProvider({
            token: config.civitai.token,
            baseUrl: config.civitai.baseUrl,
            // As for Replicate: the default API host is CivitAI's own; only a configured one is trusted for images.
            download: downloaderFor(
              config,
              CIVITAI_MEDIA_HOSTS,
              config.civitai.baseUrl === DEFAULT_CIVITAI_BASE_URL ? undefined : config.civitai.baseUrl,
            ),
            ...http,
          }),
        }
      : {}),
    local: new LocalProvider({ latencyMs: config.local.latencyMs }),
  };
}
