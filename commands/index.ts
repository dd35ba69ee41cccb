/**
 * Every slash command, in the order help lists them. Discord's application commands, Slack's manifest
 * (checked against this list by a test), the playground's dispatch, help and the CLI's options all
 * come from here: adding a command is one file and one line below.
 */
import { formatHelp, type Command, type CommandContext, type CommandLimits, type CommandResult } from '../src/core/command.js';
import { GENERIC_FAILURE, isUserError } from '../src/core/errors.js';
import { imagine } from './imagine.js';
import { jobs } from './jobs.js';
import { settings } from './settings.js';

export const commands: readonly Command[] = [imagine, jobs, settings];

/** The command called `name` (without its slash), if there is one. */
export function commandNamed(name: string): Command | undefined {
  return commands.find((command) => command.name === name);
}

/** `/imagine, /jobs`: what an unknown command is told to try. */
export function commandList(): string {
  return commands.map((command) => `/${command.name}`).join(', ');
}

/** Help for every command, for platforms that type commands as text. */
export function helpText(limits: CommandLimits): string {
  return commands.map((command) => formatHelp(command.definition(limits))).join('\n\n');
}

/**
 * What a command's caller shows: the command's own result, or — when it threw — the refusal it
 * threw (a UserError: the user's to fix, said as it is), or the one generic line for anything else.
 */
export type Answer = CommandResult | { kind: 'refused'; text: string } | { kind: 'failed'; text: string };

/**
 * Runs a command and never throws: every outcome is an answer the platform can send. An unexpected
 * error goes to `report`, which logs it the platform's way (Discord scrubs interaction tokens first).
 */
export async function answer(command: Command, context: CommandContext, report: (error: unknown) => void): Promise<Answer> {
  try {
    return await command.run(context);
  } catch (error) {
    if (isUserError(error)) return { kind: 'refused', text: error.message };
    report(error);
    return { kind: 'failed', text: GENERIC_FAILURE };
  }
}
