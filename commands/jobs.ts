/**
 * /jobs — the caller's queued and running jobs in this guild / workspace, with queue position and
 * progress. Answered privately (ephemeral).
 */
import type { Command, CommandContext, CommandDefinition, CommandResult } from '../src/core/command.js';
import { jobLine } from '../src/core/views.js';

export function definition(): CommandDefinition {
  return { name: 'jobs', description: 'Your queued and running image jobs here', options: [] };
}

/** One line per job, or a sentence saying there are none. */
async function run(context: CommandContext): Promise<CommandResult> {
  const jobs = await context.engine.listJobs(context.requester.tenant, context.requester.userId);
  if (jobs.length === 0) return { kind: 'text', text: 'You have no queued or running jobs here.' };
  const lines = jobs.map(({ job, progress }) => `• ${jobLine(job, progress)}`);
  return { kind: 'text', text: [`Your jobs (${jobs.length}):`, ...lines].join('\n') };
}

export const jobs = { name: 'jobs', definition, run } satisfies Command;
