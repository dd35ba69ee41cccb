/** Builds the configured providers. `local` is always there: it needs nothing. */
import type { Config } from '../config.js';
import type { Provider } from '../core/provider.js';
import type { ProviderName } from '../core/types.js';
import { FalProvider } from './fal.js';
import type { Fetch } from './http.js';
import { LocalProvider } from './local.js';
import { ReplicateProvider } from './replicate.js';

export interface ProviderOverrides {
  /** the fetch the hosted providers use (tests pass one that only reaches loopback) */
  fetch?: Fetch;
  requestTimeoutMs?: number;
}

export function createProviders(config: Config, overrides: ProviderOverrides = {}): Partial<Record<ProviderName, Provider>> {
  const http = { ...(overrides.fetch ? { fetch: overrides.fetch } : {}), ...(overrides.requestTimeoutMs ? { requestTimeoutMs: overrides.requestTimeoutMs } : {}) };
  return {
    ...(config.fal ? { fal: new FalProvider({ key: config.fal.key, baseUrl: config.fal.baseUrl, ...http }) } : {}),
    ...(config.replicate
      ? { replicate: new ReplicateProvider({ token: config.replicate.token, baseUrl: config.replicate.baseUrl, ...http }) }
      : {}),
    local: new LocalProvider({ latencyMs: config.local.latencyMs }),
  };
}
