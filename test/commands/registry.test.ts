/**
 * The command registry: every platform's list of commands is derived from it (Discord's application
 * commands, the playground, help, the CLI), Slack's manifest is checked against it, and the one way a
 * command is answered (answer()) behaves the same for all of them.
 */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { answer, commandList, commandNamed, commands, helpText } from '../../commands/index.js';
import { imagine } from '../../commands/imagine.js';
import { commandsJson } from '../../src/chat/discord/commands.js';
import { USAGE } from '../../src/cli.js';
import type { Command, CommandContext } from '../../src/core/command.js';
import { GENERIC_FAILURE, UserError } from '../../src/core/errors.js';
import type { Requester } from '../../src/core/types.js';
import { buildApp } from '../helpers.js';

interface ManifestCommand {
  command: string;
  description?: string;
  usage_hint?: string;
}

/** The `features.slash_commands` list of slack-app-manifest.yaml (a flat list of `key: value` entries). */
async function manifestCommands(): Promise<ManifestCommand[]> {
  const yaml = await readFile('slack-app-manifest.yaml', 'utf8');
  const block = /^ {2}slash_commands:\n((?: {4}.*\n|\s*#.*\n)+)/m.exec(yaml)?.[1];
  if (!block) throw new Error('no slash_commands in the manifest');
  const entries: Record<string, string>[] = [];
  for (const line of block.split('\n')) {
    const entry = /^ {4}(- )? *([a-z_]+): (.*)$/.exec(line);
    if (!entry) continue;
    if (entry[1]) entries.push({});
    const value = entry[3]!.trim();
    entries.at(-1)![entry[2]!] = value.startsWith('"') ? (JSON.parse(value) as string) : value;
  }
  return entries.map((e) => ({ command: e['command']!, description: e['description'], usage_hint: e['usage_hint'] }));
}

const person: Requester = { tenant: 'guild-1', userId: 'u1', platform: 'playground' };

describe('the command registry', () => {
  it('Slack’s manifest offers exactly the registry’s commands, with their descriptions and usage hints', async () => {
    const expected = commands.map((command) => {
      const definition = command.definition();
      return { command: `/${definition.name}`, description: definition.description, usage_hint: definition.usage };
    });
    expect(await manifestCommands()).toEqual(expected);
  });

  it('Discord registers one application command per registry entry, under the same name', () => {
    const limits = { maxImagesPerJob: 10, providers: ['local'] as const, defaultProvider: 'local' as const, defaultModels: { fal: 'f', replicate: 'r', local: 'local' } };
    expect(commandsJson(limits).map((c) => c.name)).toEqual(commands.map((c) => c.name));
    expect(commands.map((c) => c.definition(limits).name)).toEqual(commands.map((c) => c.name));
  });

  it('finds a command by name, lists them for an unknown one, and gives help for each', () => {
    expect(commandNamed('imagine')).toBe(imagine);
    expect(commandNamed('paint')).toBeUndefined();
    expect(commandList()).toBe(commands.map((c) => `/${c.name}`).join(', '));
    const limits = { maxImagesPerJob: 10, providers: ['local'] as const, defaultProvider: 'local' as const, defaultModels: { fal: 'f', replicate: 'r', local: 'local' } };
    const help = helpText(limits);
    for (const command of commands) expect(help).toContain(`/${command.name}`);
    expect(help).toContain('(1–10)');
  });

  it('the CLI’s `generate` takes every /imagine option under its first flag', () => {
    // a boolean is a bare flag (`[--draft]`); every other option shows its value
    for (const option of imagine.definition().options) expect(USAGE).toContain(option.type === 'boolean' ? `[--${option.flags[0]}]` : `--${option.flags[0]} `);
    expect(USAGE).toContain('[--ar RATIO]');
    expect(USAGE).toContain('--prompt TEXT');
  });
});

describe('answer()', () => {
  const context = (overrides: Partial<CommandContext> = {}): CommandContext => ({
    engine: undefined as never,
    limits: { maxImagesPerJob: 10, providers: ['local'], defaultProvider: 'local', defaultModels: { fal: 'f', replicate: 'r', local: 'local' } },
    requester: person,
    input: '',
    ...overrides,
  });
  const throwing = (error: unknown): Command => ({ name: 'boom', definition: () => ({ name: 'boom', description: 'x', options: [] }), run: () => Promise.reject(error) });

  it('says a UserError as it is, and reports nothing', async () => {
    const reported: unknown[] = [];
    const result = await answer(throwing(new UserError('quota', 'You already have 1 job running.')), context(), (e) => reported.push(e));
    expect(result).toEqual({ kind: 'refused', text: 'You already have 1 job running.' });
    expect(reported).toEqual([]);
  });

  it('answers anything else with the one generic line, and reports the error once', async () => {
    const reported: unknown[] = [];
    const error = new Error('disk full at /secret/path');
    const result = await answer(throwing(error), context(), (e) => reported.push(e));
    expect(result).toEqual({ kind: 'failed', text: GENERIC_FAILURE });
    expect(result.text).not.toContain('disk full');
    expect(reported).toEqual([error]);
  });
});

describe('imagine.run', () => {
  it('refuses bad input before it accepts, accepts before it submits, and a refusal in accept starts nothing', async () => {
    const app = await buildApp({ env: { LOCAL_LATENCY_MS: '1000' } });
    const steps: string[] = [];
    const ctx = (input: string, accept: () => Promise<void>): CommandContext => ({ engine: app.engine, limits: app.limits, requester: person, input, accept });

    const bad = await answer(imagine, ctx('a fox --count 0', async () => void steps.push('accept')), () => undefined);
    expect(bad).toEqual({ kind: 'refused', text: 'Expected `count` to be an integer from 1 to 100, got `0`.' });
    expect(steps).toEqual([]);

    const replayed = await answer(imagine, ctx('a fox --count 1', async () => {
      throw new UserError('duplicate', 'This command was already received.');
    }), () => undefined);
    expect(replayed).toEqual({ kind: 'refused', text: 'This command was already received.' });
    expect(await app.engine.listJobs('guild-1')).toEqual([]);

    const started = await answer(imagine, ctx('a fox --count 2', async () => {
      steps.push(`accept with ${(await app.engine.listJobs('guild-1')).length} jobs`);
    }), () => undefined);
    expect(steps).toEqual(['accept with 0 jobs']);
    expect(started.kind).toBe('job');
    if (started.kind !== 'job') return;
    expect(started.job).toMatchObject({ requester: person, request: { prompt: 'a fox', count: 2 } });
    expect(started.text).toBe(`Job ${started.job.id}: 2 images from local (local) in 1 call`);
    expect((await app.engine.listJobs('guild-1')).map((j) => j.job.id)).toEqual([started.job.id]);
  });

  it('answers an empty text or `help` with its help, monospaced, and never accepts', async () => {
    const limits = { maxImagesPerJob: 10, providers: ['local'] as const, defaultProvider: 'local' as const, defaultModels: { fal: 'f', replicate: 'r', local: 'local' } };
    for (const input of ['', ' help ', '--help']) {
      let accepted = false;
      const result = await imagine.run({ engine: undefined as never, limits, requester: person, input, accept: async () => void (accepted = true) });
      expect(result).toMatchObject({ kind: 'text', monospace: true });
      expect(result.text).toContain('--count');
      expect(accepted).toBe(false);
    }
  });
});
