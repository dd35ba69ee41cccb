import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { startFakeFal } from '../fakes/fal.js';
import { startFakeReplicate } from '../fakes/replicate.js';
import { buildApp, onCleanup, requester } from '../helpers.js';

const SECRETS = {
  DISCORD_TOKEN: 'DISCORDSECRET.abcdef.zyxwvuts9',
  SLACK_BOT_TOKEN: 'xoxb-SLACKSECRET-0000',
  SLACK_SIGNING_SECRET: 'SIGNINGSECRET-1111',
  FAL_KEY: 'FALKEYID:FALSECRET-2222',
  REPLICATE_API_TOKEN: 'r8_REPLICATESECRET3333',
};

describe('secrets', () => {
  it('never appear in anything logged, even at trace level and when a provider refuses them', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const fal = await startFakeFal({ key: SECRETS.FAL_KEY });
    const replicate = await startFakeReplicate({ key: 'a-different-token' });
    onCleanup(() => fal.close());
    onCleanup(() => replicate.close());
    const logger = createLogger('trace', sink);
    const app = await buildApp({
      env: { ...SECRETS, DISCORD_APP_ID: '123456789012', FAL_BASE_URL: fal.url, REPLICATE_BASE_URL: replicate.url, LOG_LEVEL: 'trace' },
      logger,
    });
    logger.info({ config: app.config }, 'configuration loaded');
    const ok = await app.engine.submit({ prompt: 'fox', count: 4, provider: 'fal', model: 'fal-ai/flux/schnell', aspectRatio: '1:1' }, requester());
    const refused = await app.engine.submit(
      { prompt: 'fox', count: 2, provider: 'replicate', model: 'black-forest-labs/flux-schnell', aspectRatio: '1:1' },
      requester(),
    );
    expect((await app.engine.waitFor(ok.id)).state).toBe('completed');
    expect((await app.engine.waitFor(refused.id)).state).toBe('failed');

    const log = lines.join('');
    expect(lines.length).toBeGreaterThan(5);
    expect(log).toContain('Replicate refused the credentials');
    for (const secret of Object.values(SECRETS)) {
      expect(log).not.toContain(secret);
      expect(log).not.toContain(secret.slice(-8));
    }
    expect(log).toContain('[redacted]');
  });
});
