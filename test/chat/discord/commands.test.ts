import { describe, expect, it } from 'vitest';
import { imagineLimits } from '../../../src/app.js';
import { deployCommands } from '../../../src/chat/discord/index.js';
import { loadConfig } from '../../../src/config.js';
import { buildApp, onCleanup } from '../../helpers.js';
import { startFakeDiscord, type JsonObject } from '../../fakes/discord.js';
import { TOKEN } from './harness.js';

async function fakeAndEnv(extra: Record<string, string> = {}) {
  const fake = await startFakeDiscord({ token: TOKEN });
  onCleanup(() => fake.close());
  const env = { DISCORD_TOKEN: TOKEN, DISCORD_APP_ID: fake.applicationId, DISCORD_API_URL: fake.apiUrl, MAX_IMAGES_PER_JOB: '40', ...extra };
  return { fake, env };
}

describe('Discord deployCommands', () => {
  it('registers /imagine and /jobs on DISCORD_GUILD_ID with one PUT, with ranges, lengths and choices', async () => {
    const { fake, env } = await fakeAndEnv();
    const guildId = fake.defaultGuildId!;
    const result = await deployCommands(loadConfig({ ...env, DISCORD_GUILD_ID: guildId }));
    expect(result).toEqual({ scope: 'guild', count: 3 });
    expect(fake.callsTo('PUT /applications/:app/guilds/:guild/commands')).toHaveLength(1);
    expect(fake.commands()).toEqual([]);
    const [imagine, jobs] = fake.commands(guildId);
    expect(jobs).toMatchObject({ name: 'jobs', options: [] });
    const list = imagine?.['options'] as JsonObject[];
    const options = Object.fromEntries(list.map((o) => [o['name'] as string, o]));
    expect(list[0]?.['name']).toBe('prompt');
    // optional on Discord, where a `prompts` file may stand in for it (the command refuses neither)
    expect(options['prompt']).toMatchObject({ type: 3, required: false, max_length: 1500 });
    expect(options['draft']).toMatchObject({ type: 5, required: false });
    expect(options['prompts']).toMatchObject({ type: 11, required: false });
    expect(options['count']).toMatchObject({ type: 4, required: false, min_value: 1, max_value: 40 });
    expect(options['seed']).toMatchObject({ type: 4, min_value: 0, max_value: 2 ** 32 - 1 });
    expect(options['ar']).toMatchObject({ type: 3 });
    expect((options['ar']?.['choices'] as JsonObject[]).map((c) => c['value'])).toContain('16:9');
    expect(options['provider']?.['choices']).toEqual([{ name: 'local', value: 'local' }]);
  });

  it('registers globally without a guild id, through the given fetch', async () => {
    const { fake, env } = await fakeAndEnv();
    const seen: string[] = [];
    const counting: typeof fetch = (input, init) => {
      seen.push(`${init?.method ?? 'GET'} ${String(input)}`);
      return fetch(input, init);
    };
    expect(await deployCommands(loadConfig(env), counting)).toEqual({ scope: 'global', count: 3 });
    expect(fake.commands().map((c) => c['name'])).toEqual(['imagine', 'jobs', 'settings']);
    expect(seen).toEqual([`PUT ${fake.apiUrl}/v10/applications/${fake.applicationId}/commands`]);
  });

  it('offers /imagine and /jobs in servers only by default: contexts [Guild], guild install', async () => {
    const { fake, env } = await fakeAndEnv();
    await deployCommands(loadConfig(env));
    const [put] = fake.callsTo('PUT /applications/:app/commands');
    for (const command of put?.body as JsonObject[]) {
      expect(command, String(command['name'])).toMatchObject({ contexts: [0], integration_types: [0] });
    }
    expect(fake.commands().map((c) => [c['name'], c['contexts']])).toEqual([
      ['imagine', [0]],
      ['jobs', [0]],
      ['settings', [0]],
    ]);
  });

  it('offers them in the bot’s DMs too with DISCORD_DMS=on, never in group DMs', async () => {
    const { fake, env } = await fakeAndEnv({ DISCORD_DMS: 'on' });
    const guildId = fake.defaultGuildId!;
    await deployCommands(loadConfig({ ...env, DISCORD_GUILD_ID: guildId }));
    expect(fake.commands(guildId).map((c) => [c['name'], c['contexts'], c['integration_types']])).toEqual([
      ['imagine', [0, 1], [0]],
      ['jobs', [0, 1], [0]],
      ['settings', [0, 1], [0]],
    ]);
  });

  it('derives the same limits from config alone as the app does', async () => {
    const { env } = await fakeAndEnv();
    const app = await buildApp({ env });
    expect(imagineLimits(app.config)).toEqual(app.limits);
  });

  it('refuses to deploy without Discord configured', async () => {
    await expect(deployCommands(loadConfig({}))).rejects.toThrow(/DISCORD_TOKEN/);
  });
});
