/**
 * What the Slack adapter remembers about a job, persisted in `job.chat.slack` through
 * engine.annotate, so that a restarted process edits the same messages instead of posting new ones.
 */
import type { Job } from '../../core/types.js';

export interface PageFacts {
  /** the page's images were uploaded into the thread */
  uploaded?: boolean;
  /** the page's message of review buttons */
  ts?: string;
}

export interface SlackFacts {
  channel: string;
  /** the progress message; its thread holds the gallery */
  ts?: string;
  pages?: PageFacts[];
  /** every gallery page is posted */
  delivered?: boolean;
}

export const PLATFORM = 'slack';

const isString = (value: unknown): value is string => typeof value === 'string' && value.length > 0;

/** The facts, read defensively: the store outlives versions of this code. */
export function factsOf(job: Pick<Job, 'chat'>): SlackFacts | undefined {
  const raw = job.chat?.[PLATFORM];
  if (typeof raw !== 'object' || raw === null) return undefined;
  const facts = raw as Record<string, unknown>;
  if (!isString(facts.channel)) return undefined;
  const pages = Array.isArray(facts.pages)
    ? facts.pages.map((p): PageFacts => {
        const page = (typeof p === 'object' && p !== null ? p : {}) as Record<string, unknown>;
        return { ...(page.uploaded === true ? { uploaded: true } : {}), ...(isString(page.ts) ? { ts: page.ts } : {}) };
      })
    : undefined;
  return {
    channel: facts.channel,
    ...(isString(facts.ts) ? { ts: facts.ts } : {}),
    ...(pages ? { pages } : {}),
    ...(facts.delivered === true ? { delivered: true } : {}),
  };
}
