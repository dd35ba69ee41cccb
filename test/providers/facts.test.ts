/**
 * Each provider's facts live in src/providers/facts.ts and nowhere else: the config's defaults and the
 * providers' own limits are read from there, so changing one fact changes every place that uses it.
 */
import { describe, expect, it } from 'vitest';
import { BUILT_IN_PRICES, DEFAULT_MODELS, DEFAULT_UPSCALE_MODELS, loadConfig } from '../../src/config.js';
import { maxPerCall } from '../../src/core/provider.js';
import { parseRate } from '../../src/core/rate.js';
import { PROVIDER_NAMES } from '../../src/core/types.js';
import { draftPriceFactorOf, maxPerCallOf, PROVIDER_FACTS } from '../../src/providers/facts.js';
import { createProviders } from '../../src/providers/index.js';

const EVERY_KEY = {
  FAL_KEY: 'fal-key',
  REPLICATE_API_TOKEN: 'r8_token',
  STABILITY_API_KEY: 'sk-stability',
  OPENAI_API_KEY: 'sk-openai',
  CIVITAI_API_TOKEN: 'civitai-token',
};

describe('provider facts', () => {
  it('are what the config defaults to, for every provider', () => {
    const config = loadConfig(EVERY_KEY);
    for (const name of PROVIDER_NAMES) {
      const facts = PROVIDER_FACTS[name];
      expect(DEFAULT_MODELS[name]).toBe(facts.defaultModel);
      expect(BUILT_IN_PRICES[name]).toEqual(facts.prices);
      expect(DEFAULT_UPSCALE_MODELS[name]).toBe(facts.upscaleModel);
      const provider = config[name]!;
      expect([name, provider.model, provider.concurrency]).toEqual([name, facts.defaultModel, facts.concurrency]);
      expect([name, provider.rateLimit]).toEqual([name, facts.rateLimit === undefined ? undefined : parseRate(facts.rateLimit)]);
      // Every default model is priced: a default never spends money at an unknown rate.
      expect(facts.prices[facts.defaultModel], name).toBeTypeOf('number');
    }
  });

  it('are what each provider plans its calls by', () => {
    const providers = createProviders(loadConfig(EVERY_KEY));
    for (const name of PROVIDER_NAMES) {
      const provider = providers[name]!;
      expect([name, provider.maxImagesPerCall, provider.typicalCallMs]).toEqual([name, PROVIDER_FACTS[name].maxPerCall, PROVIDER_FACTS[name].typicalCallMs]);
      for (const model of Object.keys(PROVIDER_FACTS[name].prices)) {
        expect([model, maxPerCall(provider, model)]).toEqual([model, maxPerCallOf(name, model)]);
        const draft = provider.draftPriceFactorFor?.(model) ?? provider.draftPriceFactor ?? 1;
        expect([model, draft]).toEqual([model, draftPriceFactorOf(name, model)]);
      }
    }
    expect(maxPerCallOf('openai', 'dall-e-3')).toBe(1);
    expect(maxPerCallOf('openai', 'gpt-image-1')).toBe(10);
    expect(maxPerCallOf('stability', 'stable-image-ultra')).toBe(1);
    expect(draftPriceFactorOf('openai', 'gpt-image-1')).toBeCloseTo(0.262, 3);
    expect(draftPriceFactorOf('openai', 'dall-e-3')).toBe(1);
  });
});
