import { describe, expect, it } from 'vitest';
import { configError } from './config-refusal.js';
import { configuredProviders, loadConfig } from '../src/config.js';
import { parseRate } from '../src/core/rate.js';


describe('loadConfig', () => {
  it('runs with no variables at all: local provider, SQLite store, playground on', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      defaultProvider: 'local',
      storeUrl: 'sqlite://data/art-factory.sqlite',
      outputDir: 'data/output',
      maxImagesPerJob: 100,
      tenantRateLimit: { limit: 60, intervalMs: 60_000 },
      playground: { enabled: true, port: 4000 },
    });
    expect(config.discord).toBeUndefined();
    expect(config.fal).toBeUndefined();
    expect(configuredProviders(config)).toEqual(['local']);
  });

  it('turns a provider on with its key and applies the documented defaults', () => {
    const config = loadConfig({ FAL_KEY: 'id:secret', REPLICATE_API_TOKEN: 'r8_x' });
    expect(config.fal).toMatchObject({ model: 'fal-ai/flux/schnell', concurrency: 10 });
    expect(config.fal!.rateLimit).toBeUndefined();
    expect(config.replicate).toMatchObject({ baseUrl: 'https://api.replicate.com/v1', rateLimit: { limit: 600, intervalMs: 60_000 }, preferWaitSeconds: 0 });
    expect(loadConfig({ REPLICATE_API_TOKEN: 'r8_x', REPLICATE_PREFER_WAIT: '20' }).replicate!.preferWaitSeconds).toBe(20);
    expect(() => loadConfig({ REPLICATE_API_TOKEN: 'r8_x', REPLICATE_PREFER_WAIT: '60' })).toThrow(/REPLICATE_PREFER_WAIT/);
    expect(config.defaultProvider).toBe('fal');
    expect(configuredProviders(config)).toEqual(['fal', 'replicate', 'local']);
  });

  it('turns the playground off by default when a chat token is set, and PLAYGROUND forces it', () => {
    expect(loadConfig({ DISCORD_TOKEN: 't', DISCORD_APP_ID: '123456789' }).playground.enabled).toBe(false);
    expect(loadConfig({ DISCORD_TOKEN: 't', DISCORD_APP_ID: '123456789', PLAYGROUND: 'on' }).playground.enabled).toBe(true);
    expect(loadConfig({ PLAYGROUND: 'off' }).playground.enabled).toBe(false);
  });

  it.each([
    [{ MAX_IMAGES_PER_JOB: '5000' }, 'MAX_IMAGES_PER_JOB: expected an integer from 1 to 1000, got "5000"'],
    [{ FAL_RATE_LIMIT: 'fast' }, 'FAL_RATE_LIMIT: expected a rate written N/s, N/min or N/h with N ≥ 1 (e.g. 600/min), got "fast"'],
    [{ DEFAULT_PROVIDER: 'dalle' }, 'DEFAULT_PROVIDER: expected one of fal, replicate, local, stability, openai, civitai, got "dalle"'],
    [{ DEFAULT_PROVIDER: 'fal' }, 'DEFAULT_PROVIDER: "fal" needs FAL_KEY to be set'],
    [{ STORE_URL: 'mysql://x' }, 'STORE_URL: expected sqlite://PATH or redis://HOST, got "mysql://x"'],
    [{ REPLICATE_BASE_URL: 'not a url' }, 'REPLICATE_BASE_URL: expected an http(s) URL ending in /v1, got "not a url"'],
    [{ PLAYGROUND: 'maybe' }, 'PLAYGROUND: expected on or off (or unset), got "maybe"'],
    [{ DISCORD_TOKEN: 'x' }, 'DISCORD_APP_ID: expected the application id when DISCORD_TOKEN is set, got nothing'],
    [{ MODEL_PRICES: '{"a":-1}' }, 'MODEL_PRICES: expected a JSON object of model id → USD per image, got "{"a":-1}"'],
  ])('stops on %j naming the variable, the expectation and the value', (env, message) => {
    expect(configError(env)).toBe(message);
  });

  it('never repeats a secret in its messages', () => {
    const message = configError({ SLACK_BOT_TOKEN: 'xoxb-very-secret' });
    expect(message).toBe('SLACK_SIGNING_SECRET: expected the signing secret when SLACK_BOT_TOKEN is set, got nothing');
    expect(message).not.toContain('very-secret');
  });
});

