/**
 * Button actions, written compactly into a platform's custom id (Discord: ≤ 100 chars) and read
 * back strictly. Everything a button needs is resolved through the store, so buttons keep working
 * after a restart, and a forged or truncated id is recognised as such instead of crashing a handler.
 */
import type { Job, ReviewStatus } from './types.js';

export type Action =
  | { kind: 'review'; jobId: string; image: number; status: ReviewStatus }
  | { kind: 'cancel'; jobId: string }
  /** "Retry N failed": the job's missing images, asked for again */
  | { kind: 'retry'; jobId: string }
  /** "Reroll": a rejected image, made again with a new seed into its slot */
  | { kind: 'reroll'; jobId: string; image: number }
  /** "Upscale N approved": a draft job's approved images, sent to the provider's upscaler */
  | { kind: 'upscale'; jobId: string }
  /** a contact sheet's "Approve all pending" / "Reject all pending": the pending images of sheet `sheet` (1-based) */
  | { kind: 'bulk'; jobId: string; status: 'approved' | 'rejected'; sheet: number }
  /** "Review by number": asks for numbers (`1-5, 8`) in a modal or dialog; its submission carries the same id */
  | { kind: 'numbers'; jobId: string }
  /** "Review in browser": a signed link to the review page, answered privately */
  | { kind: 'browser'; jobId: string };

const PREFIX = 'af';
const JOB_ID = /^[0-9]{8}-[0-9a-f]{8}$/;
const REVIEW_CODES: Record<string, ReviewStatus> = { a: 'approved', r: 'rejected', u: 'pending' };
const CODE_OF: Record<ReviewStatus, string> = { approved: 'a', rejected: 'r', pending: 'u' };

export function encodeAction(action: Action): string {
  switch (action.kind) {
    case 'review':
      return `${PREFIX}:${CODE_OF[action.status]}:${action.jobId}:${action.image}`;
    case 'cancel':
      return `${PREFIX}:x:${action.jobId}`;
    case 'retry':
      return `${PREFIX}:f:${action.jobId}`;
    case 'reroll':
      return `${PREFIX}:o:${action.jobId}:${action.image}`;
    case 'upscale':
      return `${PREFIX}:s:${action.jobId}`;
    case 'bulk':
      return `${PREFIX}:${action.status === 'approved' ? 'ba' : 'br'}:${action.jobId}:${action.sheet}`;
    case 'numbers':
      return `${PREFIX}:n:${action.jobId}`;
    case 'browser':
      return `${PREFIX}:w:${action.jobId}`;
  }
}

/** The action, or undefined for anything that is not exactly one of ours. */
export function decodeAction(value: string): Action | undefined {
  if (typeof value !== 'string' || value.length > 100) return undefined;
  const [prefix, code, jobId, number, ...rest] = value.split(':');
  if (prefix !== PREFIX || !code || !jobId || !JOB_ID.test(jobId) || rest.length > 0) return undefined;
  const n = number !== undefined && /^[1-9][0-9]{0,4}$/.test(number) ? Number(number) : undefined;
  if (code === 'x') return number === undefined ? { kind: 'cancel', jobId } : undefined;
  if (code === 'f') return number === undefined ? { kind: 'retry', jobId } : undefined;
  if (code === 'o') return n !== undefined ? { kind: 'reroll', jobId, image: n } : undefined;
  if (code === 's') return number === undefined ? { kind: 'upscale', jobId } : undefined;
  if (code === 'n') return number === undefined ? { kind: 'numbers', jobId } : undefined;
  if (code === 'w') return number === undefined ? { kind: 'browser', jobId } : undefined;
  if (code === 'ba' || code === 'br') return n !== undefined ? { kind: 'bulk', jobId, status: code === 'ba' ? 'approved' : 'rejected', sheet: n } : undefined;
  const status = REVIEW_CODES[code];
  return status && n !== undefined ? { kind: 'review', jobId, image: n, status } : undefined;
}

export interface Actor {
  userId: string;
  /** the platform says this member may moderate (Discord Manage Messages, Slack admin/owner, configured reviewer) */
  moderator: boolean;
}

/** Who may review a job's images, cancel it, retry its failed images or reroll one: its requester, or a moderator of the same place. */
export function mayAct(job: Pick<Job, 'requester'>, actor: Actor, tenant: string): boolean {
  if (job.requester.tenant !== tenant) return false;
  return job.requester.userId === actor.userId || actor.moderator;
}

export const REFUSAL = 'Only the person who asked for these images, or a moderator, can review or cancel them.';
export const GONE = 'This gallery is no longer available.';
