/**
 * /settings on Discord, through the real discord.js client and the fake Discord: Manage Server may
 * change, others may only look; the next /imagine takes the server's defaults.
 */
import { describe, expect, it } from 'vitest';
import { commandsJson } from '../../../src/chat/discord/commands.js';
import { DEFAULT_MEMBER_PERMISSIONS, PERMISSION_MANAGE_GUILD } from '../../fakes/discord.js';
import type { Logger } from '../../../src/core/ports.js';
import { createLogger } from '../../../src/logger.js';
import { PRIVATE, answerOf, jobIdOf, progressMessageOf, startBot, waitForContent } from './harness.js';

/** Member defaults plus Manage Server. */
const MANAGER = (BigInt(DEFAULT_MEMBER_PERMISSIONS) | BigInt(PERMISSION_MANAGE_GUILD)).toString();

/** A silent logger that keeps the info lines. */
function infoLines(): { logger: Logger & ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const logger = createLogger('silent');
  const lines: Record<string, unknown>[] = [];
  const info = logger.info.bind(logger);
  logger.info = ((obj: object, msg?: string) => {
    if (typeof obj === 'object' && obj !== null) lines.push({ ...obj, msg });
    return info(obj, msg);
  });
  return { logger, lines };
}

describe('Discord /settings', () => {
  it('is registered for Manage Server by default', () => {
    const limits = { maxImagesPerJob: 10, providers: ['local'] as const, defaultProvider: 'local' as const, defaultModels: { fal: 'f', replicate: 'r', local: 'local' } };
    const json = commandsJson(limits).find((c) => c.name === 'settings') as { default_member_permissions?: string } | undefined;
    expect(json?.default_member_permissions).toBe(PERMISSION_MANAGE_GUILD);
    expect(commandsJson(limits).find((c) => c.name === 'imagine')).not.toHaveProperty('default_member_permissions');
  });

  it('refuses a member without Manage Server in one private line, and changes nothing; they may still look', async () => {
    const { fake, app } = await startBot();
    const sent = fake.sendCommand({ name: 'settings', options: { count: 8 }, memberPermissions: DEFAULT_MEMBER_PERMISSIONS });
    const [refusal] = await answerOf(fake, sent.id);
    expect(refusal?.data).toMatchObject({
      content: 'Only members with the Manage Server permission may change these settings; everyone may view them with /settings.',
      flags: PRIVATE,
    });
    expect((await app.settings.read(fake.defaultGuildId!)).values).toEqual({});

    const look = fake.sendCommand({ name: 'settings', memberPermissions: DEFAULT_MEMBER_PERMISSIONS });
    const [shown] = await answerOf(fake, look.id);
    expect(shown?.data?.['content']).toContain('count: 4 (default)');
    expect(shown?.data?.['content']).toContain('The business plan: 10 provider calls at once, at most 100 images per job.');
  });

  it('a manager sets count 8, ar 16:9 and provider local; the next /imagine without options makes 8 images at 16:9; the change is logged with the user', async () => {
    const { logger, lines } = infoLines();
    const { fake, app } = await startBot({ logger });
    const sent = fake.sendCommand({
      name: 'settings',
      options: { count: 8, ar: '16:9', provider: 'local' },
      memberPermissions: MANAGER,
      user: { id: '4242', username: 'ada' },
    });
    const [answer] = await answerOf(fake, sent.id);
    expect(answer?.data).toMatchObject({ flags: PRIVATE });
    expect(answer?.data?.['content']).toMatch(/^Changed: provider default → local, ar default → 16:9, count default → 8\.\n/);
    expect(answer?.data?.['content']).toContain('count: 8\n');
    const changed = lines.filter((l) => l['msg'] === 'setting changed');
    expect(changed.map((l) => [l['tenant'], l['user'], l['key'], l['old'], l['new']])).toEqual([
      [fake.defaultGuildId, '4242', 'provider', null, 'local'],
      [fake.defaultGuildId, '4242', 'ar', null, '16:9'],
      [fake.defaultGuildId, '4242', 'count', null, '8'],
    ]);

    const imagine = fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox at dusk' } });
    const progressId = await progressMessageOf(fake, imagine.id);
    const jobId = await jobIdOf(fake, progressId);
    await waitForContent(fake, progressId, 'Done: 8 images');
    const job = (await app.engine.get(jobId))!;
    expect(job.request).toMatchObject({ count: 8, aspectRatio: '16:9', provider: 'local' });
    expect(job.images).toHaveLength(8);
    expect(job.images.every((image) => image.width > image.height)).toBe(true);

    // An explicit option still wins.
    const explicit = fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox', count: 2, ar: '1:1' } });
    const explicitJob = await jobIdOf(fake, await progressMessageOf(fake, explicit.id));
    expect((await app.engine.get(explicitJob))!.request).toMatchObject({ count: 2, aspectRatio: '1:1' });
  });

  it('answers a bad value with the setting, the allowed values and what was given, and changes nothing', async () => {
    const { fake, app } = await startBot();
    const sent = fake.sendCommand({ name: 'settings', options: { daily: 999_999 }, memberPermissions: MANAGER });
    const [answer] = await answerOf(fake, sent.id);
    expect(answer?.data).toMatchObject({
      content: '`daily`: expected an integer from 0 to 5000 (or default), got `999999`. Nothing was changed.',
      flags: PRIVATE,
    });
    expect((await app.settings.read(fake.defaultGuildId!)).values).toEqual({});
  });
});
