/**
 * Who gets in: per tenant, a number of jobs running (their batches in the scheduler) and a number
 * waiting behind them; per person, a number of unfinished jobs; per tenant and UTC day, a number of
 * images. Every refusal says what the limit is and when to try again.
 */
import { UserError } from './errors.js';
import type { JobRepository } from './ports.js';
import type { Job, Requester } from './types.js';
import { plural } from './text.js';

export interface AdmissionLimits {
  tenantMaxRunningJobs: number;
  tenantMaxQueuedJobs: number;
  /** images one tenant may request per UTC day @default unlimited */
  tenantDailyImages?: number;
  /** images all tenants together may request per UTC day @default unlimited */
  globalDailyImages?: number;
  /** jobs one person may have queued or running at once, per tenant @default unlimited */
  userMaxActiveJobs?: number;
}

export type Placement = 'admit' | 'wait';

function formatWait(ms: number): string {
  const minutes = Math.max(1, Math.ceil(ms / 60_000));
  return minutes < 60 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export class Admission {
  /** per tenant: jobs whose batches are in the scheduler, and jobs waiting for a running slot */
  private readonly running = new Map<string, Set<string>>();
  private readonly waiting = new Map<string, string[]>();

  constructor(
    private readonly limits: AdmissionLimits,
    private readonly jobs: JobRepository,
  ) {}

  private runningOf(tenant: string): Set<string> {
    let set = this.running.get(tenant);
    if (!set) this.running.set(tenant, (set = new Set()));
    return set;
  }

  private waitingOf(tenant: string): string[] {
    let list = this.waiting.get(tenant);
    if (!list) this.waiting.set(tenant, (list = []));
    return list;
  }

  /** Refuses a person who already has the most unfinished jobs allowed here. */
  checkPerson(requester: Requester, unfinished: Iterable<Readonly<Job>>): void {
    const max = this.limits.userMaxActiveJobs;
    if (max === undefined) return;
    let mine = 0;
    for (const job of unfinished) {
      if (job.requester.tenant === requester.tenant && job.requester.userId === requester.userId) mine += 1;
    }
    if (mine >= max) {
      throw new UserError(
        'quota',
        `You already have ${plural(mine, 'job')} queued or running here (the most one person may have is ${max}). ` +
          'Try again when one finishes; /jobs shows them.',
      );
    }
  }

  /**
   * Takes `count` images from the tenant's daily cap and from the bot's global one, or refuses with
   * what is left and when it resets (and takes nothing). Every direct-message user is a tenant of
   * their own for fairness, but they share one daily cap: otherwise each new account would bring a
   * fresh day's worth of images.
   */
  async reserveImages(tenant: string, count: number, now: number): Promise<void> {
    const day = new Date(now).toISOString().slice(0, 10);
    const taken: string[] = [];
    try {
      for (const { key, cap, whose } of this.caps(tenant)) {
        if ((await this.jobs.reserveImages(key, day, count, cap)) === undefined) {
          const left = Math.max(0, cap - (await this.jobs.imagesUsed(key, day)));
          const midnight = Date.parse(`${day}T00:00:00.000Z`) + 86_400_000;
          throw new UserError(
            'quota',
            `This job asks for ${plural(count, 'image')}, but only ${left} of today's ${cap} are left ${whose}. ` +
              `The daily count starts again at 00:00 UTC, in ${formatWait(midnight - now)}${left > 0 ? `; or ask for ${left} or fewer` : ''}.`,
          );
        }
        taken.push(key);
      }
    } catch (error) {
      for (const key of taken) await this.jobs.releaseImages(key, day, count);
      throw error;
    }
  }

  /** Gives back images reserved on `day` (an ISO date) that were not made. */
  async releaseImages(tenant: string, day: string, count: number): Promise<void> {
    if (count <= 0) return;
    for (const { key } of this.caps(tenant)) await this.jobs.releaseImages(key, day.slice(0, 10), count);
  }

  private caps(tenant: string): { key: string; cap: number; whose: string }[] {
    const { tenantDailyImages, globalDailyImages } = this.limits;
    const dm = tenant.startsWith('dm:');
    return [
      ...(tenantDailyImages !== undefined
        ? [{ key: dm ? 'dm:*' : tenant, cap: tenantDailyImages, whose: dm ? 'for direct messages' : 'here' }]
        : []),
      ...(globalDailyImages !== undefined ? [{ key: '*', cap: globalDailyImages, whose: 'on this bot for everyone' }] : []),
    ];
  }

  /** Running if a slot is free, else waiting if there is room; "queue full" otherwise. Synchronous. */
  place(tenant: string): Placement {
    const { tenantMaxRunningJobs, tenantMaxQueuedJobs } = this.limits;
    const running = this.runningOf(tenant).size;
    const waiting = this.waitingOf(tenant).length;
    if (running < tenantMaxRunningJobs) return 'admit';
    if (waiting < tenantMaxQueuedJobs) return 'wait';
    throw new UserError(
      'queue_full',
      `The queue is full here: ${plural(running, 'job')} running and ${waiting} waiting (the most allowed is ` +
        `${tenantMaxRunningJobs} + ${tenantMaxQueuedJobs}). Try again when one finishes.`,
    );
  }

  add(tenant: string, jobId: string, placement: Placement): void {
    if (placement === 'admit') this.runningOf(tenant).add(jobId);
    else this.waitingOf(tenant).push(jobId);
  }

  /** A resumed job: running if a slot is free or it was already running, else waiting. */
  readmit(tenant: string, jobId: string, wasRunning: boolean): Placement {
    const placement = wasRunning || this.runningOf(tenant).size < this.limits.tenantMaxRunningJobs ? 'admit' : 'wait';
    this.add(tenant, jobId, placement);
    return placement;
  }

  /** Position among the tenant's waiting jobs (0-based), or -1 when not waiting. */
  waitingIndex(tenant: string, jobId: string): number {
    return this.waitingOf(tenant).indexOf(jobId);
  }

  /** Forgets a job; returns the waiting jobs that may now run. */
  remove(tenant: string, jobId: string): string[] {
    this.runningOf(tenant).delete(jobId);
    const waiting = this.waitingOf(tenant);
    if (waiting.includes(jobId)) waiting.splice(waiting.indexOf(jobId), 1);
    const next: string[] = [];
    while (waiting.length > 0 && this.runningOf(tenant).size < this.limits.tenantMaxRunningJobs) {
      const id = waiting.shift()!;
      this.runningOf(tenant).add(id);
      next.push(id);
    }
    return next;
  }
}