describe('distributed mode settings', () => {
  it('stays in one process without REDIS_URL, and needs it for any role but all', () => {
    const config = loadConfig({});
    expect(config.redisUrl).toBeUndefined();
    expect(config).toMatchObject({ role: 'all', redisPrefix: 'af', queueLockMs: 30_000 });
    expect(configError({ ROLE: 'worker' })).toBe('ROLE: "worker" needs REDIS_URL (edge and worker processes share work through Redis)');
    expect(configError({ ROLE: 'boss', REDIS_URL: 'redis://127.0.0.1:6379' })).toBe('ROLE: expected one of all, edge, worker, got "boss"');
    expect(loadConfig({ REDIS_URL: 'redis://r:6379', ROLE: 'edge', REDIS_PREFIX: 'prod-1', QUEUE_LOCK_SECONDS: '10' })).toMatchObject({
      redisUrl: 'redis://r:6379',
      role: 'edge',
      redisPrefix: 'prod-1',
      queueLockMs: 10_000,
    });
    expect(configError({ REDIS_PREFIX: 'a:b' })).toBe('REDIS_PREFIX: expected letters, digits, _ or - (at most 32), got "a:b"');
  });

  it('never echoes a Redis URL, which may carry a password', () => {
    const message = configError({ REDIS_URL: 'http://user:hunter2@redis.internal:6379' });
    expect(message).toBe('REDIS_URL: expected redis://HOST:PORT (or rediss://), got a value that is not valid');
    expect(message).not.toContain('hunter2');
  });

  it('reads DISCORD_SHARDS and DISCORD_SHARD_IDS, and refuses ids the count cannot hold', () => {
    expect(loadConfig({}).discordShards).toBeUndefined();
    expect(loadConfig({ DISCORD_SHARDS: 'auto' }).discordShards).toEqual({ count: 'auto' });
    expect(loadConfig({ DISCORD_SHARDS: '4', DISCORD_SHARD_IDS: '0, 2-3' }).discordShards).toEqual({ count: 4, ids: [0, 2, 3] });
    expect(configError({ DISCORD_SHARDS: '4', DISCORD_SHARD_IDS: '1,4' })).toBe('DISCORD_SHARD_IDS: expected ids from 0 to 3 (DISCORD_SHARDS=4), got 4');
    expect(configError({ DISCORD_SHARD_IDS: '0' })).toBe('DISCORD_SHARD_IDS: needs DISCORD_SHARDS (the total shard count) to be set');
    expect(configError({ DISCORD_SHARDS: 'auto', DISCORD_SHARD_IDS: '0' })).toBe(
      'DISCORD_SHARD_IDS: needs a numeric DISCORD_SHARDS, got "auto" (each process must know the total)',
    );
    expect(configError({ DISCORD_SHARDS: '2', DISCORD_SHARD_IDS: '1-0' })).toBe('DISCORD_SHARD_IDS: expected ranges low-high, got "1-0"');
    expect(configError({ DISCORD_SHARDS: '0' })).toBe('DISCORD_SHARDS: expected auto or a shard count from 1, got "0"');
  });
});

describe('parseRate', () => {
  it.each([
    ['10/s', { limit: 10, intervalMs: 1000 }],
    ['600/min', { limit: 600, intervalMs: 60_000 }],
    ['1000/h', { limit: 1000, intervalMs: 3_600_000 }],
    ['', undefined],
  ])('reads %j', (text, rate) => {
    expect(parseRate(text)).toEqual(rate);
  });

  it.each(['0/s', '10', '10/day', '-1/min', '1.5/s'])('rejects %j', (text) => {
    expect(() => parseRate(text)).toThrow(`got "${text}"`);
  });
});

describe('review page and contact sheet settings', () => {
  const secret = 'x'.repeat(40);

  it('offers the review page only with both PUBLIC_URL and REVIEW_SECRET, links valid 24 h unless told', () => {
    expect(loadConfig({}).galleryInlineMax).toBe(20);
    expect(loadConfig({ REVIEW_SECRET: secret }).review).toBeUndefined();
    expect(loadConfig({ PUBLIC_URL: 'https://bot.example.com/' }).review).toBeUndefined();
    expect(loadConfig({ PUBLIC_URL: 'https://bot.example.com/', REVIEW_SECRET: secret, GALLERY_INLINE_MAX: '8' })).toMatchObject({
      galleryInlineMax: 8,
      review: { baseUrl: 'https://bot.example.com', secret, linkMs: 24 * 3_600_000 },
    });
    expect(loadConfig({ PUBLIC_URL: 'https://bot.example.com', REVIEW_SECRET: secret, REVIEW_LINK_HOURS: '2' }).review?.linkMs).toBe(7_200_000);
  });

  it('refuses a short secret without echoing it, and out-of-range numbers', () => {
    const message = configError({ PUBLIC_URL: 'https://bot.example.com', REVIEW_SECRET: 'short-secret' });
    expect(message).toBe('REVIEW_SECRET: expected a random secret of at least 32 characters, got a value that is not valid');
    expect(configError({ GALLERY_INLINE_MAX: '0' })).toBe('GALLERY_INLINE_MAX: expected an integer from 1 to 1000, got "0"');
    expect(configError({ PUBLIC_URL: 'https://bot.example.com', REVIEW_SECRET: secret, REVIEW_LINK_HOURS: '9999' })).toBe(
      'REVIEW_LINK_HOURS: expected an integer from 1 to 720, got "9999"',
    );
  });
});
