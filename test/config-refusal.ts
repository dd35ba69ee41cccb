// The one line loadConfig refuses an environment with (and that it is a ConfigError), for the config tests.
import { expect } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';

export function configError(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
}
