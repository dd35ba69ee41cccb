// The configuration of the public server and of webhooks: read once, checked, secrets never echoed.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';

const errorOf = (env: Record<string, string>): ConfigError => {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
};

describe('webhook configuration', () => {
  it('is off without PUBLIC_URL; the server would listen on 0.0.0.0:8080', () => {
    const config = loadConfig({});
    expect(config.webhooks).toBeUndefined();
    expect(config.http).toEqual({ host: '0.0.0.0', port: 8080 });
  });

  it('PUBLIC_URL turns it on, with one delivery URL per provider under it', () => {
    const config = loadConfig({ PUBLIC_URL: 'https://bot.example.com/art/', HTTP_PORT: '0', HTTP_HOST: '127.0.0.1', WEBHOOK_SAFETY_POLL_SECONDS: '45' });
    expect(config.webhooks).toEqual({
      falUrl: 'https://bot.example.com/art/webhooks/fal',
      replicateUrl: 'https://bot.example.com/art/webhooks/replicate',
      safetyPollMs: 45_000,
      falJwksUrl: 'https://rest.alpha.fal.ai/.well-known/jwks.json',
    });
    expect(config.http).toEqual({ host: '127.0.0.1', port: 0 });
  });

  it('keeps REPLICATE_WEBHOOK_SECRET with Replicate, and refuses a malformed one without echoing it', () => {
    const config = loadConfig({ REPLICATE_API_TOKEN: 'r8_x', REPLICATE_WEBHOOK_SECRET: 'whsec_c2VjcmV0LXNlY3JldA==' });
    expect(config.replicate?.webhookSecret).toBe('whsec_c2VjcmV0LXNlY3JldA==');
    const refused = errorOf({ REPLICATE_API_TOKEN: 'r8_x', REPLICATE_WEBHOOK_SECRET: 'not-a-secret-123' });
    expect(refused.message).toBe('REPLICATE_WEBHOOK_SECRET: expected a signing secret whsec_…, got a value that is not valid');
  });

  it('names the variable and the range of a bad value', () => {
    expect(errorOf({ HTTP_PORT: '70000' }).message).toBe('HTTP_PORT: expected an integer from 0 to 65535, got "70000"');
    expect(errorOf({ WEBHOOK_SAFETY_POLL_SECONDS: '0' }).message).toBe('WEBHOOK_SAFETY_POLL_SECONDS: expected an integer from 1 to 3600, got "0"');
    expect(errorOf({ FAL_JWKS_URL: 'ftp://keys' }).message).toBe('FAL_JWKS_URL: expected an http(s) URL, got "ftp://keys"');
    expect(errorOf({ HTTP_HOST: 'a b' }).message).toContain('HTTP_HOST: expected an address to listen on');
  });
});
