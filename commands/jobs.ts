/**
 * /jobs — the caller's queued and running jobs in this guild / workspace, with queue position and
 * progress. Answered privately (ephemeral).
 */
import type { CommandDefinition } from '../src/core/command.js';
import type { Engine } from '../src/core/engine.js';
import type { Requester } from '../src/core/types.js';
import { jobLine } from '../src/core/views.js';

export function definition(): CommandDefinition {
  return { name: 'jobs', description: 'Your queued and running image jobs here', options: [] };
}

export interface JobsContext {
  engine: Engine;
  requester: Requester;
}

/** One line per job, or a sentence saying there are none. */
export function run(context: JobsContext): string {
  const jobs = context.engine.listJobs(context.requester.tenant, context.requester.userId);
  if (jobs.length === 0) return 'You have no queued or running jobs here.';
  const lines = jobs.map(({ job, progress }) => `• ${jobLine(job, progress)}`);
  return [`Your jobs (${jobs.length}):`, ...lines].join('\n');
}

export const jobs = { name: 'jobs', definition, run };
