import { describe, expect, it } from 'vitest';
import { createDiscordAdapter, startDiscord } from '../../../src/chat/discord/index.js';
import { buildApp, onCleanup } from '../../helpers.js';
import { startFakeDiscord } from '../../fakes/discord.js';
import { TOKEN, startBot } from './harness.js';

describe('Discord adapter lifecycle', () => {
  it('logs in with the Guilds intent only, is healthy, and stop() destroys the client and stops listening', async () => {
    const { fake, app, adapter } = await startBot();
    expect(adapter.name).toBe('discord');
    expect(adapter.healthy()).toBe(true);
    expect(fake.identifies[0]?.['intents']).toBe(1);
    expect(app.engine.listenerCount('progress')).toBe(1);
    await adapter.stop();
    await adapter.stop();
    expect(adapter.healthy()).toBe(false);
    expect(app.engine.listenerCount('progress')).toBe(0);
    expect(app.engine.listenerCount('finished')).toBe(0);
    await fake.waitFor((f) => !f.hasSession(), { description: 'the gateway session to close' });
  });

  it('fails to start with a wrong token, naming no token, and leaves nothing listening', async () => {
    const fake = await startFakeDiscord({ token: TOKEN });
    onCleanup(() => fake.close());
    const wrong = 'not-the-right-token';
    const app = await buildApp({ env: { DISCORD_TOKEN: wrong, DISCORD_APP_ID: fake.applicationId, DISCORD_API_URL: fake.apiUrl } });
    const error = await createDiscordAdapter(app, { loginTimeoutMs: 5000 }).then(
      () => new Error('started'),
      (e: unknown) => e as Error,
    );
    expect(error).toBeInstanceOf(Error);
    expect(error.message).toMatch(/^Discord login failed/);
    expect(error.message).not.toContain(wrong);
    expect(app.engine.listenerCount('progress')).toBe(0);
  });

  it('refuses to start without Discord configured', async () => {
    const app = await buildApp();
    await expect(startDiscord(app)).rejects.toThrow(/DISCORD_TOKEN and DISCORD_APP_ID/);
  });
});
